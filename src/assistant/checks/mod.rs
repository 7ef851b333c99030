//! The figure check of a generated answer: each sentence's figures must occur in the excerpts the
//! sentence cites (all shown excerpts when it cites none), in the customer's question or in the
//! operator's own support contacts; a sentence with an unsupported figure is never shown. Works on a
//! finished text and on a stream, releasing a sentence only once it is complete and checked.

use serde::Serialize;

pub mod binding;
pub mod figures;
pub mod injection;

use crate::text::split_sentences;
use binding::Bindings;
use figures::{Figure, FigurePool};
use injection::echoes_system_prompt;

/// What the check did to one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Sentences checked.
    pub checked: usize,
    /// Sentences dropped for a figure their sources do not state.
    pub removed: usize,
}

/// The texts an answer may draw its figures from.
pub struct FigureCheck {
    /// One pool per excerpt, numbered from 1 as in the prompt.
    excerpts: Vec<FigurePool>,
    /// All excerpts together with the question and the support contacts.
    all: FigurePool,
    /// The question and the support contacts, added to a sentence's cited excerpts.
    always: Vec<String>,
    /// The figures of `always` alone: stated by the customer or the operator, not bound to a line.
    given: FigurePool,
    /// Clauses of all excerpts, for figures taken from a neighbouring line (`binding.rs`).
    bindings: Bindings,
    excerpt_texts: Vec<String>,
    /// Check figures (`verified` mode); echoes of the system prompt are dropped either way.
    figures: bool,
}

impl FigureCheck {
    /// `excerpts` in prompt order; `always` holds the question and the operator's fallback text.
    pub fn new(excerpts: &[String], always: &[&str]) -> Self {
        let mut all = FigurePool::new(excerpts);
        let mut given = FigurePool::default();
        for t in always {
            all.add_non_source(t);
            given.add_non_source(t);
        }
        Self {
            excerpts: excerpts.iter().map(|e| FigurePool::new(&[e])).collect(),
            all,
            always: always.iter().map(|s| s.to_string()).collect(),
            given,
            bindings: Bindings::new(excerpts),
            excerpt_texts: excerpts.to_vec(),
            figures: true,
        }
    }

    /// Whether figures are checked (off in `generate` mode).
    pub fn figures(mut self, on: bool) -> Self {
        self.figures = on;
        self
    }

    /// Whether `sentence` may be shown.
    pub fn allows(&self, sentence: &str) -> bool {
        if echoes_system_prompt(sentence) {
            tracing::warn!("answer sentence removed: it repeats the system prompt");
            return false;
        }
        if !self.figures {
            return true;
        }
        let bad = self.unsupported(sentence);
        if !bad.is_empty() {
            tracing::info!(unsupported = ?bad.iter().map(ToString::to_string).collect::<Vec<_>>(), "answer sentence removed: a figure its sources do not state, or state for another subject");
        }
        bad.is_empty()
    }

    /// The figures of `sentence` that its sources do not state, or state for another subject (a
    /// neighbouring line's figure, `binding.rs`).
    pub fn unsupported(&self, sentence: &str) -> Vec<Figure> {
        let cited: Vec<usize> = citations(sentence)
            .into_iter()
            .filter(|n| *n >= 1 && *n <= self.excerpts.len())
            .collect();
        let mut bad = if cited.is_empty() {
            let mut bad = self.all.unsupported(sentence);
            bad.extend(self.bindings.misbound(sentence, &self.given, None));
            bad
        } else {
            let texts: Vec<&str> = cited
                .iter()
                .map(|n| self.excerpt_texts[n - 1].as_str())
                .collect();
            let mut pool = FigurePool::new(&texts);
            for t in &self.always {
                pool.add_non_source(t);
            }
            let mut bad = pool.unsupported(sentence);
            let ids: Vec<usize> = cited.iter().map(|n| n - 1).collect();
            bad.extend(self.bindings.misbound(sentence, &self.given, Some(&ids)));
            bad
        };
        bad.dedup();
        bad
    }

    /// The sentences of `text` whose figures are all supported, and what was dropped.
    pub fn filter(&self, text: &str) -> (String, Verification) {
        let mut kept = String::new();
        let mut v = Verification::default();
        for sentence in split_sentences(text) {
            if sentence.trim().is_empty() {
                kept.push_str(sentence);
                continue;
            }
            v.checked += 1;
            if self.allows(sentence) {
                kept.push_str(sentence);
            } else {
                v.removed += 1;
            }
        }
        (tidy(&kept), v)
    }
}

/// Excerpt numbers cited in `text` ("[1]", "[1, 3]").
pub fn citations(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        if !inside.is_empty()
            && inside
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == ' ' || c == ';')
        {
            out.extend(
                inside
                    .split([',', ';'])
                    .filter_map(|n| n.trim().parse::<usize>().ok()),
            );
        }
        rest = &after[close..];
    }
    out
}

/// Whether an answer still says something: at least one sentence of three words or more.
pub fn has_substance(text: &str) -> bool {
    split_sentences(text).iter().any(|s| {
        s.split_whitespace()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count()
            >= 3
    })
}

fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank_run = 0;
    for line in text.trim().lines() {
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Holds streamed text back until a sentence is complete, checks it, and releases it or drops it.
pub struct StreamingCheck {
    check: FigureCheck,
    pending: String,
    released: String,
    pub verification: Verification,
}

impl StreamingCheck {
    pub fn new(check: FigureCheck) -> Self {
        Self {
            check,
            pending: String::new(),
            released: String::new(),
            verification: Verification::default(),
        }
    }

    /// Adds streamed text; returns the text that may be shown now (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let sentences = split_sentences(&self.pending);
        // The last piece may still grow (a dot may be a decimal point): keep it unless it ends with
        // whitespace after its terminator.
        let complete = match sentences.last() {
            Some(last) if ends_complete(last) => sentences.len(),
            _ => sentences.len().saturating_sub(1),
        };
        let done_len: usize = sentences[..complete].iter().map(|s| s.len()).sum();
        let done = self.pending[..done_len].to_string();
        self.pending.drain(..done_len);
        self.release(&done)
    }

    /// The rest of the text at the end of generation.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.release(&rest)
    }

    /// Everything shown so far.
    pub fn released(&self) -> &str {
        &self.released
    }

    fn release(&mut self, text: &str) -> String {
        let mut out = String::new();
        for sentence in split_sentences(text) {
            if !sentence.trim().is_empty() {
                self.verification.checked += 1;
                if !self.check.allows(sentence) {
                    self.verification.removed += 1;
                    continue;
                }
            }
            out.push_str(sentence);
        }
        self.released.push_str(&out);
        out
    }
}

fn ends_complete(sentence: &str) -> bool {
    sentence.ends_with('\n')
        || (sentence.ends_with(char::is_whitespace)
            && sentence.trim_end().ends_with(['.', '!', '?', '…']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> FigureCheck {
        FigureCheck::new(
            &[
                "International transfers cost 1.5% of the transfer amount.".into(),
                "Domestic transfers cost 0.5%. Verification takes up to 24 hours.".into(),
            ],
            &[
                "How much is an international transfer?",
                "support@novapay.com",
            ],
        )
    }

    #[test]
    fn sentences_split_at_terminators_but_not_in_numbers() {
        assert_eq!(
            split_sentences("It costs 1.5% [1]. Also, e.g. the fee. Done!\nNext line"),
            vec![
                "It costs 1.5% [1]. ",
                "Also, e.g. the fee. ",
                "Done!\n",
                "Next line"
            ]
        );
        assert_eq!(
            split_sentences("Steps:\n1. Open Cards. 2. Tap Block."),
            vec!["Steps:\n", "1. Open Cards. ", "2. Tap Block."]
        );
        assert_eq!(
            citations("cost [1] and [2, 3]; [x] [12]"),
            vec![1, 2, 3, 12]
        );
    }

    #[test]
    fn a_figure_from_the_neighbouring_line_is_removed_cited_or_not() {
        let (text, v) = check().filter(
            "Domestic transfers cost 1.5% [2]. Domestic transfers cost 0.5% [2]. \
             A domestic transfer costs 1.5%. International transfers cost 1.5%.",
        );
        assert_eq!(
            text,
            "Domestic transfers cost 0.5% [2]. International transfers cost 1.5%."
        );
        assert_eq!(v.removed, 2);
    }

    #[test]
    fn a_sentence_with_an_invented_figure_is_removed() {
        let (text, v) = check().filter(
            "International transfers cost 1.5% [1]. They also cost $0.5% extra. Ask support@novapay.com.",
        );
        assert_eq!(
            text,
            "International transfers cost 1.5% [1]. Ask support@novapay.com."
        );
        assert_eq!(
            v,
            Verification {
                checked: 3,
                removed: 1
            }
        );
    }

    #[test]
    fn a_zero_cost_must_come_from_the_cited_excerpts_not_from_the_question() {
        let c = FigureCheck::new(
            &[
                "Gift cards cost $15.".into(),
                "Incoming transfers: Free.".into(),
            ],
            &["Are gift cards free? Is receiving money free?"],
        );
        let (text, v) = c.filter(
            "Gift cards are free [1]. Receiving money is free [2]. Gift cards cost $15 [1].",
        );
        assert_eq!(
            text,
            "Receiving money is free [2]. Gift cards cost $15 [1]."
        );
        assert_eq!(v.removed, 1);
        assert!(!c.unsupported("Бесплатно [1].").is_empty());
        assert!(c.unsupported("Бесплатно [2].").is_empty());
    }

    #[test]
    fn a_figure_from_a_neighbouring_excerpt_fails_when_the_sentence_cites_another() {
        let c = check();
        assert!(!c
            .unsupported("Domestic transfers cost 0.5% [1].")
            .is_empty());
        assert!(c
            .unsupported("Domestic transfers cost 0.5% [2].")
            .is_empty());
        assert!(c.unsupported("Domestic transfers cost 0.5%.").is_empty());
    }

    #[test]
    fn streaming_releases_only_checked_sentences() {
        let mut s = StreamingCheck::new(check());
        let mut shown = String::new();
        for piece in [
            "Intern",
            "ational transfers cost 1",
            ".",
            "5% [1]",
            ". It takes 48",
            " hours. ",
            "Thanks",
        ] {
            let out = s.push(piece);
            assert!(
                !out.contains("1.") || out.contains("1.5%"),
                "released half a number: {out:?}"
            );
            shown.push_str(&out);
        }
        shown.push_str(&s.finish());
        assert_eq!(shown, "International transfers cost 1.5% [1]. Thanks");
        assert_eq!(
            s.verification,
            Verification {
                checked: 3,
                removed: 1
            }
        );
        assert!(has_substance(&shown));
        assert!(!has_substance("Thanks [1]."));
    }
}
