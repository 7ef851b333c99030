//! Meaning-based answerability: whether the top excerpts say what a question asks in other words.
//! The lexical gate ([`super::gate`]) refuses a question whose rarest word the knowledge base never
//! uses; a customer who writes "bounces" where the knowledge base says "returned" is refused with it.
//! Here the embedder compares meaning at sentence level: the question against each sentence of the top
//! excerpts (the sentences and the vector cache of the extractive answers), and each missing rare word
//! against the excerpts' own words. A lexical refusal is rescued when the best sentence is very close
//! in meaning to the question; the thresholds belong to the embedder family (cosines of different
//! models are not comparable) and are measured with `novapay eval answerability`.

use serde::Serialize;

use super::extract::{sentences_of, Extractor};
use super::gate::{is_question_word, GateSignals};
use crate::embed::{EmbedError, Embedder, ModelFamily};
use crate::index::Hit;

/// When meaning rescues a lexical refusal.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MeaningConfig {
    /// Cosine similarity between the question and the best sentence of the top excerpts that makes
    /// a lexically refused question answerable; `None`: no rescue (lexical gate only).
    pub min_sentence_similarity: Option<f32>,
    /// Whether the embedder reads Russian: an English-only embedder rates any two Cyrillic texts as
    /// alike, so it rescues English questions only.
    pub multilingual: bool,
}

impl Default for MeaningConfig {
    fn default() -> Self {
        Self::for_family(ModelFamily::Other)
    }
}

impl MeaningConfig {
    /// The measured operating point of an embedder family. all-MiniLM-L6-v2 (the test embedder, and
    /// the family `Other`) was measured on eval/questions.jsonl, eval/heldout/* and squad2-sample (see
    /// eval/README.md). The e5 family could not be measured here (no Hub access), and its cosines sit
    /// in a narrow high band (its similarity floor is 0.80), so it keeps the lexical gate until
    /// `NOVAPAY_MIN_SENTENCE_SIMILARITY` is set from its own curve.
    pub fn for_family(family: ModelFamily) -> Self {
        match family {
            ModelFamily::E5 => Self {
                min_sentence_similarity: None,
                multilingual: true,
            },
            ModelFamily::Other => Self {
                min_sentence_similarity: Some(DEFAULT_MIN_SENTENCE_SIMILARITY),
                multilingual: false,
            },
        }
    }

    /// Whether the meaning of `question` can be compared with this embedder.
    pub fn reads(&self, language: super::Language) -> bool {
        self.multilingual || language == super::Language::En
    }
}

/// The English-only test embedder's rescue threshold (all-MiniLM-L6-v2).
pub const DEFAULT_MIN_SENTENCE_SIMILARITY: f32 = 0.7;

/// What the embedder says about a question and its top excerpts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MeaningSignals {
    /// Highest cosine similarity of the question to one sentence of the top excerpts.
    pub best_sentence: f32,
    /// 1-based excerpt of that sentence.
    pub best_sentence_excerpt: usize,
    /// The same for the question without its missing rare words (when some are missing): a sentence
    /// that says what the missing word means loses similarity when the word goes; one that is only
    /// about the rest of the question gains.
    pub without_missing: Option<f32>,
    /// Each missing rare word and the excerpt word closest to it in meaning.
    pub words: Vec<WordMatch>,
    /// Best chunk's cosine similarity minus the mean of the other top excerpts'.
    pub dense_margin: f32,
}

/// A question word the excerpts do not contain, and their word nearest to it in meaning.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WordMatch {
    pub word: String,
    pub nearest: String,
    pub similarity: f32,
}

impl MeaningSignals {
    /// Whether the best sentence rescues a lexical refusal at `threshold`.
    pub fn rescues(&self, threshold: f32) -> bool {
        self.best_sentence >= threshold
    }

    /// The lowest similarity of a missing rare word to its nearest excerpt word (1 when none is
    /// missing).
    pub fn weakest_word(&self) -> f32 {
        self.words
            .iter()
            .map(|w| w.similarity)
            .fold(1.0, f32::min)
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The words of `text` that may carry meaning (lower case, letters, three or more, not framing).
fn words_of(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphabetic()) {
        let w = w.to_lowercase();
        if w.chars().count() >= 3 && !is_question_word(&w) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// The meaning signals of `question` (whose query embedding is `question_vector`) against the `top`
/// excerpts, given its lexical signals. Blocking (runs the embedder for sentences not seen before).
pub fn signals(
    embedder: &Embedder,
    extractor: &Extractor,
    question: &str,
    question_vector: &[f32],
    top: &[Hit],
    lexical: &GateSignals,
) -> Result<MeaningSignals, EmbedError> {
    let mut sentences: Vec<(usize, String)> = Vec::new();
    for (i, hit) in top.iter().enumerate() {
        for s in sentences_of(&hit.chunk.text) {
            sentences.push((i + 1, s));
        }
    }
    let texts: Vec<String> = sentences.iter().map(|(_, s)| s.clone()).collect();
    let vectors = extractor.passage_vectors(embedder, &texts)?;
    let best_of = |q: &[f32]| {
        sentences
            .iter()
            .zip(&vectors)
            .map(|((excerpt, _), v)| (cosine(q, v), *excerpt))
            .fold((0.0f32, 0usize), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (best_sentence, best_sentence_excerpt) = best_of(question_vector);
    let missing: Vec<String> = lexical
        .words
        .iter()
        .filter(|w| lexical.missing_rare.contains(&w.term) && !w.surface.is_empty())
        .map(|w| w.surface.clone())
        .collect();
    let mut without_missing = None;
    let mut words = Vec::new();
    if !missing.is_empty() {
        let rest: Vec<&str> = question
            .split_whitespace()
            .filter(|w| {
                let bare = w
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                !missing.contains(&bare)
            })
            .collect();
        let q = embedder.embed_queries(&[rest.join(" ")])?.remove(0);
        without_missing = Some(best_of(&q).0);
        let excerpt_words: Vec<String> = top
            .iter()
            .flat_map(|h| words_of(&h.chunk.text))
            .fold(Vec::new(), |mut acc, w| {
                if !acc.contains(&w) {
                    acc.push(w);
                }
                acc
            });
        let mut all = missing.clone();
        all.extend(excerpt_words.iter().cloned());
        let word_vectors = extractor.passage_vectors(embedder, &all)?;
        let (asked, found) = word_vectors.split_at(missing.len());
        for (word, v) in missing.iter().zip(asked) {
            let (similarity, nearest) = excerpt_words
                .iter()
                .zip(found)
                .filter(|(w, _)| *w != word)
                .map(|(w, e)| (cosine(v, e), w.as_str()))
                .fold((0.0f32, ""), |a, b| if b.0 > a.0 { b } else { a });
            words.push(WordMatch {
                word: word.clone(),
                nearest: nearest.to_string(),
                similarity,
            });
        }
    }
    let dense: Vec<f32> = top.iter().filter_map(|h| h.dense).collect();
    let dense_margin = match dense.iter().copied().reduce(f32::max) {
        Some(best) if dense.len() > 1 => {
            let rest: f32 = dense.iter().sum::<f32>() - best;
            best - rest / (dense.len() - 1) as f32
        }
        _ => 0.0,
    };
    Ok(MeaningSignals {
        best_sentence,
        best_sentence_excerpt,
        without_missing,
        words,
        dense_margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_words_skip_framing_and_short_words() {
        assert_eq!(
            words_of("What is the fee? The fee is 1.5% of it."),
            vec!["fee".to_string()]
        );
    }

    #[test]
    fn only_a_multilingual_embedder_reads_russian() {
        let english = MeaningConfig::for_family(ModelFamily::Other);
        assert!(english.reads(super::super::Language::En));
        assert!(!english.reads(super::super::Language::Ru));
        assert!(MeaningConfig::for_family(ModelFamily::E5).reads(super::super::Language::Ru));
    }
}
