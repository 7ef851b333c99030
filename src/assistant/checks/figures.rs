//! Figures in support text (amounts, percentages, durations and counts, times, time zones, phone
//! numbers, e-mail addresses, URLs, and claims that something costs nothing), normalised so that "$1,000", "$1 000" and "1000 USD" compare
//! equal and "1.5%" never matches "15%". The figure check uses it to refuse any figure an answer
//! states that its sources do not.
//!
//! Over 800 lines on purpose: about 700 are the parser (one reader per kind of figure, which read
//! best side by side), the rest its table-driven tests, kept beside it.
//!
//! Hand-written on `regex`: no crate extracts and normalises money, durations and number words in
//! both English and Russian (number-parsing crates handle one locale's digits, not "три попытки").

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

/// One figure, normalised. Numeric values are decimal strings without thousands separators or
/// trailing zeros ("1000", "1.5", "15").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Figure {
    Percent {
        value: String,
    },
    Money {
        value: String,
        currency: Currency,
    },
    Quantity {
        value: String,
        unit: Unit,
    },
    Number {
        value: String,
    },
    /// Time of day, "9:00".
    Time {
        value: String,
    },
    /// Time zone offset, "gmt+3".
    Zone {
        value: String,
    },
    /// Digits only, with a leading + when written.
    Phone {
        value: String,
    },
    Email {
        value: String,
    },
    /// Host and path, lower case, without scheme, "www." or trailing slash.
    Url {
        value: String,
    },
    /// A zero cost: "free", "no fee", "free of charge", "бесплатно", "без комиссии". Supported by a
    /// source that says so or states a zero amount ("$0", "0%").
    Free,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    Usd,
    Eur,
    Gbp,
    Rub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    BusinessDay,
    Week,
    Month,
    Year,
    Attempt,
    Times,
    Character,
    Digit,
}

impl Unit {
    /// Units that count things rather than time: a bare number in the source supports them
    /// ("after 5 failed sign-in attempts" supports "5 attempts").
    fn is_count(self) -> bool {
        matches!(
            self,
            Unit::Attempt | Unit::Times | Unit::Character | Unit::Digit
        )
    }
}

impl Figure {
    fn value(&self) -> Option<&str> {
        match self {
            Figure::Percent { value }
            | Figure::Money { value, .. }
            | Figure::Quantity { value, .. }
            | Figure::Number { value } => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Percent { value } => write!(f, "{value}%"),
            Figure::Money { value, currency } => write!(f, "{value} {currency:?}"),
            Figure::Quantity { value, unit } => write!(f, "{value} {unit:?}"),
            Figure::Number { value }
            | Figure::Time { value }
            | Figure::Zone { value }
            | Figure::Phone { value }
            | Figure::Email { value }
            | Figure::Url { value } => write!(f, "{value}"),
            Figure::Free => f.write_str("free"),
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid figure regex"))
}

/// Replaces `range` with spaces so a figure is not read twice (byte length kept, so later spans
/// stay valid).
fn blank(text: &mut String, start: usize, end: usize) {
    text.replace_range(start..end, &" ".repeat(end - start));
}

/// Spaces that separate thousands or hug units in typeset text become plain spaces; dashes and
/// minus signs become one kind.
fn normalise_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{00A0}' | '\u{2009}' | '\u{202F}' | '\u{2007}' | '\u{2002}' | '\u{2003}' => ' ',
            '\u{2212}' => '-',
            _ => c,
        })
        .collect()
}

/// "1 000,50" / "1,000.50" / "0,5" → "1000.5" / "1000.5" / "0.5".
pub fn normalise_number(raw: &str) -> String {
    let raw = raw.trim();
    let thousands_comma = re_thousands_comma().is_match(raw);
    let mut s = String::new();
    for c in raw.chars() {
        match c {
            ' ' => {}
            ',' if thousands_comma => {}
            ',' => s.push('.'),
            _ => s.push(c),
        }
    }
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), f.trim_end_matches('0').to_string()),
        None => (s, String::new()),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

fn re_thousands_comma() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^\d{1,3}(,\d{3})+(\.\d+)?$")
}

fn currency_word(word: &str) -> Option<Currency> {
    let w = word.to_lowercase();
    let w = w.trim_end_matches('.');
    Some(match w {
        "$" | "usd" | "dollar" | "dollars" | "доллар" | "доллара" | "долларов" | "долл" => {
            Currency::Usd
        }
        "€" | "eur" | "euro" | "euros" | "евро" => Currency::Eur,
        "£" | "gbp" | "pound" | "pounds" => Currency::Gbp,
        "₽" | "rub" | "руб" | "рубль" | "рубля" | "рублей" | "р" => {
            Currency::Rub
        }
        _ => return None,
    })
}

fn unit_word(word: &str) -> Option<Unit> {
    let w = word.to_lowercase();
    let w = w.trim_end_matches('.');
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| w.starts_with(p));
    Some(match w {
        "s" | "sec" | "secs" | "second" | "seconds" | "с" | "сек" => Unit::Second,
        "min" | "mins" | "minute" | "minutes" | "мин" => Unit::Minute,
        "h" | "hr" | "hrs" | "hour" | "hours" | "ч" | "час" | "часа" | "часов" => {
            Unit::Hour
        }
        "day" | "days" | "день" | "дня" | "дней" | "сутки" | "суток" => {
            Unit::Day
        }
        "week" | "weeks" => Unit::Week,
        "month" | "months" | "мес" => Unit::Month,
        "year" | "years" | "yr" | "yrs" | "год" | "года" | "лет" => Unit::Year,
        "attempt" | "attempts" | "try" | "tries" => Unit::Attempt,
        "time" | "times" | "раз" | "раза" => Unit::Times,
        "character" | "characters" | "chars" => Unit::Character,
        "digit" | "digits" => Unit::Digit,
        _ if starts(&["секунд"]) => Unit::Second,
        _ if starts(&["минут"]) => Unit::Minute,
        _ if starts(&["недел"]) => Unit::Week,
        _ if starts(&["месяц"]) => Unit::Month,
        _ if starts(&["попыт"]) => Unit::Attempt,
        _ if starts(&["символ"]) => Unit::Character,
        _ if starts(&["цифр"]) => Unit::Digit,
        _ => return None,
    })
}

/// Words that qualify a day count: "3 business days", "5 рабочих дней".
fn business_word(word: &str) -> bool {
    let w = word.to_lowercase();
    w == "business"
        || w == "working"
        || w == "banking"
        || w.starts_with("рабоч")
        || w.starts_with("банковск")
}

/// Words that may sit between a number and its unit without changing it.
fn filler_word(word: &str) -> bool {
    let w = word.to_lowercase();
    matches!(
        w.as_str(),
        "calendar" | "full" | "consecutive" | "failed" | "more"
    ) || w.starts_with("календарн")
        || w.starts_with("полн")
        || w.starts_with("неверн")
        || w.starts_with("неудачн")
}

fn percent_word(word: &str) -> bool {
    let w = word.to_lowercase();
    w == "percent" || w == "pct" || w.starts_with("процент")
}

fn number_word(word: &str) -> Option<u32> {
    let w = word.to_lowercase();
    Some(match w.as_str() {
        "zero" | "ноль" | "нуля" => 0,
        "one" | "один" | "одна" | "одно" | "одну" | "одного" | "одной" | "одних" => {
            1
        }
        "two" | "два" | "две" | "двух" => 2,
        "three" | "три" | "трёх" | "трех" => 3,
        "four" | "четыре" | "четырёх" | "четырех" => 4,
        "five" | "пять" | "пяти" => 5,
        "six" | "шесть" | "шести" => 6,
        "seven" | "семь" | "семи" => 7,
        "eight" | "восемь" | "восьми" => 8,
        "nine" | "девять" | "девяти" => 9,
        "ten" | "десять" | "десяти" => 10,
        "eleven" | "одиннадцать" | "одиннадцати" => 11,
        "twelve" | "двенадцать" | "двенадцати" => 12,
        "fifteen" | "пятнадцать" | "пятнадцати" => 15,
        "twenty" | "двадцать" | "двадцати" => 20,
        "thirty" | "тридцать" | "тридцати" => 30,
        "forty" | "сорок" | "сорока" => 40,
        "fifty" | "пятьдесят" | "пятидесяти" => 50,
        "sixty" | "шестьдесят" | "шестидесяти" => 60,
        "hundred" | "сто" | "ста" => 100,
        _ => return None,
    })
}

/// What follows a number: a currency, a percent sign, a unit, or nothing figure-like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Suffix {
    None,
    Percent,
    Currency(Currency),
    Unit(Unit),
}

/// Reads the words right after a number (at most three: "3 business days", "5 failed attempts").
fn suffix_of(rest: &str) -> Suffix {
    let trimmed = rest.trim_start();
    if trimmed.starts_with('%') {
        return Suffix::Percent;
    }
    for sym in ['₽', '$', '€', '£'] {
        if trimmed.starts_with(sym) {
            return Suffix::Currency(currency_word(&sym.to_string()).expect("symbol"));
        }
    }
    // A unit glued to the number ("24h") or after a space; only the word characters count.
    let words: Vec<&str> = trimmed
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .take(3)
        .collect();
    let Some(first) = words.first().copied().filter(|w| !w.is_empty()) else {
        return Suffix::None;
    };
    if percent_word(first) {
        return Suffix::Percent;
    }
    if let Some(c) = currency_word(first) {
        return Suffix::Currency(c);
    }
    if business_word(first) {
        if let Some(Unit::Day) = words.get(1).and_then(|w| unit_word(w)) {
            return Suffix::Unit(Unit::BusinessDay);
        }
    }
    if let Some(u) = unit_word(first) {
        return Suffix::Unit(u);
    }
    if filler_word(first) {
        let second = words.get(1).copied().unwrap_or("");
        if business_word(second) {
            if let Some(Unit::Day) = words.get(2).and_then(|w| unit_word(w)) {
                return Suffix::Unit(Unit::BusinessDay);
            }
        }
        if let Some(u) = unit_word(second) {
            return Suffix::Unit(u);
        }
        // "5 failed sign-in attempts": the unit may come one word later.
        if let Some(u) = words.get(2).and_then(|w| unit_word(w)) {
            if u.is_count() {
                return Suffix::Unit(u);
            }
        }
    }
    Suffix::None
}

fn figure_of(value: String, prefix: Option<Currency>, suffix: Suffix) -> Figure {
    match (prefix, suffix) {
        (Some(currency), _) | (None, Suffix::Currency(currency)) => {
            Figure::Money { value, currency }
        }
        (None, Suffix::Percent) => Figure::Percent { value },
        (None, Suffix::Unit(unit)) => Figure::Quantity { value, unit },
        (None, Suffix::None) => Figure::Number { value },
    }
}

/// Citation markers ("[1]", "[1, 2]") and list numbering ("1. ", "2) ") are not figures.
fn strip_markers(text: &str) -> String {
    static CITE: OnceLock<Regex> = OnceLock::new();
    static LIST: OnceLock<Regex> = OnceLock::new();
    let text = re(&CITE, r"\[\d+(?:\s*[,;]\s*\d+)*\]").replace_all(text, " ");
    re(&LIST, r"(?m)^(\s*)\d{1,2}[.)]\s")
        .replace_all(&text, "$1   ")
        .into_owned()
}

/// Every figure in `text`, in order of appearance.
pub fn extract(text: &str) -> Vec<Figure> {
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    static URL: OnceLock<Regex> = OnceLock::new();
    static PHONE: OnceLock<Regex> = OnceLock::new();
    static ZONE: OnceLock<Regex> = OnceLock::new();
    static TIME: OnceLock<Regex> = OnceLock::new();
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    static WORD: OnceLock<Regex> = OnceLock::new();

    let mut text = strip_markers(&normalise_text(text));
    let mut found: Vec<(usize, Figure)> = Vec::new();

    let email = re(
        &EMAIL,
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    );
    for m in email.find_iter(&text.clone()) {
        found.push((
            m.start(),
            Figure::Email {
                value: m.as_str().to_lowercase(),
            },
        ));
        blank(&mut text, m.start(), m.end());
    }
    let url = re(
        &URL,
        r"(?i)\b(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+(?:com|ru|org|net|io|info|biz|app|dev|eu|uk|de|рф))\b(/[^\s)\]>,;]*)?",
    );
    for c in url.captures_iter(&text.clone()) {
        let m = c.get(0).expect("match");
        let host = c.get(1).map_or("", |h| h.as_str()).to_lowercase();
        let path = c
            .get(2)
            .map_or("", |p| p.as_str())
            .trim_end_matches(['/', '.', '!', '?', ':']);
        found.push((
            m.start(),
            Figure::Url {
                value: format!("{host}{path}"),
            },
        ));
        blank(&mut text, m.start(), m.end());
    }
    for (start, end) in zero_cost_claims(&text) {
        found.push((start, Figure::Free));
        blank(&mut text, start, end);
    }
    let phone = re(&PHONE, r"\+?\d[\d ()\-]{5,}\d");
    for m in phone.find_iter(&text.clone()) {
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        let plus = m.as_str().starts_with('+');
        // "$10 000 000" is an amount: a phone number has a + or at least ten digits with separators.
        let separated = m.as_str().contains(['-', '(', ' ']);
        if (plus && digits.len() >= 7) || (digits.len() >= 10 && separated) {
            let value = if plus { format!("+{digits}") } else { digits };
            found.push((m.start(), Figure::Phone { value }));
            blank(&mut text, m.start(), m.end());
        }
    }
    let zone = re(
        &ZONE,
        r"(?i)\b(GMT|UTC|МСК|MSK)\s*([+-])\s*(\d{1,2})(?::00)?\b",
    );
    for c in zone.captures_iter(&text.clone()) {
        let m = c.get(0).expect("match");
        let name = c[1].to_lowercase();
        let name = if name == "мск" { "msk".into() } else { name };
        let hours = c[3].trim_start_matches('0');
        found.push((
            m.start(),
            Figure::Zone {
                value: format!(
                    "{name}{}{}",
                    &c[2],
                    if hours.is_empty() { "0" } else { hours }
                ),
            },
        ));
        blank(&mut text, m.start(), m.end());
    }
    let time = re(&TIME, r"\b([01]?\d|2[0-3]):([0-5]\d)\b");
    for c in time.captures_iter(&text.clone()) {
        let m = c.get(0).expect("match");
        let hour: u32 = c[1].parse().unwrap_or(0);
        found.push((
            m.start(),
            Figure::Time {
                value: format!("{hour}:{}", &c[2]),
            },
        ));
        blank(&mut text, m.start(), m.end());
    }

    // Amounts and plain numbers, with an optional currency before them.
    let number = re(
        &NUMBER,
        r"(?i)(?P<cur>[$€£₽]|\b(?:USD|EUR|RUB|GBP)\b)?\s?(?P<num>\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?:\.\d+)?|\d+(?:[.,]\d+)?)",
    );
    struct Raw {
        start: usize,
        end: usize,
        value: String,
        prefix: Option<Currency>,
        suffix: Suffix,
    }
    let mut raws: Vec<Raw> = Vec::new();
    for c in number.captures_iter(&text) {
        let m = c.get(0).expect("match");
        let num = c.name("num").expect("number group");
        // A number glued to letters is a code or a name ("2FA", "MT103", "1C"), unless the letters
        // are a unit ("24h").
        let before = text[..num.start()].chars().next_back();
        if before.is_some_and(|b| b.is_alphabetic() || b == '_' || b == '+') {
            continue;
        }
        let after = &text[num.end()..];
        if after.chars().next().is_some_and(char::is_alphabetic) {
            let word: String = after.chars().take_while(|c| c.is_alphabetic()).collect();
            if unit_word(&word).is_none() && currency_word(&word).is_none() {
                continue;
            }
        }
        // "1.5." at a sentence end: the regex leaves the final dot out already.
        let prefix = c.name("cur").and_then(|p| currency_word(p.as_str()));
        raws.push(Raw {
            start: m.start(),
            end: num.end(),
            value: normalise_number(num.as_str()),
            prefix,
            suffix: suffix_of(after),
        });
    }
    // Ranges ("5–10 business days", "$5-10", "1–2%") share the unit of their second number and the
    // currency of their first.
    for i in (0..raws.len().saturating_sub(1)).rev() {
        let between = &text[raws[i].end..raws[i + 1].start];
        let is_range = {
            let t = between.trim();
            t == "-" || t == "–" || t == "—" || t == "to" || t == "до" || t == "-–"
        };
        if is_range {
            if raws[i].suffix == Suffix::None {
                raws[i].suffix = raws[i + 1].suffix;
            }
            if raws[i + 1].prefix.is_none() {
                raws[i + 1].prefix = raws[i].prefix;
            }
        }
    }
    for r in &raws {
        found.push((r.start, figure_of(r.value.clone(), r.prefix, r.suffix)));
    }
    for r in raws.iter().rev() {
        blank(&mut text, r.start, r.end);
    }

    // Small numbers written as words count only with a unit ("three attempts", "пять рабочих дней"):
    // "one of the cards" is not a figure.
    let word = re(&WORD, r"[\p{L}]+");
    for m in word.find_iter(&text) {
        if let Some(n) = number_word(m.as_str()) {
            let suffix = suffix_of(&text[m.end()..]);
            if suffix != Suffix::None {
                found.push((m.start(), figure_of(n.to_string(), None, suffix)));
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, f)| f).collect()
}

/// Where `text` says that something costs nothing (byte spans). "Free" counts only as a price: not
/// in "feel free", "free to contact", "free up", "toll-free", nor after a negation ("is not free":
/// that claims a cost, which a figure states or nothing does).
fn zero_cost_claims(text: &str) -> Vec<(usize, usize)> {
    static CLAIM: OnceLock<Regex> = OnceLock::new();
    let claim = re(
        &CLAIM,
        r"(?i)\b(?:free[\s-]+of[\s-]+(?:any\s+)?charges?|(?:fee|fees|commission|charge|cost)[\s-]free|no\s+(?:[\p{L}-]{4,}\s+){0,2}?(?:fees?|charges?|commissions?|costs?)|without\s+(?:any\s+)?(?:[\p{L}-]{4,}\s+)?(?:fees?|charges?|commissions?)|(?:costs?|pay)\s+nothing|waived|(?:isn't|aren't|not)\s+charged|free|бесплатн\p{L}*|без\s+(?:[\p{L}-]+\s+)?(?:комисси\p{L}*|платы|оплаты)|комисси\p{L}*\s+(?:не\s+(?:взима\p{L}*|бер\p{L}*)|нет|отсутству\p{L}*)|не\s+взима\p{L}*|(?:нет|отсутству\p{L}*)\s+комисси\p{L}*|ничего\s+не\s+стои\p{L}*)\b",
    );
    let mut out = Vec::new();
    for m in claim.find_iter(text) {
        let word = m.as_str().to_lowercase();
        let before: Vec<String> = text[..m.start()]
            .split_whitespace()
            .rev()
            .take(2)
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphabetic() && c != '\'' && c != '’')
                    .to_lowercase()
                    .replace('’', "'")
            })
            .collect();
        let negated = before.first().is_some_and(|w| w == "не")
            || before.iter().any(|w| {
                matches!(
                    w.as_str(),
                    "not" | "isn't" | "aren't" | "never" | "longer" | "wasn't" | "weren't"
                )
            });
        if (word == "free" || word.starts_with("бесплатн")) && negated {
            continue;
        }
        if word == "free" {
            let after = text[m.end()..].to_lowercase();
            let after = after.trim_start();
            let glued_before = text[..m.start()].ends_with('-');
            let glued_after = text[m.end()..].starts_with('-');
            let not_a_price = glued_before
                || glued_after
                || before.first().is_some_and(|w| w == "feel")
                || (after.starts_with("up ") && !after.starts_with("up to "))
                || [
                    "time",
                    "text",
                    "form",
                    "trial",
                    "to contact",
                    "to ask",
                    "to reach",
                    "to call",
                    "to write",
                    "to email",
                    "to e-mail",
                    "to get",
                    "to choose",
                    "to leave",
                    "to close",
                    "to cancel",
                ]
                .iter()
                .any(|w| {
                    after.starts_with(w)
                        && !after[w.len()..].starts_with(|c: char| c.is_alphabetic())
                });
            if not_a_price {
                continue;
            }
        }
        out.push((m.start(), m.end()));
    }
    out
}

/// The figures of the texts an answer may draw on (its excerpts and the customer's question).
#[derive(Debug, Default, Clone)]
pub struct FigurePool {
    figures: HashSet<Figure>,
    values: HashSet<String>,
    bare_values: HashSet<String>,
}

impl FigurePool {
    pub fn new<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut pool = Self::default();
        for t in texts {
            pool.add(t.as_ref());
        }
        pool
    }

    pub fn add(&mut self, text: &str) {
        self.add_figures(extract(text));
    }

    /// Adds the figures of a text that is not a source (the customer's question, the operator's
    /// contacts): its numbers may be repeated, but a zero cost must come from a source. A customer
    /// asking whether gift cards are free does not make them free.
    pub fn add_non_source(&mut self, text: &str) {
        self.add_figures(
            extract(text)
                .into_iter()
                .filter(|f| *f != Figure::Free)
                .collect(),
        );
    }

    fn add_figures(&mut self, figures: Vec<Figure>) {
        for f in figures {
            if let Some(v) = f.value() {
                self.values.insert(v.to_string());
                if matches!(f, Figure::Number { .. }) {
                    self.bare_values.insert(v.to_string());
                }
            }
            self.figures.insert(f);
        }
    }

    /// Whether `figure` is stated by the pool's texts. A figure must match in kind: "$15" is not
    /// supported by "15%", "2 hours" not by "2 business days". A bare number is supported by any
    /// figure of the same value, and a count ("5 attempts") by a bare number.
    pub fn supports(&self, figure: &Figure) -> bool {
        if self.figures.contains(figure) {
            return true;
        }
        let zero = |f: &Figure| {
            matches!(
                f,
                Figure::Money { .. } | Figure::Percent { .. } | Figure::Number { .. }
            ) && f.value() == Some("0")
        };
        if zero(figure) && self.figures.contains(&Figure::Free) {
            return true;
        }
        match figure {
            Figure::Free => self.figures.iter().any(zero),
            Figure::Number { value } => self.values.contains(value),
            Figure::Quantity { value, unit } => {
                (unit.is_count() && self.bare_values.contains(value))
                    || (*unit == Unit::Day
                        && self.figures.contains(&Figure::Quantity {
                            value: value.clone(),
                            unit: Unit::BusinessDay,
                        }))
            }
            Figure::Url { value } => {
                let host = value.split('/').next().unwrap_or(value);
                self.figures.iter().any(|f| match f {
                    Figure::Url { value: v } => v.starts_with(value.as_str()),
                    Figure::Email { value: e } => {
                        value == host && e.rsplit('@').next() == Some(host)
                    }
                    _ => false,
                })
            }
            _ => false,
        }
    }

    /// The figures of `text` the pool does not support.
    pub fn unsupported(&self, text: &str) -> Vec<Figure> {
        extract(text)
            .into_iter()
            .filter(|f| !self.supports(f))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &str) -> Figure {
        Figure::Number { value: v.into() }
    }
    fn pct(v: &str) -> Figure {
        Figure::Percent { value: v.into() }
    }
    fn usd(v: &str) -> Figure {
        Figure::Money {
            value: v.into(),
            currency: Currency::Usd,
        }
    }
    fn q(v: &str, unit: Unit) -> Figure {
        Figure::Quantity {
            value: v.into(),
            unit,
        }
    }

    #[test]
    fn formats_are_normalised() {
        assert_eq!(normalise_number("1,000"), "1000");
        assert_eq!(normalise_number("1 000"), "1000");
        assert_eq!(normalise_number("0,5"), "0.5");
        assert_eq!(normalise_number("15.00"), "15");
        assert_eq!(normalise_number("1,000.50"), "1000.5");
        assert_eq!(normalise_number("007"), "7");
        assert_eq!(extract("Fee: 0,5 % of the amount"), vec![pct("0.5")]);
        assert_eq!(extract("up to $10\u{202F}000 a day"), vec![usd("10000")]);
        assert_eq!(
            extract("within 3 business days"),
            vec![q("3", Unit::BusinessDay)]
        );
        assert_eq!(
            extract("Доставка 5–10 рабочих дней"),
            vec![q("5", Unit::BusinessDay), q("10", Unit::BusinessDay)]
        );
        assert_eq!(
            extract("three attempts, then wait"),
            vec![q("3", Unit::Attempt)]
        );
        assert_eq!(
            extract("Mon–Fri 9:00–18:00 (GMT+3)"),
            vec![
                Figure::Time {
                    value: "9:00".into()
                },
                Figure::Time {
                    value: "18:00".into()
                },
                Figure::Zone {
                    value: "gmt+3".into()
                }
            ]
        );
        assert_eq!(
            extract("Use 2FA, see MT103 and 1C:Enterprise [2].\n1. Open the app"),
            vec![]
        );
        assert_eq!(
            extract("Email support@novapay.com or see https://status.novapay.com/."),
            vec![
                Figure::Email {
                    value: "support@novapay.com".into()
                },
                Figure::Url {
                    value: "status.novapay.com".into()
                }
            ]
        );
        assert_eq!(
            extract("Call +7 (495) 123-45-67"),
            vec![Figure::Phone {
                value: "+74951234567".into()
            }]
        );
        assert_eq!(extract("one of the cards"), vec![]);
        assert_eq!(extract("2024"), vec![n("2024")]);
    }

    /// (answer text, source text, whether the source supports every figure of the answer).
    const PAIRS: &[(&str, &str, bool)] = &[
        // Percentages, EN and RU formats.
        (
            "The fee is 1.5%.",
            "International transfers cost 1.5% of the amount.",
            true,
        ),
        (
            "The fee is 1,5%.",
            "International transfers cost 1.5% of the amount.",
            true,
        ),
        (
            "Комиссия 1,5 %.",
            "Комиссия за международные переводы — 1,5% от суммы.",
            true,
        ),
        ("Комиссия 1.5 процента.", "Комиссия — 1,5% от суммы.", true),
        (
            "The fee is 0.5%.",
            "Domestic transfers cost 0,5 % of the amount.",
            true,
        ),
        ("The fee is 1.50%.", "The fee is 1.5%.", true),
        (
            "The fee is 15%.",
            "International transfers cost 1.5%.",
            false,
        ),
        ("The fee is 1.5%.", "The fee is 15%.", false),
        ("The fee is 0.5%.", "The fee is 5%.", false),
        ("The fee is 2%.", "The fee is 2.2%.", false),
        ("The fee is 2.2%.", "The fee is 2%.", false),
        ("It costs 1.5%.", "It costs $1.50.", false),
        ("Conversion is 1 percent.", "plus a 1% conversion fee", true),
        // Amounts.
        (
            "The limit is $1,000.",
            "Unverified accounts: $1,000 per day.",
            true,
        ),
        (
            "The limit is $1 000.",
            "Unverified accounts: $1,000 per day.",
            true,
        ),
        (
            "The limit is $1000.",
            "Unverified accounts: $1,000 per day.",
            true,
        ),
        (
            "Лимит $1\u{00A0}000 в сутки.",
            "Unverified accounts: $1,000 per day.",
            true,
        ),
        (
            "The limit is $10,000.",
            "Unverified accounts: $1,000 per day.",
            false,
        ),
        (
            "The limit is $1,000.",
            "Verified accounts: $10,000 per day.",
            false,
        ),
        ("The limit is 1 000 ₽.", "Лимит 1000 RUB в сутки.", true),
        ("Лимит 1000 рублей.", "Лимит 1 000 ₽ в сутки.", true),
        ("Лимит 777 руб.", "Лимит снятия 777 рублей в сутки.", true),
        ("The limit is $1,000.", "Лимит 1 000 ₽ в сутки.", false),
        ("The limit is 1000 RUB.", "The limit is $1,000.", false),
        ("It costs €5.", "A replacement card costs $5.", false),
        ("It costs $5.", "A replacement card costs $5.", true),
        ("It costs 5 USD.", "A replacement card costs $5.", true),
        ("It costs 5 dollars.", "A replacement card costs $5.", true),
        ("It costs $15.", "sending $1,000 abroad costs $15.00", true),
        (
            "It costs $15,00.",
            "sending $1,000 abroad costs $15.00",
            true,
        ),
        (
            "It costs $150.",
            "sending $1,000 abroad costs $15.00",
            false,
        ),
        ("It costs $1.", "sending $200 costs $1.00", true),
        (
            "Free up to $200.",
            "Free up to $200 per calendar month",
            true,
        ),
        (
            "Free up to $300.",
            "Free up to $200 per calendar month",
            false,
        ),
        (
            "Card payments up to $3,000 a day.",
            "Оплата картой | $3 000 в сутки",
            true,
        ),
        (
            "Card payments up to $5,000 a day.",
            "Оплата картой | $3 000 в сутки",
            false,
        ),
        // Durations and counts.
        (
            "It takes 3 business days.",
            "International: up to 3 business days.",
            true,
        ),
        (
            "It takes three business days.",
            "International: up to 3 business days.",
            true,
        ),
        (
            "It takes 3 days.",
            "International: up to 3 business days.",
            true,
        ),
        (
            "It takes 3 business days.",
            "International: up to 3 days.",
            false,
        ),
        (
            "It takes 2 business days.",
            "International: up to 3 business days.",
            false,
        ),
        (
            "It takes 3 hours.",
            "International: up to 3 business days.",
            false,
        ),
        (
            "Verification takes 24 hours.",
            "completed within 24 hours",
            true,
        ),
        (
            "Verification takes 24 h.",
            "completed within 24 hours",
            true,
        ),
        (
            "Verification takes 48 hours.",
            "completed within 24 hours",
            false,
        ),
        (
            "Проверка занимает до 24 часов.",
            "completed within 24 hours",
            true,
        ),
        (
            "The link is valid for 15 minutes.",
            "The link is valid for 30 minutes.",
            false,
        ),
        (
            "The link is valid for 30 minutes.",
            "Ссылка действует 30 минут.",
            true,
        ),
        (
            "The link is valid for 30 min.",
            "The link is valid for 30 minutes.",
            true,
        ),
        (
            "You have three attempts.",
            "After 3 wrong attempts the PIN is blocked.",
            true,
        ),
        (
            "You have 3 attempts.",
            "После 3 неверных попыток PIN блокируется.",
            true,
        ),
        (
            "У вас три попытки.",
            "После 3 неверных попыток PIN блокируется.",
            true,
        ),
        (
            "You have five attempts.",
            "После 3 неверных попыток PIN блокируется.",
            false,
        ),
        (
            "It is locked after 5 attempts.",
            "After 5 failed sign-in attempts in a row",
            true,
        ),
        (
            "Доставка 5–10 рабочих дней.",
            "Delivery takes 5-10 business days.",
            true,
        ),
        (
            "Доставка 5–7 рабочих дней.",
            "Delivery takes 5-10 business days.",
            false,
        ),
        (
            "Returned within 5 business days.",
            "возвращаются в течение 5 рабочих дней",
            true,
        ),
        (
            "Проверка до 2 рабочих дней.",
            "manual review can take up to 2 business days",
            true,
        ),
        (
            "Проверка до 2 недель.",
            "manual review can take up to 2 business days",
            false,
        ),
        // Times and zones.
        (
            "Support works 9:00–18:00.",
            "Monday–Friday, 9:00-18:00 (GMT+3)",
            true,
        ),
        (
            "Support works 09:00-18:00.",
            "с 9:00 до 18:00 (GMT+3)",
            true,
        ),
        (
            "Support works 9:00–17:00.",
            "Monday–Friday, 9:00-18:00 (GMT+3)",
            false,
        ),
        (
            "Support works 10:00–18:00.",
            "Monday–Friday, 9:00-18:00 (GMT+3)",
            false,
        ),
        (
            "Limits reset at 00:00 GMT+3.",
            "Limits reset every day at 00:00 (GMT+3).",
            true,
        ),
        (
            "Limits reset at 00:00 GMT+5.",
            "Limits reset every day at 00:00 (GMT+3).",
            false,
        ),
        // Contacts.
        (
            "Write to support@novapay.com.",
            "Email support@novapay.com.",
            true,
        ),
        (
            "Write to SUPPORT@NovaPay.com.",
            "Email support@novapay.com.",
            true,
        ),
        (
            "Write to help@novapay.com.",
            "Email support@novapay.com.",
            false,
        ),
        (
            "See status.novapay.com.",
            "check status.novapay.com for outages",
            true,
        ),
        (
            "See https://status.novapay.com/",
            "check status.novapay.com for outages",
            true,
        ),
        (
            "See novapay.com/status.",
            "check status.novapay.com for outages",
            false,
        ),
        (
            "See dev.novapay.com.",
            "on the developer portal at dev.novapay.com",
            true,
        ),
        (
            "Call +1 800 555 0199.",
            "NovaPay does not offer phone support.",
            false,
        ),
        (
            "Звоните +7 495 123-45-67.",
            "Телефон: +7 (495) 123 45 67",
            true,
        ),
        ("Call 8-800-555-35-35.", "Телефон: 8 800 555 35 35", true),
        // Figures the customer stated themselves are not invented.
        (
            "Sending $250 costs 0.5%.",
            "Domestic transfers cost 0.5%. [question: Can I send $250?]",
            true,
        ),
        // Sentences with no figure need no support.
        ("Block the card in the app.", "Cards can be blocked.", true),
        // A zero cost is a figure: the source must say free, no fee, or state a zero amount.
        ("Gift cards are free.", "Gift cards cost $15.", false),
        (
            "Receiving money is free.",
            "| Incoming transfers | Free |",
            true,
        ),
        (
            "There is no monthly fee.",
            "Personal account maintenance: Free (no monthly fee)",
            true,
        ),
        (
            "Opening an account is free of charge.",
            "Opening a personal account is free and there is no monthly fee.",
            true,
        ),
        (
            "Incoming transfers cost nothing.",
            "Incoming transfers: $0.",
            true,
        ),
        (
            "There is no fee for incoming transfers.",
            "Incoming transfers: 0%",
            true,
        ),
        ("The fee is 0%.", "Incoming transfers are free.", true),
        ("It costs $0.", "Virtual cards are free to issue.", true),
        (
            "The fee is waived.",
            "International transfers cost 1.5%.",
            false,
        ),
        (
            "Card replacement is free.",
            "A replacement card costs $5.",
            false,
        ),
        (
            "International transfers are commission-free.",
            "International transfers cost 1.5%.",
            false,
        ),
        (
            "Withdrawals are free up to $200.",
            "Free up to $200 per calendar month",
            true,
        ),
        (
            "Withdrawals are free up to $200.",
            "ATM withdrawals cost 2%, at least $200.",
            false,
        ),
        ("Переводы бесплатные.", "Комиссия за перевод — 1,5%.", false),
        (
            "Пополнение бесплатно.",
            "Пополнение счёта — без комиссии.",
            true,
        ),
        (
            "Перевод без комиссии.",
            "Входящие переводы — бесплатно.",
            true,
        ),
        (
            "Комиссия не взимается.",
            "Обслуживание счёта: 0 ₽ в месяц.",
            true,
        ),
        (
            "Обслуживание бесплатное.",
            "Обслуживание счёта: 99 ₽ в месяц.",
            false,
        ),
        (
            "Обслуживание без абонентской платы.",
            "Обслуживание счёта: 99 ₽ в месяц.",
            false,
        ),
        (
            "Комиссия 0%.",
            "Переводы между своими счетами — без комиссии.",
            true,
        ),
        // Near misses: zero is not a small amount, and "free" that is not a price.
        ("There is no fee.", "The fee is 0,5 %.", false),
        ("It is free.", "The fee is $0.50.", false),
        ("Снятие бесплатно.", "Комиссия за снятие — 0,5%.", false),
        (
            "Feel free to contact support.",
            "International transfers cost 1.5%.",
            true,
        ),
        (
            "You are free to cancel a scheduled transfer.",
            "Scheduled transfers can be cancelled.",
            true,
        ),
        (
            "Call the toll-free line.",
            "Support answers by e-mail.",
            true,
        ),
        (
            "Free up space on your phone first.",
            "The app needs 200 MB.",
            true,
        ),
        (
            "Card replacement is not free.",
            "A replacement card costs $5.",
            true,
        ),
        (
            "Доставка карты не бесплатна.",
            "Доставка карты стоит $5.",
            true,
        ),
        (
            "Небесплатный перевыпуск карты.",
            "Перевыпуск карты стоит $5.",
            true,
        ),
    ];

    #[test]
    fn figure_pairs_match_only_when_equal_after_normalisation() {
        assert!(PAIRS.len() >= 60, "{} pairs", PAIRS.len());
        let mut wrong = Vec::new();
        for (answer, source, expected) in PAIRS {
            let pool = FigurePool::new(&[source]);
            let unsupported = pool.unsupported(answer);
            if unsupported.is_empty() != *expected {
                wrong.push(format!(
                    "{answer:?} vs {source:?}: expected {expected}, unsupported {unsupported:?} of {:?}",
                    extract(answer)
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn list_numbers_and_citations_are_not_figures() {
        let pool = FigurePool::new(&["Open Cards and tap Block."]);
        assert!(pool
            .unsupported("1. Open Cards [1].\n2. Tap Block [2].")
            .is_empty());
    }
}
