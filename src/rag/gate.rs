//! Answerability: whether the retrieved excerpts can answer a question, from signals that do not
//! depend on one knowledge base. Words are weighted by how rare they are in the knowledge base (a
//! word in every chunk, like the company name, proves nothing), the question's rarest words must be
//! in the excerpts (a product the knowledge base never mentions is not answerable however on-topic the
//! rest sounds), and the best single excerpt's BM25 score is normalised by the question's own maximum.

use serde::Serialize;

use crate::index::bm25::{content_terms, Bm25Config};
use crate::index::{Hit, TermStats};

/// BM25 constants (as tantivy and Lucene use).
const K1: f32 = 1.2;
const B: f32 = 0.75;

#[derive(Debug, Clone, Serialize, Default)]
pub struct GateSignals {
    /// Best cosine similarity of the question to a chunk.
    pub similarity: f32,
    /// Share of the question's content words found in the top excerpts, each word weighted by its
    /// inverse document frequency in the knowledge base.
    pub weighted_coverage: f32,
    /// Unweighted share (the former gate), for comparison.
    pub coverage: f32,
    /// Whether the question's rarest content words all occur in the top excerpts.
    pub rare_covered: bool,
    /// The rarest words that no top excerpt contains (stemmed).
    pub missing_rare: Vec<String>,
    /// Best excerpt's BM25 (binary term frequency, length-normalised) over the question's maximum.
    pub best_excerpt_bm25: f32,
    /// Whether the best dense hit and the best lexical hit are the same chunk.
    pub agreement: bool,
}

/// How the signals decide.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GateConfig {
    /// Idf-weighted coverage the top excerpts must reach.
    pub min_weighted_coverage: f32,
    /// Cosine similarity the best chunk must reach in any case (embedders rate unrelated text as
    /// somewhat similar, so this is a floor, not the decision).
    pub min_similarity: f32,
    /// How many of the question's rarest words must be covered.
    pub rare_words: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_weighted_coverage: 0.6,
            min_similarity: 0.2,
            rare_words: 2,
        }
    }
}

impl GateSignals {
    pub fn answerable(&self, config: &GateConfig) -> bool {
        self.rare_covered
            && self.weighted_coverage >= config.min_weighted_coverage
            && self.similarity >= config.min_similarity
    }
}

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
        query.iter().map(|t| (t.clone(), stats.idf(t))).collect();
    // Rarest first; ties by the word itself so that the result is stable.
    weighted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let in_any = |t: &str| excerpt_terms.iter().any(|set| set.contains(t));
    let total: f32 = weighted.iter().map(|(_, w)| w).sum();
    let covered: f32 = weighted
        .iter()
        .filter(|(t, _)| in_any(t))
        .map(|(_, w)| w)
        .sum();
    let coverage = if query.is_empty() {
        0.0
    } else {
        weighted.iter().filter(|(t, _)| in_any(t)).count() as f32 / query.len() as f32
    };
    let missing_rare: Vec<String> = weighted
        .iter()
        .take(config.rare_words)
        .filter(|(t, _)| !in_any(t))
        .map(|(t, _)| t.clone())
        .collect();
    let best_excerpt_bm25 = excerpt_terms
        .iter()
        .map(|set| {
            let len = set.len() as f32;
            let norm = 1.0 - B + B * len / stats.mean_terms.max(1.0);
            let score: f32 = weighted
                .iter()
                .filter(|(t, _)| set.contains(t))
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
    GateSignals {
        similarity,
        weighted_coverage: if total > 0.0 { covered / total } else { 0.0 },
        coverage,
        rare_covered: !query.is_empty() && missing_rare.is_empty(),
        missing_rare,
        best_excerpt_bm25,
        agreement,
    }
}

/// Words that frame a question rather than say what it is about ("how much", "can I", "сколько",
/// "подскажите"). The analyzers' own stop lists are short (Lucene's English list has 33 words), and a
/// framing word missing from the knowledge base would otherwise count as its rarest word.
const QUESTION_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "we",
    "us",
    "our",
    "you",
    "your",
    "yours",
    "he",
    "she",
    "him",
    "her",
    "it",
    "its",
    "they",
    "them",
    "their",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "just",
    "now",
    "much",
    "many",
    "long",
    "one",
    "ones",
    "please",
    "tell",
    "know",
    "need",
    "want",
    "get",
    "also",
    "anything",
    "something",
    "still",
    "hi",
    "hello",
    "thanks",
    "thank",
    "ok",
    "okay",
    "s",
    "t",
    "don",
    "let",
    "сколько",
    "какой",
    "какая",
    "какое",
    "какие",
    "какую",
    "каким",
    "какого",
    "каков",
    "как",
    "где",
    "когда",
    "почему",
    "зачем",
    "что",
    "чем",
    "кто",
    "ли",
    "можно",
    "нужно",
    "надо",
    "мне",
    "меня",
    "мой",
    "моя",
    "моё",
    "мое",
    "мои",
    "моего",
    "моей",
    "мою",
    "я",
    "вы",
    "вас",
    "вам",
    "ваш",
    "ваша",
    "ваши",
    "у",
    "в",
    "во",
    "на",
    "с",
    "со",
    "по",
    "за",
    "для",
    "о",
    "об",
    "от",
    "до",
    "и",
    "или",
    "а",
    "но",
    "не",
    "ни",
    "есть",
    "это",
    "этот",
    "эта",
    "эти",
    "то",
    "же",
    "бы",
    "подскажите",
    "скажите",
    "пожалуйста",
    "хочу",
    "могу",
    "ещё",
    "еще",
    "так",
    "тоже",
];

/// `question` without its framing words.
fn without_question_words(question: &str) -> String {
    question
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '%' && c != '.' && c != ',')
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let lower = w.to_lowercase();
            !QUESTION_WORDS.contains(&lower.trim_matches(['\'', '.', ',']))
        })
        .collect::<Vec<_>>()
        .join(" ")
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
}
