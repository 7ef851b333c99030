//! Answers to repeated questions: support traffic repeats itself. An answer is reused for a later
//! question with no conversation history when the normalised text is the same (or, when configured,
//! its embedding is nearly the same and so is its language), for the same knowledge-base generation
//! and answer mode. Bounded (least recently used out); nothing is written to disk.

use std::sync::Mutex;

use lru::LruCache;

use super::{Answer, AnswerMode, Language};

#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Answers kept at most; 0 turns the cache off.
    pub capacity: usize,
    /// Cosine similarity above which a question counts as a repeat of a cached one; `None` uses exact
    /// (normalised) text only. Keep it high: "domestic" and "international" transfer questions are
    /// close in embedding space.
    pub near_duplicate: Option<f32>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            near_duplicate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    generation: String,
    mode: AnswerMode,
    question: String,
}

struct Entry {
    answer: Answer,
    language: Language,
    vector: Option<Vec<f32>>,
}

pub struct AnswerCache {
    config: CacheConfig,
    entries: Option<Mutex<LruCache<Key, Entry>>>,
}

/// Lower case, punctuation and repeated spaces gone: "How much is it?" = "how much is it".
pub fn normalise_question(question: &str) -> String {
    question
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '%' | '$' | '€' | '₽' | '.' | ',')))
        .map(|w| w.trim_matches(['.', ',']))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl AnswerCache {
    pub fn new(config: CacheConfig) -> Self {
        let entries =
            std::num::NonZeroUsize::new(config.capacity).map(|cap| Mutex::new(LruCache::new(cap)));
        Self { config, entries }
    }

    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    pub fn wants_vectors(&self) -> bool {
        self.enabled() && self.config.near_duplicate.is_some()
    }

    fn key(generation: &str, mode: AnswerMode, question: &str) -> Key {
        Key {
            generation: generation.to_string(),
            mode,
            question: normalise_question(question),
        }
    }

    /// The cached answer to the same question.
    pub fn get(&self, generation: &str, mode: AnswerMode, question: &str) -> Option<Answer> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&Self::key(generation, mode, question))
            .map(|e| e.answer.clone())
    }

    /// The cached answer to a question whose embedding is within the near-duplicate threshold, in
    /// the same language.
    pub fn get_near(
        &self,
        generation: &str,
        mode: AnswerMode,
        language: Language,
        vector: &[f32],
    ) -> Option<Answer> {
        let threshold = self.config.near_duplicate?;
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        let best = entries
            .iter()
            .filter(|(k, e)| k.generation == generation && k.mode == mode && e.language == language)
            .filter_map(|(k, e)| {
                let v = e.vector.as_ref()?;
                let cos: f32 = v.iter().zip(vector).map(|(a, b)| a * b).sum();
                (cos >= threshold).then(|| (cos, k.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))?;
        entries.get(&best.1).map(|e| e.answer.clone())
    }

    pub fn put(
        &self,
        generation: &str,
        mode: AnswerMode,
        question: &str,
        language: Language,
        vector: Option<Vec<f32>>,
        answer: &Answer,
    ) {
        let Some(entries) = self.entries.as_ref() else {
            return;
        };
        let mut answer = answer.clone();
        answer.cached = false;
        answer.usage = None;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.put(
            Self::key(generation, mode, question),
            Entry {
                answer,
                language,
                vector,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries
            .as_ref()
            .map_or(0, |e| e.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Answer {
        Answer {
            text: text.into(),
            ..Answer::default()
        }
    }

    #[test]
    fn same_question_same_generation_hits_and_size_is_bounded() {
        let cache = AnswerCache::new(CacheConfig {
            capacity: 2,
            near_duplicate: None,
        });
        cache.put(
            "g1",
            AnswerMode::Verified,
            "How much is a transfer?",
            Language::En,
            None,
            &answer("0.5%"),
        );
        assert_eq!(
            cache
                .get("g1", AnswerMode::Verified, "  how much is a TRANSFER ")
                .map(|a| a.text),
            Some("0.5%".into())
        );
        assert!(
            cache
                .get("g2", AnswerMode::Verified, "How much is a transfer?")
                .is_none(),
            "new generation"
        );
        assert!(
            cache
                .get("g1", AnswerMode::Extract, "How much is a transfer?")
                .is_none(),
            "other mode"
        );
        assert!(cache
            .get("g1", AnswerMode::Verified, "How much is a card?")
            .is_none());
        cache.put(
            "g1",
            AnswerMode::Verified,
            "b",
            Language::En,
            None,
            &answer("b"),
        );
        cache.put(
            "g1",
            AnswerMode::Verified,
            "c",
            Language::En,
            None,
            &answer("c"),
        );
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .get("g1", AnswerMode::Verified, "How much is a transfer?")
                .is_none(),
            "evicted"
        );
    }

    #[test]
    fn near_duplicates_need_the_threshold_and_the_same_language() {
        let cache = AnswerCache::new(CacheConfig {
            capacity: 8,
            near_duplicate: Some(0.95),
        });
        cache.put(
            "g",
            AnswerMode::Verified,
            "q",
            Language::En,
            Some(vec![1.0, 0.0]),
            &answer("a"),
        );
        let close = [0.99f32, (1.0f32 - 0.99 * 0.99).sqrt()];
        assert!(cache
            .get_near("g", AnswerMode::Verified, Language::En, &close)
            .is_some());
        assert!(cache
            .get_near("g", AnswerMode::Verified, Language::Ru, &close)
            .is_none());
        assert!(cache
            .get_near("g", AnswerMode::Verified, Language::En, &[0.9, 0.436])
            .is_none());
        let off = AnswerCache::new(CacheConfig {
            capacity: 0,
            near_duplicate: None,
        });
        off.put(
            "g",
            AnswerMode::Verified,
            "q",
            Language::En,
            None,
            &answer("a"),
        );
        assert!(off.get("g", AnswerMode::Verified, "q").is_none());
    }
}
