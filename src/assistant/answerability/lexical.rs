//! Answerability: whether the retrieved excerpts can answer a question, from signals that do not
//! depend on one knowledge base. Words are compared after Snowball stemming (English and Russian, the
//! analyzers the lexical index uses), and a word also counts as found when an excerpt has a word of the
//! same root (a shared prefix of at least five letters and three quarters of the stem: Snowball removes
//! inflections, not derivations such as "доставка"/"доставят"). Words are weighted by how rare they are in
//! the knowledge base (a word in every chunk, like the company name, weighs nothing). The question's rarest
//! words decide about unknown topics: one that the knowledge base never uses (a product it never
//! mentions) refuses however on-topic the rest sounds, while one that it uses elsewhere but not in these
//! excerpts is a wording or retrieval difference ("credited" for "returned") and only lowers the weighted
//! coverage. The best single excerpt's BM25 score normalised by the question's own maximum and the
//! agreement of the dense and lexical top hits are measured too (`novapay eval answerability`).

use super::signals::{GateConfig, GateSignals, WordSignal};
use crate::index::bm25::Bm25Config;
use crate::index::{Hit, TermStats};
use crate::text::words::{common_prefix, content_terms, same_root, without_question_words};
use crate::text::{detect_language, split_sentences, Language};

/// BM25 constants (as tantivy and Lucene use).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// The signals for `question` against the `top` excerpts (and all `hits` for the agreement).
pub fn signals(
    stats: &TermStats,
    question: &str,
    similarity: f32,
    top: &[Hit],
    hits: &[Hit],
    config: &GateConfig,
) -> GateSignals {
    let languages = Bm25Config::KNOWLEDGE_BASE.languages;
    let query = content_terms(&without_question_words(question), languages);
    let texts: Vec<String> = top.iter().map(|h| h.chunk.search_text()).collect();
    let excerpt_terms: Vec<_> = texts.iter().map(|t| content_terms(t, languages)).collect();
    let mut weighted: Vec<(String, f32)> =
        query.iter().map(|t| (t.clone(), stats.rarity(t))).collect();
    // Rarest first; ties by the word itself so that the result is stable.
    weighted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let in_any = |t: &str| excerpt_terms.iter().any(|set| set.contains(t));
    let covered_in = |set: &std::collections::HashSet<String>, t: &str| {
        set.contains(t) || set.iter().any(|e| same_root(t, e))
    };
    let covered = |t: &str| excerpt_terms.iter().any(|set| covered_in(set, t));
    let total: f32 = weighted.iter().map(|(_, w)| w).sum();
    let covered_weight: f32 = weighted
        .iter()
        .filter(|(t, _)| covered(t))
        .map(|(_, w)| w)
        .sum();
    let coverage = if query.is_empty() {
        0.0
    } else {
        weighted.iter().filter(|(t, _)| covered(t)).count() as f32 / query.len() as f32
    };
    let missing_rare: Vec<String> = weighted
        .iter()
        .take(config.rare_words)
        .filter(|(t, _)| !covered(t))
        .map(|(t, _)| t.clone())
        .collect();
    let unknown_rare: Vec<String> = missing_rare
        .iter()
        .filter(|t| {
            stats
                .document_frequency
                .get(t.as_str())
                .copied()
                .unwrap_or(0)
                == 0
        })
        .cloned()
        .collect();
    let rare_in_excerpts = !query.is_empty()
        && weighted
            .iter()
            .take(config.rare_words)
            .all(|(t, _)| in_any(t));
    let best_excerpt_bm25 = excerpt_terms
        .iter()
        .map(|set| {
            let len = set.len() as f32;
            let norm = 1.0 - B + B * len / stats.mean_terms.max(1.0);
            let score: f32 = weighted
                .iter()
                .filter(|(t, _)| covered_in(set, t))
                .map(|(_, w)| w * (K1 + 1.0) / (1.0 + K1 * norm))
                .sum();
            if total > 0.0 {
                (score / total).min(1.0)
            } else {
                0.0
            }
        })
        .fold(0.0, f32::max);
    let best_by = |key: fn(&Hit) -> Option<f32>| {
        hits.iter()
            .filter_map(|h| key(h).map(|s| (s, h)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, h)| (h.chunk.source.clone(), h.chunk.position))
    };
    let agreement = match (best_by(|h| h.dense), best_by(|h| h.lexical)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let candidate_terms: Vec<_> = hits
        .iter()
        .map(|h| content_terms(&h.chunk.search_text(), languages))
        .collect();
    let surfaces: Vec<(String, String)> = without_question_words(question)
        .split_whitespace()
        .flat_map(|w| {
            let lower = w
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            content_terms(&lower, languages)
                .into_iter()
                .map(move |t| (lower.clone(), t))
        })
        .collect();
    let words: Vec<WordSignal> = weighted
        .iter()
        .map(|(t, w)| WordSignal {
            surface: surfaces
                .iter()
                .find(|(_, term)| term == t)
                .map(|(s, _)| s.clone())
                .unwrap_or_default(),
            term: t.clone(),
            weight: *w,
            document_frequency: stats.document_frequency.get(t).copied().unwrap_or(0),
            in_top: in_any(t),
            covered: covered(t),
            in_candidates: candidate_terms.iter().any(|set| set.contains(t)),
            top_prefix: excerpt_terms
                .iter()
                .flatten()
                .map(|e| common_prefix(t, e))
                .max()
                .unwrap_or(0),
        })
        .collect();
    let (unknown_ask, unknown_story) = unknown_mass(question, &words, total);
    let unknown_identifiers = unknown_identifiers(question, stats, &covered);
    GateSignals {
        dense_z: dense_z(hits, config.meaning.multilingual),
        unknown_ask,
        unknown_story,
        unknown_identifiers,
        score: None,
        similarity,
        weighted_coverage: if total > 0.0 {
            covered_weight / total
        } else {
            0.0
        },
        coverage,
        rare_covered: !query.is_empty() && unknown_rare.is_empty(),
        rare_in_excerpts,
        missing_rare,
        unknown_rare,
        best_excerpt_bm25,
        agreement,
        words,
        meaning: None,
    }
}

/// Cosines of the next candidates a z-score is taken against.
const DENSE_SPREAD: usize = 10;

/// The best dense hit's cosine against the mean and spread of the next ones. With a multilingual
/// embedder, *within its chunk's language*: such an embedder sets every chunk in the question's
/// language higher, so a cross-language match is measured against its own language's crowd (of the
/// languages with at least three hits, the one where the best stands out most). An English-only
/// embedder's cosines across languages are noise: all hits together.
pub fn dense_z(hits: &[Hit], multilingual: bool) -> f32 {
    if !multilingual {
        return z_of_best(hits.iter().filter_map(|h| h.dense).collect()).unwrap_or(0.0);
    }
    let mut by_language: Vec<(Language, Vec<f32>)> = Vec::new();
    for h in hits {
        let Some(c) = h.dense else { continue };
        let lang = detect_language(&h.chunk.text);
        match by_language.iter_mut().find(|(l, _)| *l == lang) {
            Some((_, v)) => v.push(c),
            None => by_language.push((lang, vec![c])),
        }
    }
    by_language
        .into_iter()
        .filter_map(|(_, cos)| z_of_best(cos))
        .fold(None, |best: Option<f32>, z| {
            Some(best.map_or(z, |b| b.max(z)))
        })
        .unwrap_or(0.0)
}

fn z_of_best(mut cos: Vec<f32>) -> Option<f32> {
    cos.sort_by(|a, b| b.total_cmp(a));
    if cos.len() < 3 {
        return None;
    }
    let rest = &cos[1..cos.len().min(DENSE_SPREAD + 1)];
    let mean = rest.iter().sum::<f32>() / rest.len() as f32;
    let var = rest.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / rest.len() as f32;
    Some(((cos[0] - mean) / var.sqrt().max(0.01)).min(10.0))
}

/// Which sentences of a question ask: those ending in "?" (the last one when none does). The
/// others tell the customer's story.
fn asking_sentences(question: &str) -> (String, String) {
    let sentences: Vec<&str> = split_sentences(question)
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let asks = |s: &&str| s.ends_with('?');
    let any_asks = sentences.iter().any(asks);
    let (mut ask, mut story) = (String::new(), String::new());
    for (i, s) in sentences.iter().enumerate() {
        let is_ask = if any_asks {
            asks(s)
        } else {
            i + 1 == sentences.len()
        };
        let into = if is_ask { &mut ask } else { &mut story };
        into.push_str(s);
        into.push(' ');
    }
    (ask.to_lowercase(), story.to_lowercase())
}

/// Shares of the question's rarity mass `total` in words no chunk uses, in the asking sentence and
/// in the story.
fn unknown_mass(question: &str, words: &[WordSignal], total: f32) -> (f32, f32) {
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    let (ask, _story) = asking_sentences(question);
    let (mut in_ask, mut in_story) = (0.0, 0.0);
    for w in words
        .iter()
        .filter(|w| w.document_frequency == 0 && !w.covered)
    {
        if !w.surface.is_empty() && ask.contains(&w.surface) {
            in_ask += w.weight;
        } else {
            in_story += w.weight;
        }
    }
    (in_ask / total, in_story / total)
}

/// Numbers and names (capitalised, not first in their sentence) of the question that no chunk of
/// the knowledge base contains and no top excerpt covers.
fn unknown_identifiers(
    question: &str,
    stats: &TermStats,
    covered: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let languages = Bm25Config::KNOWLEDGE_BASE.languages;
    let mut out = Vec::new();
    for sentence in split_sentences(question) {
        let words: Vec<&str> = sentence
            .split(|c: char| {
                c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '«' | '»')
            })
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
            .filter(|w| !w.is_empty())
            .collect();
        for (i, w) in words.iter().enumerate() {
            let number = w.chars().any(|c| c.is_ascii_digit());
            let name = i > 0
                && w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().count() > 1
                && *w != "I";
            if !(number || name) {
                continue;
            }
            for t in content_terms(w, languages) {
                let known = stats.document_frequency.get(&t).copied().unwrap_or(0) > 0;
                if !known && !covered(&t) && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::chunk::Chunk;

    fn hit(text: &str, position: usize) -> Hit {
        Hit {
            chunk: Arc::new(Chunk {
                source: "kb.md".into(),
                title: "NovaPay".into(),
                heading: String::new(),
                position,
                text: text.into(),
            }),
            score: 1.0,
            dense: Some(0.5),
            lexical: Some(1.0),
        }
    }

    fn kb() -> (TermStats, Vec<Hit>) {
        let texts = [
            "NovaPay international transfers cost 1.5% of the amount.",
            "NovaPay domestic transfers cost 0.5%.",
            "NovaPay cards can be blocked in the app.",
            "NovaPay support works Monday to Friday.",
        ];
        let stats = TermStats::build(&texts.map(|t| format!("NovaPay\n{t}")));
        let hits = texts.iter().enumerate().map(|(i, t)| hit(t, i)).collect();
        (stats, hits)
    }

    #[test]
    fn the_company_name_proves_nothing_and_an_unknown_product_is_refused() {
        let (stats, hits) = kb();
        let config = GateConfig::default();
        let s = signals(
            &stats,
            "What interest rate do NovaPay savings accounts pay?",
            0.5,
            &hits[..2],
            &hits,
            &config,
        );
        assert!(s.coverage > 0.0, "NovaPay is covered: {s:?}");
        assert!(s.weighted_coverage < 0.1, "{s:?}");
        assert!(!s.rare_covered);
        assert!(!s.answerable(&config));
        let s = signals(
            &stats,
            "How much do international transfers cost?",
            0.5,
            &hits[..2],
            &hits,
            &config,
        );
        assert!(s.rare_covered, "{s:?}");
        assert!(s.weighted_coverage > 0.9, "{s:?}");
        assert!(s.answerable(&config));
    }

    fn kb_of(texts: &[&str]) -> (TermStats, Vec<Hit>) {
        let stats = TermStats::build(
            &texts
                .iter()
                .map(|t| format!("NovaPay\n{t}"))
                .collect::<Vec<_>>(),
        );
        let hits = texts.iter().enumerate().map(|(i, t)| hit(t, i)).collect();
        (stats, hits)
    }

    #[test]
    fn inflected_english_and_russian_words_match_their_excerpt() {
        let (stats, hits) = kb_of(&[
            "The card payment limit is $3,000 per day.",
            "Перевыпуск карты стоит $5, доставка занимает 5–10 рабочих дней.",
            "Support works Monday to Friday.",
            "Transfers abroad cost 1.5%.",
        ]);
        let config = GateConfig::default();
        for (question, excerpt) in [
            ("Are card payments limited?", 0),
            ("Сколько стоит перевыпустить карту?", 1),
            ("Когда доставят карты?", 1),
        ] {
            let s = signals(
                &stats,
                question,
                0.5,
                &hits[excerpt..=excerpt],
                &hits,
                &config,
            );
            assert!(s.weighted_coverage > 0.99, "{question}: {s:?}");
            assert!(s.rare_covered && s.answerable(&config), "{question}: {s:?}");
        }
    }

    #[test]
    fn a_word_in_every_chunk_weighs_nothing() {
        let (stats, hits) = kb();
        assert_eq!(stats.rarity("novapay"), 0.0);
        assert!(stats.rarity("intern") > 1.0);
        let s = signals(
            &stats,
            "NovaPay?",
            0.5,
            &hits[..1],
            &hits,
            &GateConfig::default(),
        );
        assert_eq!(s.weighted_coverage, 0.0, "{s:?}");
        assert!(!s.answerable(&GateConfig::default()));
    }

    #[test]
    fn same_root_needs_a_long_shared_start() {
        assert!(same_root("доставк", "достав"));
        assert!(same_root("verif", "verifi"));
        assert!(!same_root("interest", "intern"), "five letters of eight");
        assert!(!same_root("card", "care"));
        assert!(!same_root("bitcoin", "bit"));
    }

    #[test]
    fn a_rare_word_used_elsewhere_lowers_coverage_but_an_unknown_one_refuses() {
        let (stats, hits) = kb_of(&[
            "A returned transfer comes back to your account within 5 business days.",
            "The recipient's bank may need time to credit the funds.",
            "Your account and transfer history are in the app.",
            "Send a transfer back from your account at any time.",
        ]);
        let config = GateConfig::default();
        // "credited" is the knowledge base's word too, just not in the excerpt that answers.
        let s = signals(
            &stats,
            "When is a returned transfer credited back to my account?",
            0.5,
            &hits[..1],
            &hits,
            &config,
        );
        assert!(!s.rare_in_excerpts && s.rare_covered, "{s:?}");
        assert!(
            s.unknown_rare.is_empty() && !s.missing_rare.is_empty(),
            "{s:?}"
        );
        assert!(s.answerable(&config), "{s:?}");
        // "overdraft" is in no chunk: a product the knowledge base never mentions.
        let s = signals(
            &stats,
            "When is an overdraft on my account returned?",
            0.5,
            &hits[..1],
            &hits,
            &config,
        );
        assert_eq!(s.unknown_rare, vec!["overdraft".to_string()], "{s:?}");
        assert!(!s.answerable(&config), "{s:?}");
    }

    #[test]
    fn contractions_are_framing_words() {
        assert_eq!(
            without_question_words("What's the fee if I didn't sign, and I’m abroad?"),
            "fee sign, abroad"
        );
    }
}
