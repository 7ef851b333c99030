//! Figures tied to the wrong subject. The figure check (`verify.rs`) asks whether a figure occurs in
//! the cited excerpts; a small model also copies a figure that occurs there but belongs to a
//! neighbouring line: "A domestic transfer costs 1.5%" where the excerpt says "Domestic transfers cost
//! 0.5%" and "International transfers cost 1.5%". This check compares clauses: the answer's clause
//! around a figure against the excerpts' clauses that state a figure of the same kind (a percentage,
//! an amount in one currency, a duration or count in one unit). When an excerpt clause with a
//! *different* figure shares strictly more of the answer clause's words than every excerpt clause with
//! the answer's own figure, the figure is misbound and the sentence is not shown.
//!
//! Ties pass: the check only removes a sentence whose wording points more to another figure's clause
//! than to any clause of its own figure. Why by hand: no crate relates figures to the words around
//! them; the words are compared with the lexical index's analyzers (Snowball stems, stop words
//! dropped) and the answerability gate's same-root rule.

use tantivy::tokenizer::Language;

use super::figures::{extract, Figure, FigurePool, Unit};
use crate::text::{content_terms, same_root, split_sentences};

const LANGUAGES: &[Language] = &[Language::English, Language::Russian];

/// What must match for two figures to compete for the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Percent,
    Money(super::figures::Currency),
    Quantity(Unit),
}

fn kind(figure: &Figure) -> Option<Kind> {
    match figure {
        Figure::Percent { .. } => Some(Kind::Percent),
        Figure::Money { currency, .. } => Some(Kind::Money(*currency)),
        Figure::Quantity { unit, .. } => Some(Kind::Quantity(match unit {
            Unit::BusinessDay => Unit::Day,
            u => *u,
        })),
        _ => None,
    }
}

/// One clause of an excerpt that states at least one comparable figure.
#[derive(Debug, Clone)]
struct Clause {
    /// Which excerpt (0-based) the clause is from.
    excerpt: usize,
    pool: FigurePool,
    kinds: Vec<Kind>,
    words: Vec<String>,
}

/// The excerpts' clauses with figures, ready to compare answer clauses against.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    clauses: Vec<Clause>,
}

impl Bindings {
    pub fn new<S: AsRef<str>>(excerpts: &[S]) -> Self {
        let mut clauses = Vec::new();
        for (i, excerpt) in excerpts.iter().enumerate() {
            for sentence in split_sentences(excerpt.as_ref()) {
                for clause in split_clauses(sentence) {
                    let kinds: Vec<Kind> = extract(clause).iter().filter_map(kind).collect();
                    if kinds.is_empty() {
                        continue;
                    }
                    clauses.push(Clause {
                        excerpt: i,
                        pool: FigurePool::new(&[clause]),
                        kinds,
                        words: words(clause),
                    });
                }
            }
        }
        Self { clauses }
    }

    /// The figures of `sentence` whose clause shares more words with an excerpt clause stating another
    /// figure of the same kind than with any excerpt clause stating this one. `given` holds figures the
    /// customer stated themselves (the question), which are never checked. `cited`: compare with these
    /// excerpts only (0-based, the sentence's citations); `None` for all.
    pub fn misbound(
        &self,
        sentence: &str,
        given: &FigurePool,
        cited: Option<&[usize]>,
    ) -> Vec<Figure> {
        let mut out = Vec::new();
        for clause in split_clauses(sentence) {
            let figures = extract(clause);
            if figures.iter().all(|f| kind(f).is_none()) {
                continue;
            }
            let asked = words(clause);
            for figure in figures {
                let Some(k) = kind(&figure) else { continue };
                if given.supports(&figure) {
                    continue;
                }
                let mut own: Option<usize> = None;
                let mut other = 0;
                let in_scope = |c: &&Clause| cited.is_none_or(|ids| ids.contains(&c.excerpt));
                for c in self.clauses.iter().filter(in_scope) {
                    let shared = shared_words(&asked, &c.words);
                    if c.pool.supports(&figure) {
                        own = Some(own.map_or(shared, |o| o.max(shared)));
                    } else if c.kinds.contains(&k) {
                        other = other.max(shared);
                    }
                }
                // A figure no single clause states (split oddly) is left to the presence check.
                if let Some(own) = own {
                    if other > own && !out.contains(&figure) {
                        out.push(figure);
                    }
                }
            }
        }
        out
    }
}

/// A sentence cut at commas and semicolons followed by a space (not "1,000" or "0,5%") and at the
/// conjunctions that join two statements ("and", "but", "while", "и", "а", "но"), so that "0.5% for
/// domestic and 1.5% for international transfers" gives two clauses. Not at dashes: Russian writes
/// "Внутренний перевод — 0,5%" with the subject before the dash.
fn split_clauses(sentence: &str) -> Vec<&str> {
    const JOINERS: &[&str] = &[
        " and ",
        " but ",
        " while ",
        " whereas ",
        " plus ",
        " и ",
        " а ",
        " но ",
        " плюс ",
    ];
    let mut cuts = vec![0];
    let bytes = sentence.as_bytes();
    for (i, c) in sentence.char_indices() {
        let next_space = bytes.get(i + c.len_utf8()).is_some_and(|b| *b == b' ');
        if (c == ',' || c == ';') && next_space {
            cuts.push(i + 1);
        }
    }
    let lower = sentence.to_lowercase();
    // Lower-casing keeps byte offsets for the joiners' scripts only when lengths agree.
    if lower.len() == sentence.len() {
        for j in JOINERS {
            let mut from = 0;
            while let Some(at) = lower[from..].find(j) {
                cuts.push(from + at);
                from += at + j.len();
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(sentence.len());
    cuts.windows(2)
        .map(|w| &sentence[w[0]..w[1]])
        .filter(|c| !c.trim().is_empty())
        .collect()
}

/// The clause's content words, stemmed; numbers are figures, not words.
fn words(text: &str) -> Vec<String> {
    content_terms(text, LANGUAGES)
        .into_iter()
        .filter(|w| w.chars().all(char::is_alphabetic))
        .collect()
}

fn shared_words(asked: &[String], found: &[String]) -> usize {
    asked
        .iter()
        .filter(|a| found.iter().any(|f| f == *a || same_root(a, f)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEES: &[&str] = &[
        "Domestic transfers cost 0.5% of the transfer amount. For example, sending $200 costs $1.00.",
        "International transfers cost 1.5% of the transfer amount. If the recipient receives a \
         different currency, a 1% currency conversion fee also applies.",
        "| Domestic transfer | 0.5% of the transfer amount |\n| International transfer | 1.5% of the \
         transfer amount |\n| Replacement physical card | $5 |\n| ATM withdrawal fee | $2 |",
        "Business accounts may have different rates from the standard 0.5% for domestic and 1.5% for \
         international transfers.",
        "Внутренний перевод — комиссия 0,5% от суммы перевода. Международный перевод — комиссия 1,5% \
         от суммы перевода. Проверка документов занимает до 2 рабочих дней.",
    ];

    fn misbound(sentence: &str) -> Vec<String> {
        Bindings::new(FEES)
            .misbound(sentence, &FigurePool::default(), None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_figure_taken_from_the_neighbouring_line_is_misbound() {
        assert_eq!(
            misbound("A domestic transfer costs 1.5% of the amount."),
            ["1.5%"]
        );
        assert_eq!(
            misbound("International transfers cost 0.5% of the amount."),
            ["0.5%"]
        );
        assert_eq!(
            misbound("Внутренний перевод стоит 1,5% от суммы."),
            ["1.5%"]
        );
        assert_eq!(
            misbound("A replacement physical card costs $2."),
            ["2 Usd"],
            "the ATM fee's amount on the card line"
        );
    }

    #[test]
    fn figures_on_their_own_lines_pass() {
        for ok in [
            "A domestic transfer costs 0.5% of the amount.",
            "Domestic transfers cost 0.5% and international ones 1.5% of the transfer amount.",
            "International transfers cost 1.5%, plus a 1% conversion fee when the currency differs.",
            "For transfers abroad the fee is 1.5%.",
            "Replacing a physical card costs $5.",
            "The fee for a card replacement is $5.",
            "Sending $200 domestically costs $1.",
            "Международный перевод стоит 1,5% от суммы перевода, внутренний — 0,5%.",
            "Проверка документов занимает до 2 рабочих дней.",
            "Business accounts may have rates other than the standard 0.5% for domestic transfers.",
        ] {
            assert_eq!(misbound(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn figures_the_customer_gave_and_other_kinds_are_not_checked() {
        let given = FigurePool::new(&["Is the fee for domestic transfers 1.5%?"]);
        assert!(Bindings::new(FEES)
            .misbound("Domestic transfers cost 1.5%.", &given, None)
            .is_empty());
        // Times of day, phone numbers and bare numbers are not compared.
        assert!(misbound("A domestic transfer sent at 9:00 arrives by 18:00.").is_empty());
    }

    #[test]
    fn clauses_split_at_joiners_not_inside_numbers() {
        assert_eq!(
            split_clauses("Up to $1,000 per day, or 0,5% и 1,5%; more — later"),
            [
                "Up to $1,000 per day,",
                " or 0,5%",
                " и 1,5%;",
                " more — later"
            ]
        );
    }
}
