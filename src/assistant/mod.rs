//! Grounded answering: retrieval (with the conversation's recent turns), the answerability gate and
//! its fallback, the prompt under a token budget, generation, the figure check, extractive answers,
//! the answer cache and the sources. No HTTP here; calls that block (embedding, search, SQLite) are
//! plain functions that async callers run on blocking threads.

pub mod answer;
pub mod answerability;
pub mod ask;
pub mod cache;
pub mod checks;
mod conclude;
pub mod customers;
pub mod documents;
pub mod embeddings;
pub mod extract;
pub mod feedback;
pub mod library;
pub mod metrics;
mod plan;
pub mod prompt;
pub mod report;
mod retrieval;
#[doc(hidden)]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

use answerability::GateConfig;
use cache::{AnswerCache, CacheConfig};
use extract::Extractor;

/// Why a served answer's generation stopped ([`Answered::finish_reason`]).
pub use crate::engine::FinishReason;
/// Conversation types the doors name (re-exported so that they need not reach into `memory`).
pub use crate::memory::{SessionId, SessionInfo, Speaker, Turn};
pub use crate::text::{detect_language, Language};
pub use answer::{snippet, suggestion_text, Answer, AnswerKind, Outcome, Source, Suggestion};
pub use answerability::Decision;
pub use ask::{
    parse_session_id, validate_question, Access, AnswerError, AnswerEvent, AnswerStream, Answered,
    Ask, Conversation, Door, Found, PastTurn, MAX_QUESTION_CHARS,
};
pub use conclude::Finished;
pub use metrics::AnswerMetrics;
pub use plan::{judged_yes, Plan, Prepared, MAX_SUGGESTIONS};
pub use retrieval::{retrieve_with, Retrieval};

use crate::embed::Embedder;
use crate::engine::{EngineError, LlmHandle, SamplingParams};
use crate::index::KnowledgeBase;
use crate::memory::{ConversationStore, MemoryError};

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("retrieval failed: {0}")]
    Retrieval(String),
    #[error("invalid question: {0}")]
    InvalidQuestion(String),
}

/// How an answer is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// The LLM's answer as generated.
    Generate,
    /// Sentences quoted from the top excerpts; no LLM call.
    Extract,
    /// The LLM's answer without the sentences whose figures the sources do not state; the extractive
    /// answer when nothing of substance is left.
    #[default]
    Verified,
}

impl std::str::FromStr for AnswerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generate" => Ok(Self::Generate),
            "extract" => Ok(Self::Extract),
            "verified" => Ok(Self::Verified),
            other => Err(format!(
                "unknown answer mode {other:?}: use generate, extract or verified"
            )),
        }
    }
}

impl std::fmt::Display for AnswerMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Generate => "generate",
            Self::Extract => "extract",
            Self::Verified => "verified",
        })
    }
}

#[derive(Debug, Clone)]
pub struct RagConfig {
    /// Excerpts shown to the model at most.
    pub top_k: usize,
    /// Depth of each ranked list before fusion.
    pub candidates: usize,
    /// The answerability gate; below it the fallback answers.
    pub gate: GateConfig,
    pub answer_mode: AnswerMode,
    pub cache: CacheConfig,
    /// Token budgets (LLM tokens) for the excerpts and for earlier turns.
    pub context_tokens: usize,
    pub history_tokens: usize,
    /// Turns read from memory at most (before the token budget).
    pub history_turns: usize,
    /// A follow-up with at most this many words may borrow relevance from the previous turns.
    pub follow_up_max_words: usize,
    pub fallback_en: String,
    pub fallback_ru: String,
    pub sampling: SamplingParams,
    /// A generation that runs longer is cancelled ([`AnswerError::Timeout`]); `None`: no limit (the
    /// CLI, evaluations). A door sets its own per question ([`Ask::timeout`]).
    pub generation_timeout: Option<Duration>,
    /// Log the customer's question text at info level (masked card numbers); debug otherwise.
    pub log_questions: bool,
}

pub const FALLBACK_EN: &str = "I could not find the answer in the NovaPay knowledge base, and I \
don't want to guess. Please contact NovaPay support at support@novapay.com (Monday–Friday, \
9:00–18:00 GMT+3): an operator will help you.";
pub const FALLBACK_RU: &str = "Я не нашёл ответа в базе знаний NovaPay и не хочу гадать. Пожалуйста, \
напишите в поддержку NovaPay: support@novapay.com (понедельник–пятница, 9:00–18:00 GMT+3) — оператор \
вам поможет.";

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            top_k: 4,
            candidates: 20,
            gate: GateConfig::default(),
            answer_mode: AnswerMode::default(),
            cache: CacheConfig::default(),
            context_tokens: 1200,
            history_tokens: 600,
            history_turns: 8,
            follow_up_max_words: 12,
            fallback_en: FALLBACK_EN.into(),
            fallback_ru: FALLBACK_RU.into(),
            sampling: SamplingParams::default(),
            generation_timeout: None,
            log_questions: false,
        }
    }
}

pub struct Assistant {
    /// Replaced whole when a new index generation is published; each question reads it once.
    kb: ArcSwap<KnowledgeBase>,
    embedder: Arc<Embedder>,
    llm: LlmHandle,
    memory: Arc<dyn ConversationStore>,
    extractor: Extractor,
    cache: AnswerCache,
    metrics: AnswerMetrics,
    /// Answers in progress at most: the generation that runs plus the queue. A question beyond it is
    /// refused at once, before any work (no session, no embedding, no retrieval).
    admission: Arc<Semaphore>,
    /// Extractive answers given while the queue is full (`WhenBusy::Extract`): each costs an
    /// embedding of the question and of the top excerpts' sentences, so they are bounded too.
    busy_extract: Arc<Semaphore>,
    /// Customers erased lately: their answers in flight are not stored.
    erasures: customers::Erasures,
    pub config: RagConfig,
}

/// Extractive answers in progress at most while the generation queue is full.
pub const BUSY_EXTRACT_MAX: usize = 4;

/// What `/health` and the like report about the assistant.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub chunks: usize,
    pub files: usize,
    pub generation: String,
    pub queue_waiting: usize,
    pub queue_depth: usize,
}

impl Assistant {
    pub fn new(
        kb: Arc<KnowledgeBase>,
        embedder: Arc<Embedder>,
        llm: LlmHandle,
        memory: Arc<dyn ConversationStore>,
        config: RagConfig,
    ) -> Self {
        // As many questions as can wait in the queue plus those the model answers together.
        let depth = llm.info().queue_depth + llm.info().max_batch.max(1) - 1;
        Self {
            kb: ArcSwap::new(kb),
            embedder,
            llm,
            memory,
            extractor: Extractor::default(),
            cache: AnswerCache::new(config.cache),
            metrics: AnswerMetrics::new(),
            admission: Arc::new(Semaphore::new(depth + 1)),
            busy_extract: Arc::new(Semaphore::new(BUSY_EXTRACT_MAX)),
            erasures: customers::Erasures::default(),
            config,
        }
    }

    /// The index and queue, for health reports.
    pub fn status(&self) -> Status {
        let kb = self.kb.load();
        Status {
            chunks: kb.len(),
            files: kb.manifest.files.len(),
            generation: kb.manifest.generation.clone(),
            queue_waiting: self.llm.queued(),
            queue_depth: self.llm.info().queue_depth,
        }
    }

    /// The answer metrics (every door's answers), with the queue gauge brought up to date.
    pub fn metrics(&self) -> &AnswerMetrics {
        self.metrics.queue_depth.set(self.llm.queued() as i64);
        self.metrics.record_worker(self.llm.stats());
        &self.metrics
    }

    pub fn llm(&self) -> &LlmHandle {
        &self.llm
    }

    pub fn memory(&self) -> &Arc<dyn ConversationStore> {
        &self.memory
    }

    /// The embedder questions and passages are read with.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The knowledge base new questions are answered from.
    pub fn knowledge_base(&self) -> Arc<KnowledgeBase> {
        self.kb.load_full()
    }

    /// Answers new questions from `kb` (a newly published generation). Questions already past
    /// retrieval finish with the excerpts they have; the old generation is released (and may be
    /// deleted by the next `novapay index`) when the last of them lets go. Returns the old one.
    pub fn replace_knowledge_base(&self, kb: Arc<KnowledgeBase>) -> Arc<KnowledgeBase> {
        self.kb.swap(kb)
    }

    pub fn answer_mode(&self) -> AnswerMode {
        self.config.answer_mode
    }
}

/// What a blocking caller wants when the generation queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenBusy {
    /// The `Overloaded` error (the caller retries or reports it).
    #[default]
    Error,
    /// The extractive answer at once.
    Extract,
}

impl Assistant {
    /// The whole flow for evaluations, benchmarks and tests, over the one entry point
    /// ([`Assistant::ask_blocking`], door `eval`): the session is trusted (created on first use).
    /// `on_text` receives the answer as it is released.
    pub fn answer_blocking(
        self: &Arc<Self>,
        session: &SessionId,
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Answer, AnswerError> {
        self.answer_blocking_with(session, question, WhenBusy::Error, on_text)
    }

    pub fn answer_blocking_with(
        self: &Arc<Self>,
        session: &SessionId,
        question: &str,
        when_busy: WhenBusy,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Answer, AnswerError> {
        let ask = Ask::new(question, Conversation::Trusted(session.clone()), Door::Eval)
            .when_busy(when_busy);
        let answered = self.ask_blocking(ask, &mut |event| match event {
            AnswerEvent::Text(t) => on_text(t),
            AnswerEvent::Replaced(t) => on_text(t),
            _ => {}
        })?;
        Ok(answered.answer)
    }
}
