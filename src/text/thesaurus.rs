//! Customers' words for the articles' words. A customer writes "someone nicked my card", "скинул
//! бабки не тому", "how much do you charge to wire money overseas"; the articles say "stolen",
//! "перевод", "деньги", "fee", "transfer", "international". A word the knowledge base never uses
//! finds nothing in the lexical index and counts as an unknown topic in the answerability gate, so
//! the customer's own vocabulary reads as "off-topic".
//!
//! Each group below holds words that mean one thing in payment-support questions, in one language.
//! A question word the knowledge base never uses (by its stem) whose group has words the knowledge
//! base does use is replaced, for lexical matching only, by those words. A word the knowledge base
//! uses is never touched, so an article's own wording always wins; the dense query keeps the
//! customer's text. The groups are general payments vocabulary and slang (EN and RU), not any one
//! knowledge base's: words with a second everyday meaning in this domain ("charge" as in "charged
//! twice", "deposit" as in a savings product, "code" as in an error code, "wrong" as in a wrong PIN,
//! "identity" as in identity theft) are left out. Why by hand:
//! no maintained crate ships a Russian and English payments thesaurus; WordNet-style synonym sets know
//! neither the slang nor the domain.

use std::collections::HashMap;
use std::sync::OnceLock;

use tantivy::tokenizer::Language;

use crate::text::words::content_terms;

/// The groups' languages, in the lexical index's order (so a word gets the index's stem).
const LANGUAGES: &[Language] = &[Language::English, Language::Russian];

/// Words of one meaning, each group in one language.
const GROUPS: &[&[&str]] = &[
    // English
    &[
        "stolen",
        "stole",
        "steal",
        "theft",
        "thief",
        "nicked",
        "pinched",
        "robbed",
        "mugged",
        "pickpocketed",
        "pickpocket",
    ],
    &["lost", "lose", "losing", "misplaced"],
    &[
        "fee",
        "fees",
        "cost",
        "costs",
        "price",
        "pricing",
        "commission",
        "tariff",
    ],
    &["transfer", "wire", "remit", "remittance", "send"],
    &["refund", "reimburse", "reimbursement", "chargeback"],
    &["block", "freeze", "lock", "deactivate"],
    &["withdraw", "withdrawal", "cashout"],
    &["atm", "cashpoint"],
    &["exchange", "convert", "conversion"],
    &["abroad", "overseas", "international"],
    &["verify", "verification", "kyc"],
    &["login", "signin", "password", "passcode"],
    &["phone", "mobile", "smartphone", "cellphone"],
    &["close", "shut", "terminate"],
    &["mistake", "mistaken", "accidentally", "typo"],
    &["salary", "wages", "paycheck"],
    &[
        "fraud",
        "scam",
        "scammer",
        "scammed",
        "fraudster",
        "phishing",
    ],
    &["business", "company", "firm", "entrepreneur"],
    &["cancel", "undo", "revoke", "recall"],
    &["limit", "cap", "maximum"],
    &["money", "funds"],
    &["dispute", "complaint", "claim"],
    &["fingerprint", "biometric", "biometrics", "faceid"],
    // Russian
    &[
        "украли",
        "украдена",
        "кража",
        "спёрли",
        "сперли",
        "стащили",
        "свистнули",
        "вытащили",
        "обокрали",
        "стырили",
    ],
    &["потерял", "потеря", "посеял", "пропала"],
    &["комиссия", "стоит", "стоимость", "цена", "плата", "тариф"],
    &[
        "перевод",
        "перевести",
        "отправить",
        "скинуть",
        "скинул",
        "закинуть",
        "кинуть",
        "отослать",
        "переслать",
    ],
    &["деньги", "бабки", "бабло", "средства"],
    &["тысяч", "тыщ", "тыс", "косарь"],
    &[
        "снять",
        "снятие",
        "обналичить",
        "обналичка",
        "наличка",
        "наличные",
        "нал",
        "кэш",
    ],
    &["заблокировать", "блокировка", "заморозить"],
    &["вернуть", "возврат", "вернёте", "вернут"],
    &["вход", "войти", "залогиниться", "логин", "пароль"],
    &["приложение", "прилога", "приложуха", "аппка"],
    &["карта", "карточка"],
    &[
        "мошенник",
        "мошенничество",
        "развод",
        "развели",
        "обман",
        "обманули",
        "жулик",
        "аферист",
    ],
    &["ошибся", "ошибочно", "случайно", "нечаянно"],
    &["зарплата", "зп", "получка"],
    &["закрыть", "удалить", "закрытие"],
    &["пополнить", "пополнение", "закинуть"],
    &["обмен", "обменять", "конвертация", "поменять"],
    &["границей", "заграница", "зарубеж"],
    &["лимит", "ограничение", "потолок", "максимум"],
    &["телефон", "смартфон", "мобильный", "мобила"],
    &["отпечаток", "биометрия"],
];

struct Thesaurus {
    /// Per group: (stem, surface word).
    groups: Vec<Vec<(String, &'static str)>>,
    /// Stem -> the groups it is in.
    by_stem: HashMap<String, Vec<usize>>,
}

fn thesaurus() -> &'static Thesaurus {
    static T: OnceLock<Thesaurus> = OnceLock::new();
    T.get_or_init(|| {
        let mut groups = Vec::with_capacity(GROUPS.len());
        let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
        for (g, words) in GROUPS.iter().enumerate() {
            let mut members = Vec::new();
            for word in words.iter() {
                if let Some(stem) = stem_of(word) {
                    let groups_of = by_stem.entry(stem.clone()).or_default();
                    if !groups_of.contains(&g) {
                        groups_of.push(g);
                    }
                    members.push((stem, *word));
                }
            }
            groups.push(members);
        }
        Thesaurus { groups, by_stem }
    })
}

/// The stem the lexical index gives one word (None for a stop word).
fn stem_of(word: &str) -> Option<String> {
    content_terms(word, LANGUAGES).into_iter().next()
}

/// `question` with each word whose stem `known` rejects, and whose group has words `known` accepts,
/// replaced by those words (at most three); None when no word changed. `known(stem)`: the knowledge
/// base uses this stem.
pub fn in_known_words(question: &str, known: impl Fn(&str) -> bool) -> Option<String> {
    let t = thesaurus();
    let mut changed = false;
    let words: Vec<String> = question
        .split_whitespace()
        .map(|raw| {
            let core = raw.trim_matches(|c: char| !c.is_alphanumeric());
            let lower = core.to_lowercase();
            let Some(stem) = (!lower.is_empty()).then(|| stem_of(&lower)).flatten() else {
                return raw.to_string();
            };
            if known(&stem) {
                return raw.to_string();
            }
            let Some(groups) = t.by_stem.get(&stem) else {
                return raw.to_string();
            };
            let mut replacement: Vec<&str> = Vec::new();
            for &g in groups {
                for (s, surface) in &t.groups[g] {
                    if known(s) && !replacement.contains(surface) && replacement.len() < 3 {
                        replacement.push(surface);
                    }
                }
            }
            if replacement.is_empty() {
                return raw.to_string();
            }
            changed = true;
            raw.replacen(core, &replacement.join(" "), 1)
        })
        .collect();
    changed.then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn kb(words: &[&str]) -> HashSet<String> {
        words.iter().filter_map(|w| stem_of(w)).collect()
    }

    #[test]
    fn a_customer_word_the_articles_never_use_becomes_theirs() {
        let known = kb(&["stolen", "card", "someone", "bus"]);
        assert_eq!(
            in_known_words("I was on the bus and someone nicked my card!", |s| known
                .contains(s))
            .as_deref(),
            Some("I was on the bus and someone stolen my card!")
        );
        let known = kb(&["перевод", "деньги", "человек"]);
        assert_eq!(
            in_known_words("Скинул бабки не тому человеку", |s| known.contains(s)).as_deref(),
            Some("перевод деньги не тому человеку")
        );
    }

    #[test]
    fn the_articles_own_words_and_unrelated_words_are_kept() {
        // The knowledge base says "wire" itself: nothing changes.
        let known = kb(&["wire", "transfer", "fee"]);
        assert_eq!(
            in_known_words("how much to wire money", |s| known.contains(s)),
            None
        );
        // "bitcoin" is in no group: an unknown topic stays unknown.
        assert_eq!(
            in_known_words("can I buy bitcoin", |s| known.contains(s)),
            None
        );
        // A group with no word the knowledge base uses: nothing to replace with.
        let known = kb(&["card"]);
        assert_eq!(
            in_known_words("my card got nicked", |s| known.contains(s)),
            None
        );
    }

    #[test]
    fn every_group_word_has_a_stem_and_groups_stay_in_one_language() {
        for group in GROUPS {
            let cyrillic = |w: &str| w.chars().any(|c| ('\u{400}'..='\u{4FF}').contains(&c));
            let first = cyrillic(group[0]);
            for w in group.iter() {
                assert!(stem_of(w).is_some(), "{w} is a stop word");
                assert_eq!(cyrillic(w), first, "{w} in a group of another language");
            }
        }
    }
}
