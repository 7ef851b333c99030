//! Extractive answers: the one to three sentences of the top excerpts that best answer the question,
//! quoted verbatim with their source, without the LLM. Sentences are scored by the embedder (question
//! against sentence) plus the idf-weighted share of the question's words they contain, because the
//! embedder alone ranks poorly in a language it was not trained on. Used as an answer mode of its
//! own, when the figure check leaves nothing of a generated answer, and when the generation queue is
//! full.

use std::sync::Mutex;

use lru::LruCache;
use serde::Serialize;

use super::checks::figures::{self, Figure, Unit};
use crate::embed::Embedder;
use crate::index::bm25::Bm25Config;
use crate::index::{Hit, TermStats};
use crate::text::words::without_question_words;
use crate::text::{content_terms, detect_language, sentences_of, thesaurus, Language};

/// A sentence quoted from an excerpt.
#[derive(Debug, Clone, Serialize)]
pub struct Quote {
    pub text: String,
    /// 1-based position of its excerpt among the answer's sources.
    pub source_index: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    pub text: String,
    pub quotes: Vec<Quote>,
}

/// Up to this many sentences.
const MAX_QUOTES: usize = 3;
/// A further sentence is quoted only when it scores within this margin of the best one.
const MARGIN: f32 = 0.12;
/// Weight of the lexical part of a sentence's score.
const LEXICAL_WEIGHT: f32 = 0.5;
/// Bonus for a sentence holding the kind of figure the question asks for ("how long" → a duration).
const FIT_BONUS: f32 = 0.2;

/// The kind of figure a question asks for, when it asks for one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Amount,
    Duration,
    Count,
    Contact,
}

impl Want {
    fn of(question: &str) -> Option<Want> {
        let q = question.to_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| q.contains(w));
        if any(&[
            "how long",
            "how soon",
            "сколько длится",
            "как долго",
            "сколько идёт",
            "сколько идет",
            "сколько времени",
            "срок",
        ]) {
            Some(Want::Duration)
        } else if any(&["how many", "сколько раз", "сколько попыт", "сколько неверн"])
        {
            Some(Want::Count)
        } else if any(&[
            "how much",
            "cost",
            "fee",
            "price",
            "charge",
            "limit",
            "сколько стоит",
            "стоимост",
            "комисси",
            "цен",
            "лимит",
            "сколько можно",
        ]) {
            Some(Want::Amount)
        } else if any(&[
            "contact",
            "e-mail",
            "email",
            "phone",
            "reach",
            "связаться",
            "почт",
            "телефон",
            "написать",
        ]) {
            Some(Want::Contact)
        } else {
            None
        }
    }

    fn satisfied_by(self, found: &[Figure]) -> bool {
        found.iter().any(|f| match (self, f) {
            (Want::Amount, Figure::Money { .. } | Figure::Percent { .. }) => true,
            (Want::Duration, Figure::Quantity { unit, .. }) => !matches!(
                unit,
                Unit::Attempt | Unit::Times | Unit::Character | Unit::Digit
            ),
            (Want::Count, Figure::Quantity { .. } | Figure::Number { .. }) => true,
            (Want::Contact, Figure::Email { .. } | Figure::Url { .. } | Figure::Phone { .. }) => {
                true
            }
            _ => false,
        })
    }
}

impl Extracted {
    /// Whether the quotes (with their sections' headings) contain one of the two rarest words of
    /// `question` that the knowledge base uses (read in the articles' vocabulary, framing words such
    /// as "how much does" left out): quotes that leave out what the question is most specifically
    /// about ("a payment-request link" answered with the sentences on recalling a payment) do not
    /// answer it, however close their topic. True when the question has no such word. (On the tuning
    /// sets, 797 answerable and 490 off-topic questions: off-topic answers 12 → 8, answers from a
    /// wrong article 5 → 4, answers 173 → 165; requiring the single rarest word cost 80 answers for 5
    /// off-topic ones.)
    pub fn has_key_word(&self, stats: &TermStats, question: &str, excerpts: &[Hit]) -> bool {
        let languages = Bm25Config::KNOWLEDGE_BASE.languages;
        let lexical = thesaurus::in_known_words(question, |t| stats.uses(t))
            .unwrap_or_else(|| question.to_string());
        // Framing words ("how much does") are not what a question is about, however rare.
        let mut known: Vec<(f32, String)> =
            content_terms(&without_question_words(&lexical), languages)
                .into_iter()
                .filter(|t| stats.uses(t))
                .map(|t| (stats.rarity(&t), t))
                .collect();
        if known.is_empty() {
            return true;
        }
        known.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let keys: Vec<&String> = known.iter().take(2).map(|(_, t)| t).collect();
        self.quotes.iter().any(|q| {
            let heading = excerpts
                .get(q.source_index.wrapping_sub(1))
                .map_or("", |h| h.chunk.heading.as_str());
            let terms = content_terms(&format!("{heading}\n{}", q.text), languages);
            keys.iter().any(|k| terms.contains(*k))
        })
    }
}

/// Keeps sentence embeddings between questions: the same top excerpts come back for similar
/// questions, and re-embedding them is most of an extractive answer's time.
pub struct Extractor {
    vectors: Mutex<LruCache<String, Vec<f32>>>,
}

impl Default for Extractor {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl Extractor {
    pub fn new(capacity: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity.max(1)).expect("capacity >= 1");
        Self {
            vectors: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The best sentences of `excerpts` (hits in source order) for `question`. Blocking.
    pub fn answer(
        &self,
        embedder: &Embedder,
        stats: &TermStats,
        question: &str,
        excerpts: &[Hit],
    ) -> Result<Extracted, crate::embed::EmbedError> {
        let language = detect_language(question);
        let mut candidates: Vec<(usize, String, String)> = Vec::new();
        for (i, hit) in excerpts.iter().enumerate() {
            for sentence in sentences_of(&hit.chunk.text) {
                candidates.push((i + 1, sentence, hit.chunk.heading.clone()));
            }
        }
        // Answer in the customer's language when the excerpts allow it.
        if candidates
            .iter()
            .any(|(_, s, _)| detect_language(s) == language)
        {
            candidates.retain(|(_, s, _)| detect_language(s) == language);
        }
        if candidates.is_empty() {
            return Ok(Extracted {
                text: String::new(),
                quotes: Vec::new(),
            });
        }
        let q = embedder.embed_queries(&[question])?.remove(0);
        let vectors = self.passage_vectors(
            embedder,
            &candidates
                .iter()
                .map(|(_, s, _)| s.clone())
                .collect::<Vec<_>>(),
        )?;
        let languages = Bm25Config::KNOWLEDGE_BASE.languages;
        let question_terms = content_terms(question, languages);
        let total: f32 = question_terms.iter().map(|t| stats.idf(t)).sum();
        let want = Want::of(question);
        let mut scored: Vec<Quote> = candidates
            .iter()
            .zip(&vectors)
            .map(|((source_index, sentence, heading), v)| {
                let cosine: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
                let terms = content_terms(&format!("{heading}\n{sentence}"), languages);
                let lexical = if total > 0.0 {
                    question_terms
                        .iter()
                        .filter(|t| terms.contains(*t))
                        .map(|t| stats.idf(t))
                        .sum::<f32>()
                        / total
                } else {
                    0.0
                };
                let fits = want.is_some_and(|w| w.satisfied_by(&figures::extract(sentence)));
                Quote {
                    text: sentence.clone(),
                    source_index: *source_index,
                    score: cosine + LEXICAL_WEIGHT * lexical + if fits { FIT_BONUS } else { 0.0 },
                }
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        let best = scored[0].score;
        let mut quotes: Vec<Quote> = Vec::new();
        for s in scored {
            if quotes.len() == MAX_QUOTES || s.score < best - MARGIN {
                break;
            }
            if !quotes.iter().any(|q| q.text == s.text) {
                quotes.push(s);
            }
        }
        Ok(Extracted {
            text: format_quotes(&quotes, language),
            quotes,
        })
    }

    /// The passage embeddings of `texts`, from the cache where it has them (the gate's meaning
    /// check reuses them for the same excerpts). Blocking.
    pub fn passage_vectors(
        &self,
        embedder: &Embedder,
        sentences: &[String],
    ) -> Result<Vec<Vec<f32>>, crate::embed::EmbedError> {
        let mut missing: Vec<String> = Vec::new();
        if let Ok(mut cache) = self.vectors.lock() {
            for s in sentences {
                if cache.get(s).is_none() && !missing.contains(s) {
                    missing.push(s.clone());
                }
            }
        }
        let fresh = if missing.is_empty() {
            Vec::new()
        } else {
            embedder.embed_passages(&missing)?
        };
        let mut cache = self
            .vectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (s, v) in missing.into_iter().zip(fresh) {
            cache.put(s, v);
        }
        Ok(sentences
            .iter()
            .map(|s| cache.get(s).cloned().unwrap_or_default())
            .collect())
    }
}

/// The quotes as the answer text, each with its source number, under a line that says what it is.
fn format_quotes(quotes: &[Quote], language: Language) -> String {
    let intro = match language {
        Language::Ru => "Из базы знаний NovaPay:",
        Language::En => "From the NovaPay knowledge base:",
    };
    let mut text = String::from(intro);
    for q in quotes {
        text.push_str(&format!("\n{} [{}]", q.text, q.source_index));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_without_the_questions_specific_words_are_not_on_point() {
        let texts = [
            "Card payments abroad cost 1% of the amount.",
            "ATM withdrawals are free up to 200 per calendar month.",
            "The business account costs 10 per month.",
            "Your card arrives in 5 days.",
        ];
        let stats = TermStats::build(&texts);
        let quoted = |text: &str| Extracted {
            text: text.to_string(),
            quotes: vec![Quote {
                text: text.to_string(),
                source_index: 1,
                score: 1.0,
            }],
        };
        let question = "What is the monthly fee for a business account?";
        assert!(!quoted(texts[1]).has_key_word(&stats, question, &[]));
        assert!(quoted(texts[2]).has_key_word(&stats, question, &[]));
        // Framing words are not what a question is about, however rare ("much", "does").
        let framing = TermStats::build(&[
            "A plastic card costs 5.",
            "The plastic card's cost is shown in the app.",
            "A virtual card is free.",
            "Send as much as you like; the app does the rest.",
            "The card arrives in 5 days.",
        ]);
        let question = "How much does a plastic card cost?";
        assert!(quoted("A plastic card costs 5.").has_key_word(&framing, question, &[]));
        assert!(!quoted("A virtual card is free.").has_key_word(&framing, question, &[]));
        // Words the knowledge base never uses are not asked for.
        assert!(quoted(texts[3]).has_key_word(&stats, "Can I buy bitcoin?", &[]));
    }

    #[test]
    fn tables_lists_and_emphasis_become_plain_sentences() {
        let text = "## Overview\n| Service | Fee |\n|---|---|\n| Domestic transfer | 0.5% of the amount |\n\n- **Virtual card:** free to issue. Use it online.\n2. Tap **Transfer** and choose a recipient.";
        assert_eq!(
            sentences_of(text),
            vec![
                "Domestic transfer: 0.5% of the amount",
                "Virtual card: free to issue.",
                "Use it online.",
                "Tap Transfer and choose a recipient.",
            ]
        );
    }
}
