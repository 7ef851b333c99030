//! Meaning-based answerability: whether the top excerpts say what a question asks in other words.
//! The lexical gate ([`super::gate`]) refuses a question whose rarest word the knowledge base never
//! uses; a customer who writes "cash" where the knowledge base says "withdrawal" is refused with it.
//! Here the embedder compares meaning at sentence level (the sentences and the vector cache of the
//! extractive answers): a lexical refusal is rescued when one sentence of the top excerpts is close to
//! the question, the question without its missing rare words gets no closer to the sentences (so they
//! account for what the missing word means: an "overdraft limit" question without "overdraft" moves
//! towards the card limits, a sign that they do not answer it), and the best excerpt stands out from
//! the rest. The similarity of each missing word to the excerpts' own words is measured too, and not
//! used: on the tuning sets it did not tell synonyms from neighbouring products. Thresholds belong to
//! the embedder family (cosines of different models are not comparable) and are measured with
//! `novapay eval answerability`.

use serde::Serialize;

use super::extract::{sentences_of, Extractor};
use super::gate::{is_question_word, GateSignals};
use crate::embed::{EmbedError, Embedder, ModelFamily};
use crate::index::Hit;

/// When meaning rescues a lexical refusal.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MeaningConfig {
    /// Cosine similarity between the question and the best sentence of the top excerpts that a
    /// lexically refused question needs to be rescued; `None`: no rescue (lexical gate only).
    pub min_sentence_similarity: Option<f32>,
    /// How much closer the question may get to the excerpts' sentences when its missing rare words
    /// are taken out: a sentence that says what the missing word means does not get closer without
    /// it; a sentence only about the rest of the question ("overdraft limit" against the card
    /// limits) does.
    pub max_gain_without_missing: f32,
    /// How far the best excerpt's cosine must stand above the mean of the other top excerpts': one
    /// place in the knowledge base answers, rather than everything on the topic looking alike.
    pub min_dense_margin: f32,
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
    /// The default of an embedder family: no rescue (the lexical gate alone) for every family.
    /// all-MiniLM-L6-v2's operating point ([`MINILM_MIN_SENTENCE_SIMILARITY`]) was chosen on
    /// eval/questions.jsonl, eval/tune-3/* and squad2-sample and rescued no unanswerable question of
    /// them, but on two held-out sets written afterwards (eval/heldout-3, eval/heldout-4) it let 3 of
    /// 27 off-topic questions through ("buy bitcoin", "buy stocks", "exchange rate for buying
    /// dollars") while cutting false refusals from 80% to 59%: a leak is worse than a refusal, so it
    /// is opt-in (`NOVAPAY_MIN_SENTENCE_SIMILARITY=0.5`). The e5 family could not be measured here
    /// (no Hub access), and its cosines sit in a narrow high band (its similarity floor is 0.80).
    pub fn for_family(family: ModelFamily) -> Self {
        match family {
            ModelFamily::E5 => Self {
                min_sentence_similarity: None,
                max_gain_without_missing: MINILM_MAX_GAIN_WITHOUT_MISSING,
                min_dense_margin: MINILM_MIN_DENSE_MARGIN,
                multilingual: true,
            },
            ModelFamily::Other => Self {
                min_sentence_similarity: None,
                max_gain_without_missing: MINILM_MAX_GAIN_WITHOUT_MISSING,
                min_dense_margin: MINILM_MIN_DENSE_MARGIN,
                multilingual: false,
            },
        }
    }

    /// Whether the meaning of `question` can be compared with this embedder.
    pub fn reads(&self, language: super::Language) -> bool {
        self.multilingual || language == super::Language::En
    }
}

/// The English-only test embedder's (all-MiniLM-L6-v2) operating point, chosen on the tuning sets
/// (eval/README.md): no unanswerable question of them rescued; opt-in, see [`MeaningConfig::for_family`].
pub const MINILM_MIN_SENTENCE_SIMILARITY: f32 = 0.5;
pub const MINILM_MAX_GAIN_WITHOUT_MISSING: f32 = 0.03;
pub const MINILM_MIN_DENSE_MARGIN: f32 = 0.1;

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
    /// Missing rare words that are numbers or names (capitalised inside the sentence): they identify
    /// a thing (a year, a city, a product), and another thing is not a wording difference.
    pub missing_identifiers: Vec<String>,
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
    /// Whether the excerpts rescue a lexical refusal, with the best sentence's `threshold`: a
    /// sentence close to the question, that also accounts for the question's missing rare words
    /// (none of them a number or a name), in an excerpt that stands out. A question refused for low coverage alone (no rare word
    /// missing) is not rescued: nothing says which words the excerpts lack.
    pub fn rescues(&self, config: &MeaningConfig, threshold: f32) -> bool {
        self.best_sentence >= threshold
            && self.missing_identifiers.is_empty()
            && self
                .without_missing
                .is_some_and(|w| w - self.best_sentence <= config.max_gain_without_missing)
            && self.dense_margin >= config.min_dense_margin
    }

    /// The lowest similarity of a missing rare word to its nearest excerpt word (1 when none is
    /// missing).
    pub fn weakest_word(&self) -> f32 {
        self.words.iter().map(|w| w.similarity).fold(1.0, f32::min)
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

/// The words of `question` (lower case) written as numbers or as names: with a digit, or
/// capitalised where a sentence does not start.
fn identifiers(question: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    for raw in question.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        let name = !sentence_start && word.chars().next().is_some_and(char::is_uppercase);
        if !word.is_empty() && (name || word.chars().any(|c| c.is_ascii_digit())) {
            // "WW-I", "Apple-Pay": each part of a hyphenated name.
            out.extend(
                word.split(|c: char| !c.is_alphanumeric())
                    .filter(|p| !p.is_empty())
                    .map(str::to_lowercase),
            );
        }
        if !word.is_empty() {
            sentence_start = raw.ends_with(['.', '?', '!', ':']);
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
    let named = identifiers(question);
    let missing_identifiers: Vec<String> = missing
        .iter()
        .filter(|w| named.contains(w))
        .cloned()
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
        let excerpt_words: Vec<String> =
            top.iter()
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
        missing_identifiers,
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
    fn a_rescue_needs_a_close_sentence_that_accounts_for_the_missing_word_in_a_standout_excerpt() {
        let config = MeaningConfig {
            min_sentence_similarity: Some(MINILM_MIN_SENTENCE_SIMILARITY),
            ..MeaningConfig::for_family(ModelFamily::Other)
        };
        let t = MINILM_MIN_SENTENCE_SIMILARITY;
        let close = MeaningSignals {
            best_sentence: t + 0.2,
            without_missing: Some(t + 0.19),
            dense_margin: config.min_dense_margin + 0.05,
            ..Default::default()
        };
        assert!(close.rescues(&config, t));
        let far = MeaningSignals {
            best_sentence: t - 0.01,
            ..close.clone()
        };
        assert!(!far.rescues(&config, t));
        let about_the_rest = MeaningSignals {
            without_missing: Some(close.best_sentence + config.max_gain_without_missing + 0.01),
            ..close.clone()
        };
        assert!(!about_the_rest.rescues(&config, t));
        let everything_alike = MeaningSignals {
            dense_margin: config.min_dense_margin - 0.01,
            ..close.clone()
        };
        assert!(!everything_alike.rescues(&config, t));
        let a_name_missing = MeaningSignals {
            missing_identifiers: vec!["krakow".into()],
            ..close.clone()
        };
        assert!(!a_name_missing.rescues(&config, t));
        let no_word_missing = MeaningSignals {
            without_missing: None,
            ..close
        };
        assert!(!no_word_missing.rescues(&config, t));
        for family in [ModelFamily::E5, ModelFamily::Other] {
            assert_eq!(
                MeaningConfig::for_family(family).min_sentence_similarity,
                None,
                "opt-in: it let off-topic questions through on held-out sets"
            );
        }
    }

    #[test]
    fn numbers_and_names_inside_a_sentence_are_identifiers() {
        assert_eq!(
            identifiers("Who moved his court from Warsaw to Krakow in 1596?"),
            vec!["warsaw", "krakow", "1596"]
        );
        assert_eq!(
            identifiers("How much is the NovaPay Premium plan? Cash is fine."),
            vec!["novapay", "premium"]
        );
        assert_eq!(
            identifiers("Who supported post WW-I movements?"),
            vec!["ww", "i"]
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
