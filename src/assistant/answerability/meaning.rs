//! Meaning-based answerability: whether the top excerpts say what a question asks in other words.
//! The lexical gate ([`super::lexical`]) refuses a question whose rarest word the knowledge base never
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

use super::signals::{GateSignals, MeaningSignals, WordMatch};
use crate::assistant::extract::Extractor;
use crate::embed::{EmbedError, Embedder};
use crate::index::Hit;
use crate::text::{is_question_word, sentences_of};

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
    use crate::assistant::answerability::{MeaningConfig, MINILM_MIN_SENTENCE_SIMILARITY};
    use crate::embed::ModelFamily;

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
        assert!(english.reads(crate::text::Language::En));
        assert!(!english.reads(crate::text::Language::Ru));
        assert!(MeaningConfig::for_family(ModelFamily::E5).reads(crate::text::Language::Ru));
    }
}
