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

use serde::Serialize;

use super::meaning::{MeaningConfig, MeaningSignals};
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
    /// The rarest-word rule as decided: none of the question's rarest words is both missing from the
    /// top excerpts and unknown to the whole knowledge base.
    pub rare_covered: bool,
    /// The former, stricter rule: the rarest words all occur in the top excerpts (for comparison).
    pub rare_in_excerpts: bool,
    /// The rarest words that no top excerpt contains (stemmed).
    pub missing_rare: Vec<String>,
    /// Of those, the ones no chunk of the knowledge base contains: they refuse.
    pub unknown_rare: Vec<String>,
    /// Best excerpt's BM25 (binary term frequency, length-normalised) over the question's maximum.
    pub best_excerpt_bm25: f32,
    /// Whether the best dense hit and the best lexical hit are the same chunk.
    pub agreement: bool,
    /// Each content word of the question, rarest first (for inspection and evaluation).
    pub words: Vec<WordSignal>,
    /// What the embedder says at sentence level (measured when the lexical rules refuse, in a
    /// language the embedder reads).
    pub meaning: Option<MeaningSignals>,
}

/// One content word of the question.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WordSignal {
    /// As the customer wrote it (lower case).
    pub surface: String,
    /// After stemming.
    pub term: String,
    /// Its weight: the rarity in the knowledge base.
    pub weight: f32,
    /// Chunks of the knowledge base that contain it.
    pub document_frequency: usize,
    /// In one of the top excerpts.
    pub in_top: bool,
    /// In one of the top excerpts, or a word of the same root is.
    pub covered: bool,
    /// In one of all the retrieved candidates.
    pub in_candidates: bool,
    /// Longest common prefix, in characters, with a word of the top excerpts.
    pub top_prefix: usize,
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
    /// When the meaning of the best excerpt sentence rescues a lexical refusal.
    pub meaning: MeaningConfig,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_weighted_coverage: 0.6,
            min_similarity: 0.2,
            rare_words: 2,
            meaning: MeaningConfig::default(),
        }
    }
}

impl GateSignals {
    /// The lexical rules, or a rescue by meaning.
    pub fn answerable(&self, config: &GateConfig) -> bool {
        self.lexically_answerable(config) || self.rescued(config)
    }

    /// The rarest-word rule, the weighted coverage and the similarity floor.
    pub fn lexically_answerable(&self, config: &GateConfig) -> bool {
        self.rare_covered
            && self.weighted_coverage >= config.min_weighted_coverage
            && self.similarity >= config.min_similarity
    }

    /// Whether a sentence of the top excerpts is close enough in meaning to the question to answer
    /// it in other words (the similarity floor still holds).
    pub fn rescued(&self, config: &GateConfig) -> bool {
        self.rescued_at(config, config.meaning.min_sentence_similarity)
    }

    /// [`GateSignals::rescued`] at the sentence-similarity `threshold` (`None`: never).
    pub fn rescued_at(&self, config: &GateConfig, threshold: Option<f32>) -> bool {
        match (threshold, &self.meaning) {
            (Some(t), Some(m)) => {
                self.similarity >= config.min_similarity && m.rescues(&config.meaning, t)
            }
            _ => false,
        }
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
    let mut weighted: Vec<(String, f32)> = query
        .iter()
        .map(|t| (t.clone(), rarity(stats, t)))
        .collect();
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
    let words = weighted
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
    GateSignals {
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

/// Characters two words share at their start.
fn common_prefix(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Shortest shared start that makes two stems one root.
const MIN_ROOT_CHARS: usize = 5;

/// Whether the excerpt's stem `found` has the root of the question's stem `asked`: Snowball strips
/// inflections but keeps derivational suffixes ("доставк" for "доставка", "достав" for "доставят";
/// "verif" for "verify", "verifi" for "verified"), so stems of one root share a long start. Short
/// stems must match exactly (five letters are often a different word: "inter" for "interest" and
/// "international").
pub(crate) fn same_root(asked: &str, found: &str) -> bool {
    let shared = common_prefix(asked, found);
    let len = asked.chars().count();
    shared >= MIN_ROOT_CHARS && shared * 4 >= len * 3
}

/// How much finding `term` in the excerpts says: BM25's inverse document frequency, shifted so that a
/// word in every chunk (the company's name) weighs nothing.
fn rarity(stats: &TermStats, term: &str) -> f32 {
    let n = stats.documents as f32;
    let everywhere = (1.0 + 0.5 / (n + 0.5)).ln();
    (stats.idf(term) - everywhere).max(0.0)
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
    "d",
    "m",
    "ll",
    "re",
    "ve",
    "don",
    "didn",
    "doesn",
    "isn",
    "aren",
    "wasn",
    "weren",
    "haven",
    "hasn",
    "hadn",
    "wouldn",
    "couldn",
    "shouldn",
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

/// Whether `word` (lower case) frames a question rather than says what it is about.
pub(crate) fn is_question_word(word: &str) -> bool {
    QUESTION_WORDS.contains(&word)
}

/// `question` without its framing words.
fn without_question_words(question: &str) -> String {
    question
        // Apostrophes separate too: "didn't" and "what's" are framing words, not "didn" and "s" ("won"
        // of "won't" stays: it is also the verb of "who won").
        .split(|c: char| !c.is_alphanumeric() && c != '%' && c != '.' && c != ',')
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let lower = w.to_lowercase();
            !QUESTION_WORDS.contains(&lower.trim_matches(['.', ',']))
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
        assert_eq!(rarity(&stats, "novapay"), 0.0);
        assert!(rarity(&stats, "intern") > 1.0);
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
