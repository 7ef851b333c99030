//! How the dense and the lexical lists of one search become one ranking.
//!
//! - **Dense, per language.** A multilingual embedder scores a question higher against every chunk in
//!   its own language: a Russian question about a stolen card sits closer to an unrelated Russian
//!   article than to the English "Lost or stolen card" section. So each chunk's cosine is read
//!   against the question's mean cosine to the candidates *in the chunk's language*: what stands
//!   out above its language's level wins, whatever the language's offset. With one language in the
//!   knowledge base this is the cosine order. (Measured on the nine tuning knowledge bases with the
//!   4-bit e5 copy, `eval/README.md`: the right article first for 509 of 796 answerable questions
//!   against 485 with the former z-score over the 30 best of each language, and in the top three
//!   for 707 against 705; no knowledge base lost. Dividing by the spread as well, or subtracting
//!   a share of the mean other than all of it, did worse.)
//! - **Lexical, by coverage.** A BM25 hit adds its reciprocal rank weighted by the square of the
//!   share of the question's rarity mass the chunk contains: a chunk that shares one common word
//!   with the question ("card") hardly counts, one that has its rare words (a product name, an error
//!   code) counts fully. Unweighted, BM25 pulls a cross-language question to same-language articles
//!   on the wrong topic.
//!
//! Both only with an embedder that reads every language (see [`Fusion`]).

use std::collections::HashSet;

use crate::text::Language;

/// How a search fuses its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fusion {
    /// The embedder reads every language of the knowledge base: rank dense hits within their
    /// language and weigh each lexical hit by the share of the question it covers (the dense list
    /// carries cross-language questions). Off for an English-only embedder: its cosines across
    /// languages are noise that a per-language reading would promote, and only BM25 matches its
    /// Russian questions; then the lists are fused as they come (cosine order, plain reciprocal rank).
    pub multilingual: bool,
}

/// Reciprocal rank fusion's constant (Cormack et al.).
pub const RRF_K: f32 = 60.0;

/// Dense candidates read per query: each language's mean cosine is taken over them.
pub const DENSE_POOL: usize = 200;

/// A language with fewer candidates than this is measured against all candidates together.
const MIN_PER_LANGUAGE: usize = 8;

/// The fused score of rank `rank` (0-based) in one list.
pub fn reciprocal_rank(rank: usize) -> f32 {
    1.0 / (RRF_K + rank as f32 + 1.0)
}

/// `candidates` (id, cosine), best cosine first, re-ranked by each cosine's height above the mean
/// cosine of the candidates in its chunk's language (see the module's note); returns (id, cosine),
/// best first.
pub fn rank_within_language(
    candidates: &[(usize, f32)],
    language_of: impl Fn(usize) -> Option<Language>,
) -> Vec<(usize, f32)> {
    let mean = |cosines: &mut dyn Iterator<Item = f32>| -> (f32, usize) {
        let (sum, n) = cosines.fold((0.0f32, 0usize), |(s, n), c| (s + c, n + 1));
        (sum / n.max(1) as f32, n)
    };
    let (pooled, _) = mean(&mut candidates.iter().map(|(_, c)| *c));
    let mut level: Vec<(Option<Language>, f32)> = Vec::new();
    let mut scored: Vec<(usize, f32, f32)> = candidates
        .iter()
        .map(|&(id, cosine)| {
            let lang = language_of(id);
            let base = match level.iter().find(|(l, _)| *l == lang) {
                Some((_, m)) => *m,
                None => {
                    let (own, n) = mean(
                        &mut candidates
                            .iter()
                            .filter(|(i, _)| language_of(*i) == lang)
                            .map(|(_, c)| *c),
                    );
                    let m = if n >= MIN_PER_LANGUAGE { own } else { pooled };
                    level.push((lang, m));
                    m
                }
            };
            (id, cosine, cosine - base)
        })
        .collect();
    // Stable: equal heights keep the cosine order.
    scored.sort_by(|a, b| b.2.total_cmp(&a.2));
    scored.into_iter().map(|(id, c, _)| (id, c)).collect()
}

/// The share of `query`'s rarity mass (term, weight) that `chunk_terms` contains, squared: what a
/// lexical hit's reciprocal rank is multiplied by. 1 when the query has no weighted term.
pub fn lexical_weight(query: &[(String, f32)], chunk_terms: &HashSet<String>) -> f32 {
    let total: f32 = query.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return 1.0;
    }
    let covered: f32 = query
        .iter()
        .filter(|(t, _)| chunk_terms.contains(t))
        .map(|(_, w)| w)
        .sum();
    let share = covered / total;
    share * share
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> HashSet<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_chunk_standing_out_in_its_language_beats_a_same_language_crowd() {
        // Ten Russian chunks all near 0.84 (the question is Russian), ten English ones near 0.78
        // with one at 0.81: the English one stands out in its language, the Russian best does not.
        let mut candidates = Vec::new();
        for i in 0..10 {
            candidates.push((i, 0.845 - 0.001 * i as f32));
        }
        candidates.push((100, 0.81));
        for i in 0..9 {
            candidates.push((101 + i, 0.78 - 0.001 * i as f32));
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let language = |id: usize| Some(if id < 100 { Language::Ru } else { Language::En });
        let ranked = rank_within_language(&candidates, language);
        assert_eq!(ranked[0], (100, 0.81), "{ranked:?}");
        assert_eq!(ranked.len(), candidates.len());
        // One language only: the cosine order is kept.
        let one = rank_within_language(&candidates, |_| Some(Language::En));
        assert_eq!(one, candidates);
    }

    #[test]
    fn height_above_the_language_level_beats_a_tight_crowd() {
        // Russian candidates in a tight band (the best barely above, but many spreads above, them);
        // English ones lower and looser, the best well above its language's level.
        let mut candidates: Vec<(usize, f32)> = (0..10)
            .map(|i| (i, 0.80 + 0.001 * (i % 2) as f32))
            .collect();
        candidates.push((10, 0.83));
        candidates.push((100, 0.78));
        for i in 0..9 {
            candidates.push((101 + i, 0.66 + 0.01 * (i % 3) as f32));
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let language = |id: usize| Some(if id < 100 { Language::Ru } else { Language::En });
        let ranked = rank_within_language(&candidates, language);
        assert_eq!(ranked[0].0, 100, "{ranked:?}");
        assert_eq!(ranked[1].0, 10, "{ranked:?}");
    }

    #[test]
    fn a_language_with_few_candidates_is_measured_against_all() {
        // Two English chunks among twenty Russian: their own spread would be two points; they are
        // measured against the pooled candidates, so the lower one does not jump ahead.
        let mut candidates: Vec<(usize, f32)> =
            (0..20).map(|i| (i, 0.85 - 0.002 * i as f32)).collect();
        candidates.push((100, 0.80));
        candidates.push((101, 0.70));
        let language = |id: usize| Some(if id < 100 { Language::Ru } else { Language::En });
        let ranked = rank_within_language(&candidates, language);
        let pos = |id| ranked.iter().position(|(i, _)| *i == id).unwrap();
        assert!(pos(100) < pos(101));
        assert_eq!(ranked.last().unwrap().0, 101);
    }

    #[test]
    fn lexical_weight_is_the_squared_share_of_rarity_covered() {
        let query = vec![("bitcoin".to_string(), 3.0), ("card".to_string(), 1.0)];
        assert_eq!(lexical_weight(&query, &terms(&["card", "fee"])), 1.0 / 16.0);
        assert_eq!(lexical_weight(&query, &terms(&["bitcoin", "card"])), 1.0);
        assert_eq!(lexical_weight(&query, &terms(&["fee"])), 0.0);
        assert_eq!(lexical_weight(&[], &terms(&["fee"])), 1.0);
    }
}
