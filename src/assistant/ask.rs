//! The one entry point for answering a customer turn, whatever door it came through (REST JSON and
//! SSE, the chat page, Bitrix24, the CLI, and the OpenAI-compatible and MCP doors): validate the
//! question, admit it (or refuse it at once), read the conversation, retrieve, decide fallback /
//! extractive / generate, stream the checked text, store both turns, count the answer in the metrics
//! and write the answer log. Doors are thin adapters: they turn their protocol into an [`Ask`], and
//! [`AnswerEvent`]s and [`AnswerError`]s back into their protocol, in one place each.
//!
//! Modelled on text-embeddings-inference's `Infer`: one facade every handler calls, which owns
//! admission and records the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;

use super::checks::{StreamingCheck, Verification};
use super::{
    Answer, AnswerKind, AnswerMode, Assistant, Language, Plan, Prepared, RagError, Source, WhenBusy,
};
use crate::engine::{EngineError, FinishReason, GenerateRequest, GenerationEvent, Timings, Usage};
use crate::logsafe;
use crate::memory::{MemoryError, SessionId, SessionInfo, SessionOwner, Speaker, Turn};

mod turn;

use turn::{recv_until, Turning};

/// Longest question, in characters (after trimming).
pub const MAX_QUESTION_CHARS: usize = 1000;

/// Which door a question came through: a label of the answer metrics and the answer log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// `POST /api/v1/query` (JSON or SSE) and the chat page.
    Rest,
    Bitrix24,
    /// `novapay ask`.
    Cli,
    /// The OpenAI-compatible API.
    OpenAi,
    Mcp,
    /// Evaluations and benchmarks.
    Eval,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Rest => "rest",
            Door::Bitrix24 => "bitrix24",
            Door::Cli => "cli",
            Door::OpenAi => "openai",
            Door::Mcp => "mcp",
            Door::Eval => "eval",
        }
    }
}

/// Who is asking, for the session ownership rules: the key that created a session (and, when both
/// name one, the same `user_id`) may use it; an administrator may also read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The caller's key fingerprint (`anonymous` when the server has no keys).
    pub owner: String,
    /// The integrator's end-user id, when given.
    pub user_id: Option<String>,
    pub admin: bool,
}

impl Access {
    /// Whether this caller may use the session (`read_only`: an administrator may read any).
    /// Internal channels' sessions (`bitrix24:...`) are no caller's.
    pub fn may_use(&self, info: &SessionInfo, read_only: bool) -> bool {
        if info.id.is_internal() {
            return false;
        }
        let same_key = info.owner.as_deref() == Some(self.owner.as_str());
        let same_user = match (info.user_id.as_deref(), self.user_id.as_deref()) {
            (Some(stored), Some(given)) => stored == given,
            _ => true,
        };
        (same_key && same_user) || (read_only && self.admin)
    }

    fn owner(&self) -> SessionOwner {
        SessionOwner {
            owner: Some(self.owner.clone()),
            user_id: self.user_id.clone(),
        }
    }
}

/// A turn of the conversation as a stateless caller sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastTurn {
    pub role: Speaker,
    pub content: String,
}

/// Where the conversation's earlier turns come from, and where this turn is stored.
#[derive(Debug, Clone)]
pub enum Conversation {
    /// A new stored session owned by the caller; created only when its first answer is recorded, so
    /// a question that fails leaves nothing behind.
    New(Access),
    /// A stored session the caller names; [`AnswerError::UnknownSession`] unless `access` may use it.
    Continue { id: SessionId, access: Access },
    /// A session the door itself is trusted with (a Bitrix24 dialog, the CLI's `--session`): read
    /// and appended to without ownership checks, created on first use.
    Trusted(SessionId),
    /// The caller sends the earlier turns (OpenAI-compatible clients send the whole conversation);
    /// nothing is read from or written to memory.
    Stateless(Vec<PastTurn>),
}

/// One question to answer.
#[derive(Debug, Clone)]
pub struct Ask {
    pub question: String,
    pub conversation: Conversation,
    pub door: Door,
    /// What to do when the generation queue is full.
    pub when_busy: WhenBusy,
    /// Send the extractive answer at once as [`AnswerEvent::Preview`] while the model reads the
    /// prompt (generated answers only); the checked answer follows as usual.
    pub preview: bool,
    /// How long the generation may take (from its submission, queue wait included); `None`: the
    /// configured [`super::RagConfig::generation_timeout`].
    pub timeout: Option<Duration>,
    /// Generate at most this many tokens (only below the configured cap: an OpenAI client's
    /// `max_tokens`); `None`: the configured cap.
    pub max_new_tokens: Option<usize>,
}

impl Ask {
    pub fn new(question: impl Into<String>, conversation: Conversation, door: Door) -> Self {
        Self {
            question: question.into(),
            conversation,
            door,
            when_busy: WhenBusy::Error,
            preview: false,
            timeout: None,
            max_new_tokens: None,
        }
    }

    pub fn when_busy(mut self, when_busy: WhenBusy) -> Self {
        self.when_busy = when_busy;
        self
    }
}

/// What an answer stream delivers, in order: at most one `Preview`, `Text` pieces (sentences as they
/// are generated and pass the check), at most one `Replaced`, then exactly one `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum AnswerEvent {
    /// The extractive answer, sent while the model still reads the prompt ([`Ask::preview`]).
    Preview(String),
    /// More of the answer (checked sentences). Concatenated, the pieces are what was shown.
    Text(String),
    /// Nothing of substance survived the figure check: this extractive answer replaces what was
    /// shown. It is also the final answer's text.
    Replaced(String),
    /// The served answer; the turn is stored and counted.
    Done(Box<Answered>),
    /// The turn failed; nothing was stored.
    Error(AnswerError),
}

/// A served answer with what the doors report about it.
#[derive(Debug, Clone, Serialize)]
pub struct Answered {
    pub query_id: String,
    /// The stored session (`None` for a stateless conversation).
    pub session: Option<SessionId>,
    /// The question as answered (trimmed).
    pub question: String,
    pub answer: Answer,
    pub answer_mode: AnswerMode,
    pub language: Language,
    /// Generated answers: the worker's timings.
    pub timings: Option<Timings>,
    /// Why the generation stopped (the model ended its turn, or the token cap or the context
    /// window cut it); `None` when no generated text was served (fallback, quote, cached answer).
    pub finish_reason: Option<FinishReason>,
    pub elapsed_ms: u64,
}

impl Answered {
    pub fn usage(&self) -> Option<&Usage> {
        self.answer.usage.as_ref()
    }

    /// How the answer came about, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        if self.answer.cached {
            "cached"
        } else {
            self.answer.kind.as_str()
        }
    }
}

/// Why a turn got no answer, said as what the caller should do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnswerError {
    /// Empty or too long: the caller fixes the question.
    #[error("{0}")]
    InvalidQuestion(String),
    /// A session id that cannot be one.
    #[error("invalid session id: {0}")]
    InvalidSession(String),
    /// A user id that cannot be one (the message states the rule).
    #[error("invalid user id: {0}")]
    InvalidUserId(String),
    /// The session does not exist or is not the caller's (the two are not told apart).
    #[error("session {0} does not exist; omit the session to start one")]
    UnknownSession(SessionId),
    /// Too many questions in progress: retry after [`AnswerError::retry_after`].
    #[error("the generation queue is full ({queue_depth} waiting); retry shortly")]
    Overloaded { queue_depth: usize },
    /// Conversation storage cannot be reached: retry shortly.
    #[error("conversation storage is unavailable; retry shortly")]
    StorageUnavailable(String),
    /// The model worker is gone: retry later.
    #[error("the model is unavailable")]
    ModelUnavailable(String),
    /// The prompt does not fit the model's context (a shorter conversation helps).
    #[error("{0}")]
    ContextOverflow(String),
    /// The generation took longer than allowed; it was cancelled.
    #[error("generation took longer than {} s", .0.as_secs())]
    Timeout(Duration),
    /// A defect or an unexpected failure; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AnswerError {
    /// A short, stable code for error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AnswerError::InvalidQuestion(_) => "invalid_query",
            AnswerError::InvalidSession(_) => "invalid_session_id",
            AnswerError::InvalidUserId(_) => "invalid_user_id",
            AnswerError::UnknownSession(_) => "not_found",
            AnswerError::Overloaded { .. } => "overloaded",
            AnswerError::StorageUnavailable(_) => "storage_unavailable",
            AnswerError::ModelUnavailable(_) => "unavailable",
            AnswerError::ContextOverflow(_) => "context_overflow",
            AnswerError::Timeout(_) => "timeout",
            AnswerError::Internal(_) => "internal",
        }
    }

    /// When asking again may succeed (`None`: not without changing the request).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AnswerError::Overloaded { .. } => Some(Duration::from_secs(2)),
            AnswerError::StorageUnavailable(_) | AnswerError::ModelUnavailable(_) => {
                Some(Duration::from_secs(5))
            }
            _ => None,
        }
    }

    /// The caller's request was wrong (not the server's state).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            AnswerError::InvalidQuestion(_)
                | AnswerError::InvalidSession(_)
                | AnswerError::InvalidUserId(_)
                | AnswerError::UnknownSession(_)
                | AnswerError::ContextOverflow(_)
        )
    }
}

impl From<EngineError> for AnswerError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded { queue_depth } => AnswerError::Overloaded { queue_depth },
            EngineError::Unavailable(m) => AnswerError::ModelUnavailable(m),
            EngineError::ContextOverflow { .. } | EngineError::OverBudget { .. } => {
                AnswerError::ContextOverflow(e.to_string())
            }
            EngineError::InvalidInput(m) => AnswerError::InvalidQuestion(m),
            other => AnswerError::Internal(other.to_string()),
        }
    }
}

impl From<MemoryError> for AnswerError {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::InvalidSessionId(m) => AnswerError::InvalidSession(m),
            MemoryError::InvalidUserId(m) => AnswerError::InvalidUserId(m),
            MemoryError::Unavailable(m) => AnswerError::StorageUnavailable(m),
        }
    }
}

impl From<RagError> for AnswerError {
    fn from(e: RagError) -> Self {
        match e {
            RagError::Engine(e) => e.into(),
            RagError::Memory(e) => e.into(),
            RagError::InvalidQuestion(m) => AnswerError::InvalidQuestion(m),
            RagError::Retrieval(m) => AnswerError::Internal(m),
        }
    }
}

/// The question, trimmed, or why it cannot be asked. The one set of rules for every door.
pub fn validate_question(question: &str) -> Result<String, AnswerError> {
    let q = question.trim();
    if q.is_empty() {
        return Err(AnswerError::InvalidQuestion("the question is empty".into()));
    }
    if q.chars().count() > MAX_QUESTION_CHARS {
        return Err(AnswerError::InvalidQuestion(format!(
            "the question is longer than {MAX_QUESTION_CHARS} characters"
        )));
    }
    Ok(q.to_string())
}

/// The events of one answer. Dropping it (the client went away) cancels the generation; the turn is
/// then not stored.
pub struct AnswerStream {
    rx: mpsc::UnboundedReceiver<AnswerEvent>,
    /// Known before the first event.
    pub query_id: String,
    pub session: Option<SessionId>,
    pub question: String,
    /// The sources the answer draws on (empty for the fallback).
    pub sources: Vec<Source>,
}

impl AnswerStream {
    /// The next event; `None` after `Done` or `Error`.
    pub async fn next(&mut self) -> Option<AnswerEvent> {
        self.rx.recv().await
    }

    /// Waits for the end, dropping the intermediate events.
    pub async fn collect(mut self) -> Result<Answered, AnswerError> {
        while let Some(event) = self.next().await {
            match event {
                AnswerEvent::Done(answered) => return Ok(*answered),
                AnswerEvent::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err(AnswerError::Internal(
            "the answer stopped without an end".into(),
        ))
    }

    /// As a `futures` stream (for SSE responses).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = AnswerEvent> + Send + 'static {
        futures_util::stream::unfold(
            self.rx,
            |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
        )
    }
}

/// What retrieval alone found (the MCP search tool, `--retrieve-only`).
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// Best first, at most the requested number.
    pub sources: Vec<Source>,
    /// The whole text of each source's chunk (in the order of `sources`): a search caller reads
    /// the excerpts themselves, not a preview. Chunks are bounded by the chunk size.
    pub texts: Vec<String>,
    /// Whether the answerability gate would let the excerpts answer the question.
    pub answerable: bool,
    pub language: Language,
}

/// The conversation of one turn, resolved.
struct Resolved {
    session: Option<SessionId>,
    /// The session's `user_id` (a channel's user), for the erase check before storing.
    user_id: Option<String>,
    /// Create this session (with this owner) when the answer is recorded.
    create: Option<SessionOwner>,
    history: Vec<Turn>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnswerError> + Send + 'static,
) -> Result<T, AnswerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AnswerError::Internal(format!("a blocking task failed: {e}")))?
}

impl Assistant {
    /// Answers one turn as a stream of events. Errors before the first event (invalid question,
    /// unknown session, full queue, storage down) come back here, so a door can still choose its
    /// status code; later ones arrive as [`AnswerEvent::Error`]. Runs on a tokio runtime.
    pub async fn ask(self: &Arc<Self>, ask: Ask) -> Result<AnswerStream, AnswerError> {
        let llm = self.llm.clone();
        self.ask_submitting(ask, Box::new(move |request| llm.submit(request)))
            .await
    }

    /// [`Assistant::ask`] with the generation's events taken from `submit` instead of the model
    /// worker: the one path from the token stream to the served text, for the LLM worker and for
    /// tests that script a generation ([`super::testing`]).
    pub(super) async fn ask_submitting(
        self: &Arc<Self>,
        ask: Ask,
        submit: Submit,
    ) -> Result<AnswerStream, AnswerError> {
        let door = ask.door;
        let result = self.clone().start(ask, submit).await;
        if let Err(e) = &result {
            self.count_failure(door, e);
        }
        result
    }

    /// Answers one turn and waits for the end.
    pub async fn ask_collected(self: &Arc<Self>, ask: Ask) -> Result<Answered, AnswerError> {
        self.ask(ask).await?.collect().await
    }

    /// Answers one turn for callers without an async runtime (CLI, Bitrix24, evaluations):
    /// `on_event` sees every event as it comes. Must not be called from async code (it blocks).
    pub fn ask_blocking(
        self: &Arc<Self>,
        ask: Ask,
        on_event: &mut dyn FnMut(&AnswerEvent),
    ) -> Result<Answered, AnswerError> {
        let llm = self.llm.clone();
        self.ask_blocking_submitting(ask, Box::new(move |request| llm.submit(request)), on_event)
    }

    /// [`Assistant::ask_blocking`] over [`Assistant::ask_submitting`].
    pub(super) fn ask_blocking_submitting(
        self: &Arc<Self>,
        ask: Ask,
        submit: Submit,
        on_event: &mut dyn FnMut(&AnswerEvent),
    ) -> Result<Answered, AnswerError> {
        let run = async {
            let mut stream = self.ask_submitting(ask, submit).await?;
            while let Some(event) = stream.next().await {
                on_event(&event);
                match event {
                    AnswerEvent::Done(answered) => return Ok(*answered),
                    AnswerEvent::Error(e) => return Err(e),
                    _ => {}
                }
            }
            Err(AnswerError::Internal(
                "the answer stopped without an end".into(),
            ))
        };
        match tokio::runtime::Handle::try_current() {
            // A blocking thread of a runtime (spawn_blocking): use it.
            Ok(handle) => handle.block_on(run),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AnswerError::Internal(format!("cannot start a runtime: {e}")))?
                .block_on(run),
        }
    }

    /// Retrieval only: the excerpts the knowledge base has for `question` (with `history` read as
    /// a stateless caller sends it), at most `top_k`. No generation, nothing stored.
    pub async fn search(
        self: &Arc<Self>,
        question: &str,
        history: Vec<PastTurn>,
        top_k: usize,
        door: Door,
    ) -> Result<Found, AnswerError> {
        let result = async {
            let question = validate_question(question)?;
            let assistant = self.clone();
            let found = blocking(move || {
                let history = past_turns(history);
                let retrieval = assistant.retrieve(&question, &history)?;
                let hits = retrieval.hits.iter().take(top_k);
                Ok(Found {
                    sources: hits.clone().map(Source::from_hit).collect(),
                    texts: hits.map(|h| h.chunk.text.clone()).collect(),
                    answerable: retrieval.relevant,
                    language: retrieval.language,
                })
            })
            .await?;
            self.metrics
                .searches
                .with_label_values(&[door.as_str()])
                .inc();
            Ok(found)
        }
        .await;
        if let Err(e) = &result {
            self.count_failure(door, e);
        }
        result
    }

    fn count_failure(&self, door: Door, e: &AnswerError) {
        self.metrics
            .failures
            .with_label_values(&[door.as_str(), e.code()])
            .inc();
        if let AnswerError::Internal(detail) = e {
            tracing::error!(door = door.as_str(), error = %logsafe::user_text(detail), "answer failed");
        }
    }

    async fn start(
        self: Arc<Self>,
        ask: Ask,
        mut submit: Submit,
    ) -> Result<AnswerStream, AnswerError> {
        let started = Instant::now();
        let question = validate_question(&ask.question)?;
        if let Conversation::Stateless(turns) = &ask.conversation {
            if let Some(t) = turns
                .iter()
                .find(|t| t.content.chars().count() > 8 * MAX_QUESTION_CHARS)
            {
                return Err(AnswerError::InvalidQuestion(format!(
                    "an earlier {} message is longer than {} characters",
                    match t.role {
                        Speaker::User => "user",
                        Speaker::Assistant => "assistant",
                    },
                    8 * MAX_QUESTION_CHARS
                )));
            }
        }
        // Admission before any work: a refused question creates no session and costs no retrieval.
        // A caller that accepts a quote when the model is busy takes one of a few places for
        // extractive answers (embedding only, no generation); when those are taken too, refused.
        let (permit, busy) = match self.admission.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) if ask.when_busy == WhenBusy::Extract => {
                match self.busy_extract.clone().try_acquire_owned() {
                    Ok(p) => (p, true),
                    Err(_) => return Err(self.overloaded()),
                }
            }
            Err(_) => return Err(self.overloaded()),
        };
        let query_id = uuid::Uuid::new_v4().to_string();
        let resolved = {
            let assistant = self.clone();
            let conversation = ask.conversation.clone();
            blocking(move || assistant.resolve(conversation)).await?
        };
        let session_label = resolved
            .session
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        if self.config.log_questions {
            tracing::info!(%query_id, session_id = %session_label, door = ask.door.as_str(), query = %logsafe::user_text(&question), "question");
        } else {
            tracing::debug!(%query_id, session_id = %session_label, door = ask.door.as_str(), query = %logsafe::user_text(&question), "question");
        }
        let mut prepared = {
            let assistant = self.clone();
            let history = resolved.history.clone();
            let q = question.clone();
            blocking(move || Ok(assistant.prepare_with_history(&q, &history)?)).await?
        };
        // The judge (opt-in) settles an unsure question before anything is sent.
        if let Plan::Judge { .. } = prepared.plan {
            let plan = std::mem::replace(&mut prepared.plan, Plan::HandOff(String::new()));
            let Plan::Judge {
                judge,
                answer,
                suggest,
            } = plan
            else {
                unreachable!("matched above")
            };
            let timeout = ask.timeout.or(self.config.generation_timeout);
            prepared.plan = if !busy && self.judge(&mut submit, judge, timeout, &query_id).await {
                Plan::Generate(answer)
            } else {
                prepared.sources.clear();
                prepared.excerpts.clear();
                Plan::Suggest(suggest.0, suggest.1)
            };
        }
        self.metrics
            .observe("retrieval", started.elapsed().as_secs_f64());
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = AnswerStream {
            rx,
            query_id: query_id.clone(),
            session: resolved.session.clone(),
            question: question.clone(),
            sources: prepared.sources.clone(),
        };
        let plan = std::mem::replace(&mut prepared.plan, Plan::HandOff(String::new()));
        let turn = Turning {
            assistant: self.clone(),
            door: ask.door,
            query_id,
            resolved,
            prepared: Arc::new(prepared),
            started,
            _permit: permit,
            tx,
        };
        match plan {
            Plan::HandOff(text) => {
                tracing::info!(query_id = %turn.query_id, "handed off: nothing relevant");
                let answer = turn.answer_with(text, |a| a.kind = AnswerKind::HandedOff);
                tokio::spawn(turn.finish_now(answer));
            }
            Plan::Suggest(text, suggestions) => {
                tracing::info!(query_id = %turn.query_id, "suggested {} sections", suggestions.len());
                let answer = turn.answer_with(text, |a| {
                    a.kind = AnswerKind::Suggested;
                    a.sources = Vec::new();
                    a.suggestions = suggestions;
                });
                tokio::spawn(turn.finish_now(answer));
            }
            Plan::Judge { .. } => {
                return Err(AnswerError::Internal(
                    "the judge's verdict was not taken".into(),
                ))
            }
            Plan::Extract(text) => {
                let answer = turn.answer_with(text, |a| a.kind = AnswerKind::Quoted);
                tokio::spawn(turn.finish_now(answer));
            }
            Plan::Cached(answer) => {
                tokio::spawn(turn.finish_now(*answer));
            }
            Plan::Generate(mut request) => {
                if let Some(cap) = ask.max_new_tokens {
                    request.params.max_new_tokens = request.params.max_new_tokens.min(cap);
                }
                let submitted = if busy {
                    Err(EngineError::Overloaded {
                        queue_depth: self.llm.info().queue_depth,
                    })
                } else {
                    submit(request)
                };
                match submitted {
                    Ok(rx) => {
                        let timeout = ask.timeout.or(self.config.generation_timeout);
                        tokio::spawn(turn.generate(rx, ask.preview, timeout));
                    }
                    Err(EngineError::Overloaded { .. }) if ask.when_busy == WhenBusy::Extract => {
                        tracing::info!(query_id = %turn.query_id, "queue full: extractive answer");
                        let (assistant, prepared) = (self.clone(), turn.prepared.clone());
                        let text =
                            blocking(move || Ok(assistant.extractive_answer(&prepared)?)).await?;
                        let answer = turn.answer_with(text, |a| a.kind = AnswerKind::Quoted);
                        // Not cached: the next asker should get the full answer.
                        tokio::spawn(turn.finish_uncached(answer));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(stream)
    }

    /// The model's own judgement of an unsure question: its short reply to the judge prompt says yes
    /// or not. A full queue, an error or a timeout count as not (the sections are offered).
    async fn judge(
        &self,
        submit: &mut Submit,
        request: GenerateRequest,
        timeout: Option<Duration>,
        query_id: &str,
    ) -> bool {
        let mut rx = match submit(request) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::info!(%query_id, error = %e, "judge not asked");
                return false;
            }
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut reply = String::new();
        loop {
            match recv_until(&mut rx, deadline).await {
                Ok(Some(GenerationEvent::Token(t))) => reply.push_str(&t),
                Ok(Some(GenerationEvent::Done(_))) => break,
                Ok(Some(GenerationEvent::Error(e))) => {
                    tracing::info!(%query_id, error = %e, "judge failed");
                    return false;
                }
                Ok(None) | Err(_) => return false,
            }
        }
        let yes = super::judged_yes(&reply);
        self.metrics
            .judge_verdicts
            .with_label_values(&[if yes { "yes" } else { "no" }])
            .inc();
        tracing::info!(%query_id, yes, "the model judged whether the excerpts answer");
        yes
    }

    fn overloaded(&self) -> AnswerError {
        AnswerError::Overloaded {
            queue_depth: self.llm.info().queue_depth,
        }
    }

    /// The session and its earlier turns. Blocking.
    fn resolve(&self, conversation: Conversation) -> Result<Resolved, AnswerError> {
        let turns = self.config.history_turns;
        Ok(match conversation {
            Conversation::New(access) => Resolved {
                session: Some(SessionId::new_random()),
                user_id: access.user_id.clone(),
                create: Some(access.owner()),
                history: Vec::new(),
            },
            Conversation::Continue { id, access } => match self.memory.session(&id)? {
                Some(info) if access.may_use(&info, false) => Resolved {
                    history: self.memory.history(&id, turns)?,
                    session: Some(id),
                    user_id: info.user_id,
                    create: None,
                },
                _ => return Err(AnswerError::UnknownSession(id)),
            },
            Conversation::Trusted(id) => Resolved {
                history: self.memory.history(&id, turns)?,
                user_id: self.memory.session(&id)?.and_then(|info| info.user_id),
                session: Some(id),
                create: None,
            },
            Conversation::Stateless(past) => {
                let mut history = past_turns(past);
                let skip = history.len().saturating_sub(turns);
                history.drain(..skip);
                Resolved {
                    session: None,
                    user_id: None,
                    create: None,
                    history,
                }
            }
        })
    }
}

/// Queues a generation and returns its events: the model worker's [`crate::engine::LlmHandle::submit`],
/// or a scripted generation in tests.
pub(super) type Submit = Box<
    dyn FnMut(GenerateRequest) -> Result<mpsc::UnboundedReceiver<GenerationEvent>, EngineError>
        + Send,
>;

fn past_turns(past: Vec<PastTurn>) -> Vec<Turn> {
    past.into_iter()
        .map(|t| Turn {
            role: t.role,
            content: t.content,
            sources: Vec::new(),
            created_at_ms: 0,
        })
        .collect()
}

/// The session routes' operations, under the same ownership rules as answering.
impl Assistant {
    /// A new empty session owned by `access`. Blocking.
    pub fn create_session(&self, access: &Access) -> Result<SessionInfo, AnswerError> {
        Ok(self
            .memory
            .create_session(&SessionId::new_random(), &access.owner())?)
    }

    /// The session and its turns (oldest first), when `access` may read it. Blocking.
    pub fn session_turns(
        &self,
        id: &SessionId,
        access: &Access,
        max_turns: usize,
    ) -> Result<(SessionInfo, Vec<Turn>), AnswerError> {
        let info = self
            .memory
            .session(id)?
            .filter(|info| access.may_use(info, true))
            .ok_or_else(|| AnswerError::UnknownSession(id.clone()))?;
        let turns = self.memory.history(id, max_turns)?;
        Ok((info, turns))
    }

    /// Deletes the session when `access` may use it (with the answers cached from it). Blocking.
    pub fn delete_session(&self, id: &SessionId, access: &Access) -> Result<(), AnswerError> {
        match self.memory.session(id)? {
            Some(info) if access.may_use(&info, false) => {
                self.memory.delete_session(id)?;
                self.cache.forget(|origin| origin == id);
                Ok(())
            }
            _ => Err(AnswerError::UnknownSession(id.clone())),
        }
    }
}

/// A session id as a caller names it.
pub fn parse_session_id(s: &str) -> Result<SessionId, AnswerError> {
    Ok(SessionId::parse(s)?)
}
