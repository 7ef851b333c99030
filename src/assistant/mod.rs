//! Grounded answering: retrieval (with the conversation's recent turns), the answerability gate and
//! its fallback, the prompt under a token budget, generation, the figure check, extractive answers,
//! the answer cache and the sources. No HTTP here; calls that block (embedding, search, SQLite) are
//! plain functions that async callers run on blocking threads.

pub mod answer;
pub mod answerability;
pub mod ask;
pub mod cache;
pub mod checks;
pub mod documents;
pub mod embeddings;
pub mod extract;
pub mod feedback;
pub mod library;
pub mod metrics;
pub mod prompt;
pub mod report;
#[doc(hidden)]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

use answerability::{GateConfig, GateSignals};
use cache::{AnswerCache, CacheConfig};
use checks::{FigureCheck, Verification};
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
pub use metrics::AnswerMetrics;

use crate::embed::Embedder;
use crate::engine::{
    ChatMessage, EngineError, GenerateRequest, LlmHandle, Prompt, Role, SamplingParams,
};
use crate::index::{Hit, KnowledgeBase};
use crate::memory::{now_ms, ConversationStore, MemoryError};
use prompt::{grounded_messages, Excerpt};

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

/// What retrieval found for a question.
#[derive(Debug, Clone, Serialize)]
pub struct Retrieval {
    pub hits: Vec<Hit>,
    /// Best cosine similarity of the question alone, and of the question with recent turns.
    pub best_similarity: f32,
    pub best_similarity_with_history: f32,
    /// The answerability signals of the question alone, and of the question with recent turns.
    pub gate: GateSignals,
    pub gate_with_history: GateSignals,
    pub relevant: bool,
    /// What the gate decided: answer, suggest the closest sections, or hand off.
    pub decision: Decision,
    pub language: Language,
    /// The question's embedding (for the answer cache's near-duplicate lookup).
    #[serde(skip)]
    pub question_vector: Vec<f32>,
    /// A short question joined to the previous user turns (a follow-up such as "and for
    /// international ones?"): what extractive answers are scored against.
    pub follow_up_query: Option<String>,
}

/// Sections offered at most when no answer can be trusted.
pub const MAX_SUGGESTIONS: usize = 3;

/// The answer plan for one question.
pub enum Plan {
    /// Nothing relevant (or a question about the assistant's instructions): this hand-off text,
    /// without calling the LLM.
    HandOff(String),
    /// Retrieval found sections but no answer can be trusted: this text offering them, without
    /// calling the LLM.
    Suggest(String, Vec<Suggestion>),
    Generate(GenerateRequest),
    /// The gate was unsure (between its thresholds) and the model's own judgement is on: `judge`
    /// asks the model whether the excerpts answer the question (the answer's own prompt with one
    /// line more, so the answer reuses its prefix); "yes" runs `answer`, anything else offers
    /// `suggest`.
    Judge {
        judge: GenerateRequest,
        answer: GenerateRequest,
        suggest: (String, Vec<Suggestion>),
    },
    /// Extract mode: sentences quoted from the excerpts, without calling the LLM.
    Extract(String),
    /// The same question was answered before, for the same knowledge base.
    Cached(Box<Answer>),
}

pub struct Prepared {
    pub question: String,
    pub retrieval: Retrieval,
    pub sources: Vec<Source>,
    /// The excerpts shown to the model, in prompt order (instruction-like sentences left out).
    pub excerpts: Vec<String>,
    pub plan: Plan,
    /// Whether the finished answer may be cached (no history, not a degraded answer).
    pub cacheable: bool,
    /// The index generation read before retrieval: the cache key of this answer. An answer that
    /// raced a swap is filed under the older generation, where no new question looks it up.
    pub generation: String,
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

/// How a finished generation becomes the served answer.
pub struct Finished {
    pub text: String,
    pub verification: Option<Verification>,
    /// True when the extractive answer replaced a generation with nothing of substance left.
    pub extractive: bool,
    /// A generated sentence claimed something about a word of the question no article uses ("Yes,
    /// you can buy bitcoin in the app"): the closest sections are offered instead.
    pub suggestions: Option<Vec<Suggestion>>,
}

impl Assistant {
    pub fn new(
        kb: Arc<KnowledgeBase>,
        embedder: Arc<Embedder>,
        llm: LlmHandle,
        memory: Arc<dyn ConversationStore>,
        config: RagConfig,
    ) -> Self {
        let depth = llm.info().queue_depth;
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
        &self.metrics
    }

    pub fn llm(&self) -> &LlmHandle {
        &self.llm
    }

    pub fn memory(&self) -> &Arc<dyn ConversationStore> {
        &self.memory
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

    /// See [`retrieve_with`]. Blocking.
    pub fn retrieve(&self, question: &str, history: &[Turn]) -> Result<Retrieval, RagError> {
        let kb = self.knowledge_base();
        retrieve_with(
            &kb,
            &self.embedder,
            &self.extractor,
            &self.config,
            question,
            history,
        )
    }

    fn fallback_text(&self, language: Language) -> String {
        match language {
            Language::Ru => self.config.fallback_ru.clone(),
            Language::En => self.config.fallback_en.clone(),
        }
    }

    /// History, retrieval and the prompt (or the fallback, the extractive or the cached answer) for a
    /// question. Blocking.
    pub fn prepare(&self, session: &SessionId, question: &str) -> Result<Prepared, RagError> {
        let history = self.memory.history(session, self.config.history_turns)?;
        self.prepare_with_history(question, &history)
    }

    /// [`Assistant::prepare`] with the earlier turns given. Blocking.
    pub fn prepare_with_history(
        &self,
        question: &str,
        history: &[Turn],
    ) -> Result<Prepared, RagError> {
        let question =
            validate_question(question).map_err(|e| RagError::InvalidQuestion(e.to_string()))?;
        let question = question.as_str();
        let mode = self.config.answer_mode;
        let generation = self.kb.load().generation().to_string();
        let cacheable = history.is_empty() && self.cache.enabled();
        if cacheable {
            if let Some(answer) = self.cache.get(&generation, mode, question) {
                return Ok(self.cached_plan(question, answer));
            }
        }
        let retrieval = self.retrieve(question, history)?;
        if cacheable && self.cache.wants_vectors() {
            if let Some(answer) = self.cache.get_near(
                &generation,
                mode,
                retrieval.language,
                &retrieval.question_vector,
            ) {
                let mut p = self.cached_plan(question, answer);
                p.retrieval = retrieval;
                return Ok(p);
            }
        }
        let probe = checks::injection::probes_instructions(question);
        if probe {
            tracing::info!("question asks for the assistant's instructions: fallback");
        }
        if probe || retrieval.decision != Decision::Answer {
            let suggestions = if probe || retrieval.decision == Decision::HandOff {
                Vec::new()
            } else {
                suggestions_of(&retrieval.hits)
            };
            if suggestions.is_empty() {
                return Ok(Prepared {
                    question: question.to_string(),
                    plan: Plan::HandOff(self.fallback_text(retrieval.language)),
                    retrieval,
                    sources: Vec::new(),
                    excerpts: Vec::new(),
                    cacheable,
                    generation,
                });
            }
            let suggest = (
                suggestion_text(retrieval.language, &suggestions),
                suggestions,
            );
            if probe || !self.judges(&retrieval) {
                return Ok(Prepared {
                    question: question.to_string(),
                    retrieval,
                    sources: Vec::new(),
                    excerpts: Vec::new(),
                    plan: Plan::Suggest(suggest.0, suggest.1),
                    cacheable,
                    generation,
                });
            }
            let (excerpts, sources) = self.excerpts_of(&retrieval);
            let answer = self.answer_request(question, &excerpts, history);
            let judge = judge_request(&answer, retrieval.language);
            return Ok(Prepared {
                question: question.to_string(),
                retrieval,
                sources,
                excerpts: excerpts.into_iter().map(|e| e.text).collect(),
                plan: Plan::Judge {
                    judge,
                    answer,
                    suggest,
                },
                cacheable,
                generation,
            });
        }
        let (excerpts, sources) = self.excerpts_of(&retrieval);
        if mode == AnswerMode::Extract {
            let text = self.extractive_text(question, sources.len(), &retrieval)?;
            return Ok(Prepared {
                question: question.to_string(),
                retrieval,
                sources,
                excerpts: excerpts.into_iter().map(|e| e.text).collect(),
                plan: Plan::Extract(text),
                cacheable,
                generation,
            });
        }
        let request = self.answer_request(question, &excerpts, history);
        Ok(Prepared {
            question: question.to_string(),
            retrieval,
            sources,
            excerpts: excerpts.into_iter().map(|e| e.text).collect(),
            plan: Plan::Generate(request),
            cacheable,
            generation,
        })
    }

    /// Whether the model is asked to judge a question the gate would offer sections for: the judge
    /// is on, the answer mode generates, and the gate was unsure (its score between the two
    /// thresholds, no number or name of the question unknown to the knowledge base).
    fn judges(&self, retrieval: &Retrieval) -> bool {
        if !self.config.gate.judge || self.config.answer_mode == AnswerMode::Extract {
            return false;
        }
        let model = answerability::GateModel::builtin();
        [&retrieval.gate, &retrieval.gate_with_history]
            .into_iter()
            .any(|g| {
                g.unknown_identifiers.is_empty() && g.score.is_some_and(|s| s >= model.suggest_at)
            })
    }

    /// The top excerpts that fit the context budget (instruction-like sentences left out), with the
    /// sources they are cited as.
    fn excerpts_of(&self, retrieval: &Retrieval) -> (Vec<Excerpt>, Vec<Source>) {
        let tokenizer = self.llm.tokenizer();
        let count = |t: &str| {
            tokenizer
                .encode(t, false)
                .map(|ids| ids.len())
                .unwrap_or(usize::MAX)
        };
        let mut excerpts = Vec::new();
        let mut sources = Vec::new();
        let mut used = 0;
        for hit in retrieval.hits.iter().take(self.config.top_k) {
            let (body, dropped) = checks::injection::without_instructions(&hit.chunk.text);
            if dropped > 0 {
                tracing::warn!(source = %hit.chunk.source, sentences = dropped, "instruction-like sentences left out of an excerpt");
            }
            let text = if hit.chunk.heading.is_empty() {
                body
            } else {
                format!("{}\n{}", hit.chunk.heading, body)
            };
            let cost = count(&text);
            if used + cost > self.config.context_tokens && !excerpts.is_empty() {
                break;
            }
            used += cost;
            excerpts.push(Excerpt {
                source: hit.chunk.source.clone(),
                text,
            });
            sources.push(Source::from_hit(hit));
        }
        (excerpts, sources)
    }

    /// The grounded prompt: the excerpts, the most recent turns that fit the history budget, the
    /// question.
    fn answer_request(
        &self,
        question: &str,
        excerpts: &[Excerpt],
        history: &[Turn],
    ) -> GenerateRequest {
        let tokenizer = self.llm.tokenizer();
        let count = |t: &str| {
            tokenizer
                .encode(t, false)
                .map(|ids| ids.len())
                .unwrap_or(usize::MAX)
        };
        // Most recent turns first, within the budget, then back in order.
        let mut kept = Vec::new();
        let mut budget = self.config.history_tokens;
        for turn in history.iter().rev() {
            let cost = count(&turn.content);
            if cost > budget {
                break;
            }
            budget -= cost;
            let role = match turn.role {
                Speaker::User => Role::User,
                Speaker::Assistant => Role::Assistant,
            };
            kept.push(ChatMessage::new(role, turn.content.clone()));
        }
        kept.reverse();
        GenerateRequest {
            prompt: Prompt::Chat(grounded_messages(question, excerpts, &kept)),
            params: SamplingParams {
                stop: answer_stops(),
                ..self.config.sampling.clone()
            },
        }
    }

    fn cached_plan(&self, question: &str, mut answer: Answer) -> Prepared {
        self.metrics.cache_hits.inc();
        answer.cached = true;
        Prepared {
            question: question.to_string(),
            retrieval: Retrieval {
                hits: Vec::new(),
                best_similarity: 0.0,
                best_similarity_with_history: 0.0,
                gate: GateSignals::default(),
                gate_with_history: GateSignals::default(),
                relevant: answer.is_answered(),
                decision: match answer.outcome() {
                    Outcome::Answered => Decision::Answer,
                    Outcome::Suggested => Decision::Suggest,
                    Outcome::HandedOff => Decision::HandOff,
                },
                language: detect_language(question),
                question_vector: Vec::new(),
                follow_up_query: None,
            },
            sources: answer.sources.clone(),
            excerpts: Vec::new(),
            plan: Plan::Cached(Box::new(answer)),
            cacheable: false,
            generation: String::new(),
        }
    }

    /// The extractive answer over the top excerpts, or the fallback when no sentence qualifies.
    fn extractive_text(
        &self,
        question: &str,
        excerpts: usize,
        retrieval: &Retrieval,
    ) -> Result<String, RagError> {
        let top = &retrieval.hits[..retrieval.hits.len().min(excerpts)];
        let query = retrieval.follow_up_query.as_deref().unwrap_or(question);
        let extracted = self
            .extractor
            .answer(&self.embedder, self.kb.load().term_stats(), query, top)
            .map_err(|e| RagError::Retrieval(e.to_string()))?;
        self.metrics.extractive_answers.inc();
        if extracted.quotes.is_empty() {
            return Ok(self.fallback_text(retrieval.language));
        }
        Ok(extracted.text)
    }

    /// The extractive answer for a prepared question (the generation queue was full, or nothing of
    /// the generated answer survived the figure check). Blocking.
    pub fn extractive_answer(&self, prepared: &Prepared) -> Result<String, RagError> {
        self.extractive_text(
            &prepared.question,
            prepared.sources.len(),
            &prepared.retrieval,
        )
    }

    /// What a generated sentence is checked against: the excerpts, the question and the support
    /// contacts of the fallback texts. Figures are checked in `verified` mode only; an echo of the
    /// system prompt is dropped in every mode.
    pub fn sentence_check(&self, prepared: &Prepared) -> FigureCheck {
        FigureCheck::new(
            &prepared.excerpts,
            &[
                prepared.question.as_str(),
                self.config.fallback_en.as_str(),
                self.config.fallback_ru.as_str(),
            ],
        )
        .figures(self.config.answer_mode == AnswerMode::Verified)
    }

    /// Turns a finished generation into the served answer: sentences with unsupported figures (in
    /// `verified` mode) and echoes of the system prompt go; when nothing of substance is left, the
    /// extractive answer replaces it. Blocking.
    pub fn finish(&self, prepared: &Prepared, generated: &str) -> Result<Finished, RagError> {
        let check = self.sentence_check(prepared);
        let (text, verification) = check.filter(generated);
        self.metrics
            .sentences_removed
            .inc_by(verification.removed as u64);
        self.conclude(prepared, text, verification)
    }

    /// The end of a streamed, already checked answer: `shown` is what was released.
    pub fn conclude(
        &self,
        prepared: &Prepared,
        shown: String,
        verification: Verification,
    ) -> Result<Finished, RagError> {
        let verified = self.config.answer_mode == AnswerMode::Verified;
        if let Some(word) = claims_unknown_word(&prepared.retrieval, &shown) {
            tracing::info!(
                "the generated answer speaks of {word:?}, which no article uses: suggested"
            );
            let suggestions = suggestions_of(&prepared.retrieval.hits);
            if !suggestions.is_empty() {
                return Ok(Finished {
                    text: suggestion_text(prepared.retrieval.language, &suggestions),
                    verification: verified.then_some(verification),
                    extractive: false,
                    suggestions: Some(suggestions),
                });
            }
        }
        // Something was cut, and what is left says nothing, or no longer states any figure (the
        // model tried to give one and it was wrong): the quotes from the excerpts answer instead.
        let emptied = !checks::has_substance(&shown)
            || (verified && checks::figures::extract(&shown).is_empty());
        if verification.removed > 0 && emptied {
            return Ok(Finished {
                text: self.extractive_answer(prepared)?,
                verification: verified.then_some(verification),
                extractive: true,
                suggestions: None,
            });
        }
        Ok(Finished {
            text: shown.trim().to_string(),
            verification: verified.then_some(verification),
            extractive: false,
            suggestions: None,
        })
    }

    /// Counts sentences a streaming check removed (the non-streaming path counts in `finish`).
    pub fn count_removed(&self, removed: usize) {
        self.metrics.sentences_removed.inc_by(removed as u64);
    }

    /// Keeps a finished answer for later identical questions (when `prepared` allows it).
    pub fn remember(&self, prepared: &Prepared, answer: &Answer) {
        if !prepared.cacheable || answer.cached {
            return;
        }
        let vector = self
            .cache
            .wants_vectors()
            .then(|| prepared.retrieval.question_vector.clone());
        self.cache.put(
            &prepared.generation,
            self.config.answer_mode,
            &prepared.question,
            prepared.retrieval.language,
            vector,
            answer,
        );
    }

    /// Stores the question and the answer in the session's history. Blocking.
    pub fn record(
        &self,
        session: &SessionId,
        question: &str,
        answer: &str,
        sources: &[Source],
    ) -> Result<(), RagError> {
        let now = now_ms();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::User,
                content: question.to_string(),
                sources: Vec::new(),
                created_at_ms: now,
            },
        )?;
        let mut cited: Vec<String> = sources.iter().map(|s| s.source.clone()).collect();
        cited.dedup();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::Assistant,
                content: answer.to_string(),
                sources: cited,
                created_at_ms: now,
            },
        )?;
        Ok(())
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

/// Searches for `question`, and also for it joined to the previous user turns so that a follow-up
/// ("and for international ones?") finds the topic it refers to. The fallback decision uses the
/// question's own answerability signals, or, for a short follow-up, those with history; when the
/// lexical rules refuse, the meaning of the top excerpts' sentences may rescue the question
/// (`extractor` keeps their embeddings). Blocking.
pub fn retrieve_with(
    kb: &KnowledgeBase,
    embedder: &Embedder,
    extractor: &Extractor,
    config: &RagConfig,
    question: &str,
    history: &[Turn],
) -> Result<Retrieval, RagError> {
    let language = detect_language(question);
    let previous: Vec<&str> = history
        .iter()
        .rev()
        .filter(|t| t.role == Speaker::User)
        .take(2)
        .map(|t| t.content.as_str())
        .collect();
    let mut queries = vec![question.to_string()];
    if !previous.is_empty() {
        let mut joined: Vec<&str> = previous.into_iter().rev().collect();
        joined.push(question);
        queries.push(joined.join("\n"));
    }
    let vectors = embedder
        .embed_queries(&queries)
        .map_err(|e| RagError::Retrieval(e.to_string()))?;
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    let found = kb.search(&vectors, &texts, config.candidates);
    let mut hits = found.hits;
    promote_list_winners(&mut hits, config.top_k);
    let best_similarity = found.best_similarity.first().copied().unwrap_or(0.0);
    let best_similarity_with_history = found
        .best_similarity
        .get(1)
        .copied()
        .unwrap_or(best_similarity);
    let top = &hits[..hits.len().min(config.top_k)];
    let stats = kb.term_stats();
    let mut gate =
        answerability::signals(stats, question, best_similarity, top, &hits, &config.gate);
    let mut gate_with_history = match queries.get(1) {
        Some(q) => answerability::signals(
            stats,
            q,
            best_similarity_with_history,
            top,
            &hits,
            &config.gate,
        ),
        None => gate.clone(),
    };
    let words = question.split_whitespace().count();
    let follow_up = words <= config.follow_up_max_words && queries.len() > 1;
    let relevant = |gate: &GateSignals, with_history: &GateSignals| {
        gate.answerable(&config.gate) || (follow_up && with_history.answerable(&config.gate))
    };
    // The embedder is asked only when the lexical rules refuse: an accepted question costs nothing more.
    let rescue = &config.gate.meaning;
    if !relevant(&gate, &gate_with_history)
        && rescue.min_sentence_similarity.is_some()
        && rescue.reads(language)
    {
        let measure = |text: &str, vector: &[f32], lexical: &GateSignals| {
            answerability::meaning::signals(embedder, extractor, text, vector, top, lexical)
                .map_err(|e| RagError::Retrieval(e.to_string()))
        };
        gate.meaning = Some(measure(question, &vectors[0], &gate)?);
        if follow_up {
            gate_with_history.meaning =
                Some(measure(&queries[1], &vectors[1], &gate_with_history)?);
        }
    }
    let decision = if config.gate.weighing {
        let model = answerability::GateModel::builtin();
        gate.score = Some(model.score(&gate));
        gate_with_history.score = Some(model.score(&gate_with_history));
        let decide = |g: &GateSignals| {
            let found = g.found_anything() && g.similarity >= config.gate.min_similarity;
            let hard_rule = !g.unknown_identifiers.is_empty();
            // The word rules still answer what they accept (no off-topic question of the held-out
            // sets passed them); the model answers beyond them, and suggests below its threshold.
            let d = if g.lexically_answerable(&config.gate) && !hard_rule {
                Decision::Answer
            } else {
                model.decide(g.score.unwrap_or(0.0), hard_rule, found)
            };
            // The meaning rescue (opt-in) still answers what the words refused.
            if d != Decision::Answer && g.rescued(&config.gate) && !hard_rule {
                Decision::Answer
            } else {
                d
            }
        };
        let alone = decide(&gate);
        if follow_up {
            alone.max(decide(&gate_with_history))
        } else {
            alone
        }
    } else if relevant(&gate, &gate_with_history) {
        Decision::Answer
    } else if gate.found_anything() {
        Decision::Suggest
    } else {
        Decision::HandOff
    };
    let relevant = decision == Decision::Answer;
    // A short question after earlier turns is read with them when quoting the excerpts ("and for
    // international ones?" asks for a fee because the turn before did).
    let follow_up_query = follow_up.then(|| queries[1].clone());
    Ok(Retrieval {
        hits,
        best_similarity,
        best_similarity_with_history,
        gate,
        gate_with_history,
        relevant,
        decision,
        language,
        question_vector: vectors.into_iter().next().unwrap_or_default(),
        follow_up_query,
    })
}

/// Makes sure the best dense hit and the best lexical hit are among the first `k`: rank fusion can
/// push a chunk that only one list found, however clearly, below chunks both lists rank moderately
/// (with an English-only embedder, a Russian question's exact lexical match is such a chunk).
fn promote_list_winners(hits: &mut Vec<Hit>, k: usize) {
    if k == 0 || hits.len() <= k {
        return;
    }
    let best = |key: fn(&Hit) -> Option<f32>| {
        hits.iter()
            .enumerate()
            .filter_map(|(i, h)| key(h).map(|s| (i, s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    let must: Vec<usize> = [best(|h| h.lexical), best(|h| h.dense)]
        .into_iter()
        .flatten()
        .collect();
    let mut top: Vec<usize> = (0..k).collect();
    for &w in &must {
        if !top.contains(&w) {
            if let Some(pos) = top.iter().rposition(|i| !must.contains(i)) {
                top.remove(pos);
                top.push(w);
            }
        }
    }
    top.sort_unstable();
    let mut taken: Vec<Option<Hit>> = std::mem::take(hits).into_iter().map(Some).collect();
    for &i in &top {
        if let Some(h) = taken[i].take() {
            hits.push(h);
        }
    }
    hits.extend(taken.into_iter().flatten());
}

/// A question word no chunk of the knowledge base uses, when the generated `text` uses it too: the
/// model then says something the articles do not.
fn claims_unknown_word(retrieval: &Retrieval, text: &str) -> Option<String> {
    let unknown: Vec<&str> = retrieval
        .gate
        .words
        .iter()
        .filter(|w| w.document_frequency == 0 && !w.covered)
        .map(|w| w.term.as_str())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let said = crate::text::content_terms(
        text,
        crate::index::bm25::Bm25Config::KNOWLEDGE_BASE.languages,
    );
    unknown
        .into_iter()
        .find(|t| said.contains(*t))
        .map(str::to_string)
}

/// The closest distinct sections of the ranked hits, at most [`MAX_SUGGESTIONS`], from as many
/// articles as there are suggestions: the best section of each article first (three sections of one
/// wrong article hide the right one; the customer who opens the right article finds its other
/// sections), then further sections of the same articles when fewer articles were found. Listed in
/// rank order.
fn suggestions_of(hits: &[Hit]) -> Vec<Suggestion> {
    let mut picked: Vec<usize> = Vec::new();
    let section = |i: usize| (&hits[i].chunk.source, &hits[i].chunk.heading);
    for (i, hit) in hits.iter().enumerate() {
        if picked.len() == MAX_SUGGESTIONS {
            break;
        }
        if !picked
            .iter()
            .any(|&p| hits[p].chunk.source == hit.chunk.source)
        {
            picked.push(i);
        }
    }
    for i in 0..hits.len() {
        if picked.len() == MAX_SUGGESTIONS {
            break;
        }
        if !picked.iter().any(|&p| section(p) == section(i)) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked
        .into_iter()
        .enumerate()
        .map(|(n, i)| Suggestion::from_hit(n + 1, &hits[i]))
        .collect()
}

/// The judge's question: the answer's own prompt with one line more in the last user turn (so the
/// answer that may follow reuses the prompt's cached prefix), a greedy reply of a few tokens.
fn judge_request(answer: &GenerateRequest, language: Language) -> GenerateRequest {
    let ask = match language {
        Language::Ru => "Есть ли ответ на этот вопрос в приведённых выше фрагментах? Ответьте только «да» или «нет».",
        Language::En => "Do the excerpts above contain the answer to this question? Reply with yes or no only.",
    };
    let prompt = match &answer.prompt {
        Prompt::Chat(messages) => {
            let mut messages = messages.clone();
            if let Some(last) = messages.last_mut() {
                last.content = format!("{}\n\n{ask}", last.content);
            }
            Prompt::Chat(messages)
        }
        Prompt::Tokens(t) => Prompt::Tokens(t.clone()),
    };
    GenerateRequest {
        prompt,
        params: SamplingParams {
            temperature: 0.0,
            max_new_tokens: 3,
            stop: vec!["\n".into()],
            ..SamplingParams::default()
        },
    }
}

/// Whether the judge's reply says yes: its first word is "yes" or "да", in any case, whatever
/// punctuation follows.
pub fn judged_yes(reply: &str) -> bool {
    let first = reply
        .trim_start()
        .split(|c: char| !c.is_alphabetic())
        .next()
        .unwrap_or("")
        .to_lowercase();
    first == "yes" || first == "да"
}

/// Where a small model starts echoing its prompt (a new excerpt header, the prompt's own labels)
/// the answer is over.
fn answer_stops() -> Vec<String> {
    let mut stops: Vec<String> = (1..=9).map(|i| format!("\n[{i}] (")).collect();
    stops.extend(["\nExcerpts:", "\nQuestion:", "\n\n\n"].map(String::from));
    stops
}

#[cfg(test)]
mod judge_tests {
    use super::*;

    #[test]
    fn the_judges_reply_is_yes_only_when_its_first_word_says_so() {
        for yes in ["Yes", "yes.", " Yes, they do", "Да", "да, есть", "YES!"] {
            assert!(judged_yes(yes), "{yes:?}");
        }
        for not in [
            "No",
            "нет.",
            "Yesterday",
            "I think yes",
            "",
            "Maybe",
            "Дальше",
        ] {
            assert!(!judged_yes(not), "{not:?}");
        }
    }

    #[test]
    fn the_judge_asks_in_the_answers_own_prompt_with_one_line_more() {
        let answer = GenerateRequest {
            prompt: Prompt::Chat(vec![
                ChatMessage::new(Role::System, "rules and excerpts"),
                ChatMessage::new(Role::User, "earlier"),
                ChatMessage::new(Role::Assistant, "reply"),
                ChatMessage::new(Role::User, "How much is a transfer?"),
            ]),
            params: SamplingParams {
                max_new_tokens: 256,
                ..SamplingParams::default()
            },
        };
        for language in [Language::En, Language::Ru] {
            let judge = judge_request(&answer, language);
            let (Prompt::Chat(a), Prompt::Chat(j)) = (&answer.prompt, &judge.prompt) else {
                panic!("chat prompts");
            };
            assert_eq!(a.len(), j.len());
            for (x, y) in a.iter().zip(j).take(a.len() - 1) {
                assert_eq!((x.role, &x.content), (y.role, &y.content));
            }
            let last = &j.last().unwrap().content;
            assert!(last.starts_with("How much is a transfer?\n\n"), "{last}");
            assert!(last.len() > "How much is a transfer?".len() + 20);
            assert_eq!(judge.params.temperature, 0.0);
            assert!(judge.params.max_new_tokens <= 4);
        }
    }
}
