//! Answers to repeated questions: support traffic repeats itself. An answer is reused for a later
//! question with no conversation history when the normalised text is the same (or, when configured,
//! its embedding is nearly the same and so is its language), for the same knowledge-base generation
//! and answer mode. Bounded (least recently used out); nothing is written to disk.
//!
//! The key is a customer's question, so an entry lives no longer than the conversation it came
//! from: it remembers its session, is dropped when that session is deleted or erased (checked at
//! every hit, so an erase by `novapay forget` in another process counts too), and is never served
//! after `max_age` (the conversation TTL).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{Answer, AnswerMode, Language, SessionId};

#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Answers kept at most; 0 turns the cache off.
    pub capacity: usize,
    /// Cosine similarity above which a question counts as a repeat of a cached one; `None` uses exact
    /// (normalised) text only. Keep it high: "domestic" and "international" transfer questions are
    /// close in embedding space.
    pub near_duplicate: Option<f32>,
    /// An entry is not served (and is dropped) once this old: the conversation TTL, so that a
    /// question outlives its conversation nowhere. `None`: as long as it stays in the cache.
    pub max_age: Option<Duration>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            near_duplicate: None,
            max_age: None,
        }
    }
}

/// An answer offered to the cache, with the question it answered.
pub struct NewEntry<'a> {
    pub question: &'a str,
    pub language: Language,
    pub vector: Option<Vec<f32>>,
    pub answer: &'a Answer,
    /// The session whose question it was (`None`: a stateless door's, stored nowhere else).
    pub origin: Option<SessionId>,
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
    origin: Option<SessionId>,
    stored: Instant,
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

    /// Whether an entry may still be served: young enough, and its conversation still there.
    fn servable(&self, entry: &Entry, alive: &dyn Fn(&SessionId) -> bool) -> bool {
        self.config
            .max_age
            .is_none_or(|max| entry.stored.elapsed() <= max)
            && entry.origin.as_ref().is_none_or(alive)
    }

    /// The cached answer to the same question. `alive` says whether a session still exists: an
    /// entry from a deleted, erased or expired conversation is dropped instead of served.
    pub fn get(
        &self,
        generation: &str,
        mode: AnswerMode,
        question: &str,
        alive: &dyn Fn(&SessionId) -> bool,
    ) -> Option<Answer> {
        let entries = self.entries.as_ref()?;
        let key = Self::key(generation, mode, question);
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        let servable = self.servable(entries.peek(&key)?, alive);
        if !servable {
            entries.pop(&key);
            return None;
        }
        entries.get(&key).map(|e| e.answer.clone())
    }

    /// Drops the entries whose question came from a session `gone` names; returns how many.
    pub fn forget(&self, gone: impl Fn(&SessionId) -> bool) -> usize {
        let Some(entries) = self.entries.as_ref() else {
            return 0;
        };
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        let doomed: Vec<Key> = entries
            .iter()
            .filter(|(_, e)| e.origin.as_ref().is_some_and(&gone))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            entries.pop(key);
        }
        doomed.len()
    }

    /// The cached answer to a question whose embedding is within the near-duplicate threshold, in
    /// the same language.
    pub fn get_near(
        &self,
        generation: &str,
        mode: AnswerMode,
        language: Language,
        vector: &[f32],
        alive: &dyn Fn(&SessionId) -> bool,
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
        let servable = self.servable(entries.peek(&best.1)?, alive);
        if !servable {
            entries.pop(&best.1);
            return None;
        }
        entries.get(&best.1).map(|e| e.answer.clone())
    }

    pub fn put(&self, generation: &str, mode: AnswerMode, new: NewEntry<'_>) {
        let Some(entries) = self.entries.as_ref() else {
            return;
        };
        let mut answer = new.answer.clone();
        answer.cached = false;
        answer.usage = None;
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.put(
            Self::key(generation, mode, new.question),
            Entry {
                answer,
                language: new.language,
                vector: new.vector,
                origin: new.origin,
                stored: Instant::now(),
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

    fn entry<'a>(
        question: &'a str,
        language: Language,
        vector: Option<Vec<f32>>,
        answer: &'a Answer,
    ) -> NewEntry<'a> {
        NewEntry {
            question,
            language,
            vector,
            answer,
            origin: None,
        }
    }

    #[test]
    fn same_question_same_generation_hits_and_size_is_bounded() {
        let cache = AnswerCache::new(CacheConfig {
            capacity: 2,
            near_duplicate: None,
            max_age: None,
        });
        cache.put(
            "g1",
            AnswerMode::Verified,
            entry(
                "How much is a transfer?",
                Language::En,
                None,
                &answer("0.5%"),
            ),
        );
        assert_eq!(
            cache
                .get(
                    "g1",
                    AnswerMode::Verified,
                    "  how much is a TRANSFER ",
                    &|_| true
                )
                .map(|a| a.text),
            Some("0.5%".into())
        );
        assert!(
            cache
                .get(
                    "g2",
                    AnswerMode::Verified,
                    "How much is a transfer?",
                    &|_| true
                )
                .is_none(),
            "new generation"
        );
        assert!(
            cache
                .get(
                    "g1",
                    AnswerMode::Extract,
                    "How much is a transfer?",
                    &|_| true
                )
                .is_none(),
            "other mode"
        );
        assert!(cache
            .get("g1", AnswerMode::Verified, "How much is a card?", &|_| true)
            .is_none());
        cache.put(
            "g1",
            AnswerMode::Verified,
            entry("b", Language::En, None, &answer("b")),
        );
        cache.put(
            "g1",
            AnswerMode::Verified,
            entry("c", Language::En, None, &answer("c")),
        );
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .get(
                    "g1",
                    AnswerMode::Verified,
                    "How much is a transfer?",
                    &|_| true
                )
                .is_none(),
            "evicted"
        );
    }

    #[test]
    fn near_duplicates_need_the_threshold_and_the_same_language() {
        let cache = AnswerCache::new(CacheConfig {
            capacity: 8,
            near_duplicate: Some(0.95),
            max_age: None,
        });
        cache.put(
            "g",
            AnswerMode::Verified,
            entry("q", Language::En, Some(vec![1.0, 0.0]), &answer("a")),
        );
        let close = [0.99f32, (1.0f32 - 0.99 * 0.99).sqrt()];
        assert!(cache
            .get_near("g", AnswerMode::Verified, Language::En, &close, &|_| true)
            .is_some());
        assert!(cache
            .get_near("g", AnswerMode::Verified, Language::Ru, &close, &|_| true)
            .is_none());
        assert!(cache
            .get_near(
                "g",
                AnswerMode::Verified,
                Language::En,
                &[0.9, 0.436],
                &|_| true
            )
            .is_none());
        let off = AnswerCache::new(CacheConfig {
            capacity: 0,
            near_duplicate: None,
            max_age: None,
        });
        off.put(
            "g",
            AnswerMode::Verified,
            entry("q", Language::En, None, &answer("a")),
        );
        assert!(off.get("g", AnswerMode::Verified, "q", &|_| true).is_none());
    }

    #[test]
    fn an_entry_goes_with_its_conversation_and_its_age() {
        let cache = AnswerCache::new(CacheConfig {
            capacity: 8,
            near_duplicate: None,
            max_age: None,
        });
        let a = answer("a");
        let origin = SessionId::parse("s-1").unwrap();
        cache.put(
            "g",
            AnswerMode::Verified,
            NewEntry {
                origin: Some(origin.clone()),
                ..entry("q", Language::En, None, &a)
            },
        );
        cache.put(
            "g",
            AnswerMode::Verified,
            entry("stateless", Language::En, None, &a),
        );
        assert!(cache
            .get("g", AnswerMode::Verified, "q", &|_| true)
            .is_some());
        // Its conversation is gone (erased elsewhere): dropped, not served.
        assert!(cache
            .get("g", AnswerMode::Verified, "q", &|_| false)
            .is_none());
        assert_eq!(cache.len(), 1);
        cache.put(
            "g",
            AnswerMode::Verified,
            NewEntry {
                origin: Some(origin.clone()),
                ..entry("q", Language::En, None, &a)
            },
        );
        assert_eq!(cache.forget(|s| *s == origin), 1);
        assert_eq!(cache.forget(|s| *s == origin), 0);
        assert!(cache
            .get("g", AnswerMode::Verified, "stateless", &|_| true)
            .is_some());

        let aged = AnswerCache::new(CacheConfig {
            capacity: 8,
            near_duplicate: None,
            max_age: Some(std::time::Duration::ZERO),
        });
        aged.put(
            "g",
            AnswerMode::Verified,
            entry("q", Language::En, None, &a),
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(aged
            .get("g", AnswerMode::Verified, "q", &|_| true)
            .is_none());
    }
}
