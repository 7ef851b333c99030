//! `/api/v1/query` and the session routes, keeping the Flask prototype's JSON contract.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, OptionalJsonBody};
use super::Shared;
use crate::engine::{EngineError, GenerationEvent, GenerationSummary};
use crate::logsafe;
use crate::memory::{SessionId, SessionInfo, SessionOwner, Speaker};
use crate::rag::verify::{StreamingCheck, Verification};
use crate::rag::{
    Answer, Assistant, Finished, Plan, Prepared, RagError, Source, MAX_QUESTION_CHARS,
};

/// Longest `user_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Largest `metadata`, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A `user_id` as given, checked: 1-128 characters, no control characters.
fn checked_user_id(user_id: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(u) = user_id else { return Ok(None) };
    if u.is_empty() || u.chars().count() > MAX_USER_ID_CHARS || u.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            format!(
                "`user_id` must be 1-{MAX_USER_ID_CHARS} characters without control characters"
            ),
        ));
    }
    Ok(Some(u.to_string()))
}

/// Whether `caller` may use the session: the key that created it (and, when both name one, the same
/// `user_id`); an administrator may also read it. Everything else is reported as "does not exist",
/// so that a caller cannot learn which ids are taken.
fn may_use(info: &SessionInfo, caller: &Caller, user_id: Option<&str>, read_only: bool) -> bool {
    if info.id.is_internal() {
        return false;
    }
    let same_key = info.owner.as_deref() == Some(caller.owner.as_str());
    let same_user = match (info.user_id.as_deref(), user_id) {
        (Some(stored), Some(given)) => stored == given,
        _ => true,
    };
    (same_key && same_user) || (read_only && caller.admin)
}

fn no_such_session(id: &SessionId) -> ApiError {
    ApiError::not_found(format!("session {id} does not exist"))
}

#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    pub query: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Accepted as the prototype's clients send it; only logged at debug level.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// What to do when the generation queue is full: "error" (429, the default) or "extract" (an
    /// extractive answer at once, marked `extractive`).
    #[serde(default)]
    pub when_busy: Option<WhenBusyField>,
    /// Streams only: send the extractive answer at once as an `extract` event, while the model
    /// still reads the prompt; the checked answer follows as usual.
    #[serde(default)]
    pub preview: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenBusyField {
    Error,
    Extract,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceDocument {
    pub source: String,
    pub title: String,
    pub snippet: String,
    pub score: f32,
}

impl From<&Source> for SourceDocument {
    fn from(s: &Source) -> Self {
        Self {
            source: s.source.clone(),
            title: if s.heading.is_empty() {
                s.title.clone()
            } else {
                s.heading.clone()
            },
            snippet: s.snippet.clone(),
            score: s.score,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct QueryResponse {
    pub query_id: String,
    pub session_id: String,
    pub query: String,
    pub response: String,
    pub source_documents: Vec<SourceDocument>,
    pub timestamp: String,
    pub processing_time_ms: u64,
    /// True when the knowledge base had no answer and the fallback (with the support contacts) replied.
    pub fallback: bool,
    /// True when the answer quotes the knowledge base verbatim instead of a generated text (extract
    /// mode, a full queue with `when_busy: "extract"`, or a generation the figure check emptied).
    pub extractive: bool,
    /// True when the answer was reused from an earlier identical question.
    pub cached: bool,
    /// Sentences checked and removed by the figure check (`verified` mode, generated answers).
    pub verification: Option<Verification>,
    /// generate, extract or verified.
    pub answer_mode: String,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn wants_stream(req: &QueryRequest, headers: &HeaderMap) -> bool {
    req.stream.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
}

pub async fn query(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let question = req.query.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "`query` is empty"));
    }
    if req.query.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`query` is longer than {MAX_QUESTION_CHARS} characters"),
        ));
    }
    let user_id = checked_user_id(req.user_id.as_deref())?;
    if let Some(m) = &req.metadata {
        if m.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!("`metadata` is larger than {MAX_METADATA_BYTES} bytes as JSON"),
            ));
        }
    }
    let requested = req
        .session_id
        .as_deref()
        .map(SessionId::parse)
        .transpose()?;
    let services = state.services()?;
    // Admission before any work: a refused question creates no session and costs no retrieval.
    // A caller that accepts a quote when the model is busy (the chat page) takes one of a few places
    // for extractive answers (embedding only, no generation); when those are taken too, 429.
    let (permit, busy) = match state.admit() {
        Ok(p) => (Some(p), false),
        Err(_) if req.when_busy == Some(WhenBusyField::Extract) => {
            (Some(state.admit_busy_extract()?), true)
        }
        Err(e) => return Err(e),
    };
    let assistant = services.assistant.clone();
    let stream = wants_stream(&req, &headers);

    // An existing session must be the caller's; a new one is created only when its first answer is
    // recorded, so a question that fails leaves nothing behind.
    let (session, new_session) = match requested {
        Some(id) => {
            let assistant = assistant.clone();
            let (caller, user_id) = (caller.clone(), user_id.clone());
            let id = blocking(move || match assistant.memory().session(&id)? {
                Some(info) if may_use(&info, &caller, user_id.as_deref(), false) => Ok(id),
                _ => Err(ApiError::not_found(format!(
                    "session {id} does not exist; omit session_id to start one"
                ))),
            })
            .await?;
            (id, None)
        }
        None => (
            SessionId::new_random(),
            Some(SessionOwner {
                owner: Some(caller.owner.clone()),
                user_id: user_id.clone(),
            }),
        ),
    };
    let query_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("query", %query_id, session_id = %session);
    let _guard = span.enter();
    if state.config.log_queries {
        tracing::info!(query = %logsafe::user_text(&question), "question");
    } else {
        tracing::debug!(query = %logsafe::user_text(&question), "question");
    }
    tracing::debug!(
        metadata = %req.metadata.as_ref().map(logsafe::json_value).unwrap_or_default(),
        user_id = %user_id.as_deref().map(logsafe::user_text).unwrap_or_default(),
        "request context"
    );
    drop(_guard);

    let mut prepared = {
        let assistant = assistant.clone();
        let session = session.clone();
        let question = question.clone();
        blocking(move || {
            assistant
                .prepare(&session, &question)
                .map_err(ApiError::from)
        })
        .await?
    };
    state
        .metrics
        .observe("retrieval", started.elapsed().as_secs_f64());
    let sources: Vec<SourceDocument> = prepared.sources.iter().map(SourceDocument::from).collect();
    let plan = std::mem::replace(&mut prepared.plan, Plan::Fallback(String::new()));
    let ctx = Answering {
        state: state.clone(),
        assistant,
        query_id,
        session,
        new_session,
        _permit: permit,
        question,
        sources: prepared.sources.clone(),
        documents: sources,
        started,
        prepared: Arc::new(prepared),
    };

    let served = match plan {
        Plan::Fallback(text) => {
            tracing::info!(query_id = %ctx.query_id, session_id = %ctx.session, "answered by the fallback");
            state.metrics.fallbacks.inc();
            Served {
                text,
                fallback: true,
                ..Served::default()
            }
        }
        Plan::Extract(text) => Served {
            text,
            extractive: true,
            ..Served::default()
        },
        Plan::Cached(answer) => Served {
            text: answer.text.clone(),
            fallback: answer.fallback,
            extractive: answer.extractive,
            cached: true,
            verification: answer.verification.clone(),
        },
        Plan::Generate(request) => {
            let submitted = if busy {
                Err(RagError::Engine(EngineError::Overloaded { queue_depth: 0 }))
            } else {
                ctx.assistant.submit(request)
            };
            let rx = match submitted {
                Err(RagError::Engine(EngineError::Overloaded { .. }))
                    if req.when_busy == Some(WhenBusyField::Extract) =>
                {
                    tracing::info!(query_id = %ctx.query_id, "queue full: extractive answer");
                    let (assistant, prepared) = (ctx.assistant.clone(), ctx.prepared.clone());
                    let text = blocking(move || {
                        assistant
                            .extractive_answer(&prepared)
                            .map_err(ApiError::from)
                    })
                    .await?;
                    let served = Served {
                        text,
                        extractive: true,
                        ..Served::default()
                    };
                    ctx.record(served.text.clone()).await?;
                    return Ok(ctx.reply(served, stream));
                }
                other => other?,
            };
            if stream {
                // The quote is computed while the model processes the prompt (on the 3B model on
                // CPU that takes ~20 s; the quote well under a second).
                let preview = (req.preview == Some(true)).then(|| {
                    let (assistant, prepared) = (ctx.assistant.clone(), ctx.prepared.clone());
                    tokio::task::spawn_blocking(move || assistant.extractive_answer(&prepared))
                });
                return Ok(Sse::new(sse_stream(ctx, rx, preview))
                    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
                    .into_response());
            }
            let timeout = state.config.generation_timeout;
            let (text, summary) =
                tokio::time::timeout(timeout, collect(rx))
                    .await
                    .map_err(|_| {
                        ApiError::timeout(format!(
                            "generation took longer than {} s",
                            timeout.as_secs()
                        ))
                    })??;
            ctx.observe(&summary);
            let (assistant, prepared) = (ctx.assistant.clone(), ctx.prepared.clone());
            let finished =
                blocking(move || assistant.finish(&prepared, &text).map_err(ApiError::from))
                    .await?;
            let served = Served::from(finished);
            ctx.record(served.text.clone()).await?;
            ctx.remember(&served);
            return Ok(Json(ctx.response(&served)).into_response());
        }
    };
    ctx.record(served.text.clone()).await?;
    ctx.remember(&served);
    Ok(ctx.reply(served, stream))
}

/// What the customer is shown, and how it came about.
#[derive(Debug, Default)]
struct Served {
    text: String,
    fallback: bool,
    extractive: bool,
    cached: bool,
    verification: Option<Verification>,
}

impl From<Finished> for Served {
    fn from(f: Finished) -> Self {
        Self {
            text: f.text,
            extractive: f.extractive,
            verification: f.verification,
            ..Self::default()
        }
    }
}

/// Everything needed to finish one answer, streamed or not.
struct Answering {
    state: Shared,
    assistant: Arc<Assistant>,
    query_id: String,
    session: SessionId,
    /// Created with the first recorded answer.
    new_session: Option<SessionOwner>,
    /// The place among the answers in progress, released when the answer is done or dropped.
    _permit: Option<OwnedSemaphorePermit>,
    question: String,
    sources: Vec<Source>,
    documents: Vec<SourceDocument>,
    started: Instant,
    prepared: Arc<Prepared>,
}

impl Answering {
    async fn record(&self, answer: String) -> Result<(), ApiError> {
        let assistant = self.assistant.clone();
        let (session, question, sources, new_session) = (
            self.session.clone(),
            self.question.clone(),
            self.sources.clone(),
            self.new_session.clone(),
        );
        blocking(move || {
            if let Some(owner) = &new_session {
                assistant.memory().create_session(&session, owner)?;
            }
            assistant
                .record(&session, &question, &answer, &sources)
                .map_err(ApiError::from)
        })
        .await
    }

    /// Offers a finished answer to the answer cache (the assistant decides whether it qualifies).
    fn remember(&self, served: &Served) {
        if served.cached {
            return;
        }
        let answer = Answer {
            text: served.text.clone(),
            sources: self.sources.clone(),
            fallback: served.fallback,
            extractive: served.extractive,
            cached: false,
            verification: served.verification.clone(),
            usage: None,
        };
        self.assistant.remember(&self.prepared, &answer);
    }

    /// A complete answer as JSON, or as a stream of one token event and the final event.
    fn reply(&self, served: Served, stream: bool) -> Response {
        if stream {
            let events: Vec<Result<Event, Infallible>> = vec![
                Ok(Event::default()
                    .event("token")
                    .data(json!({ "text": served.text }).to_string())),
                Ok(self.final_event(&served, None)),
            ];
            return Sse::new(stream::iter(events)).into_response();
        }
        Json(self.response(&served)).into_response()
    }

    fn observe(&self, summary: &GenerationSummary) {
        tracing::info!(
            query_id = %self.query_id,
            session_id = %self.session,
            prompt_tokens = summary.usage.prompt_tokens,
            completion_tokens = summary.usage.completion_tokens,
            ttft_ms = summary.timings.time_to_first_token_ms as u64,
            total_ms = self.started.elapsed().as_millis() as u64,
            finish = ?summary.finish_reason,
            "answered"
        );
        let m = &self.state.metrics;
        m.tokens_generated
            .inc_by(summary.usage.completion_tokens as u64);
        m.observe(
            "time_to_first_token",
            summary.timings.time_to_first_token_ms / 1000.0,
        );
        m.observe("generation", summary.timings.generation_ms / 1000.0);
        m.observe("total", self.started.elapsed().as_secs_f64());
    }

    fn response(&self, served: &Served) -> QueryResponse {
        QueryResponse {
            query_id: self.query_id.clone(),
            session_id: self.session.to_string(),
            query: self.question.clone(),
            response: served.text.clone(),
            source_documents: self.documents.clone(),
            timestamp: now_rfc3339(),
            processing_time_ms: self.started.elapsed().as_millis() as u64,
            fallback: served.fallback,
            extractive: served.extractive,
            cached: served.cached,
            verification: served.verification.clone(),
            answer_mode: self.assistant.answer_mode().to_string(),
        }
    }

    fn final_event(&self, served: &Served, summary: Option<&GenerationSummary>) -> Event {
        let mut body = serde_json::to_value(self.response(served)).unwrap_or_default();
        if let Some(s) = summary {
            body["usage"] = json!(s.usage);
            body["timings"] = json!(s.timings);
        }
        Event::default().event("done").data(body.to_string())
    }
}

async fn collect(
    mut rx: UnboundedReceiver<GenerationEvent>,
) -> Result<(String, GenerationSummary), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenerationEvent::Token(t) => text.push_str(&t),
            GenerationEvent::Done(summary) => return Ok((text.trim().to_string(), summary)),
            GenerationEvent::Error(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("the model worker stopped mid-answer"))
}

/// Token events as sentences complete and pass the check (figures in `verified` mode), then one `done`
/// event with the served answer, the sources, the session and the timings.
/// Dropping the stream (the client went away) drops the receiver, which stops the generation.
fn sse_stream(
    ctx: Answering,
    rx: UnboundedReceiver<GenerationEvent>,
    preview: Option<tokio::task::JoinHandle<Result<String, RagError>>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let deadline = tokio::time::Instant::now() + ctx.state.config.generation_timeout;
    struct St {
        check: StreamingCheck,
        ctx: Answering,
        rx: UnboundedReceiver<GenerationEvent>,
        queue: std::collections::VecDeque<Event>,
        finished: bool,
        preview: Option<tokio::task::JoinHandle<Result<String, RagError>>>,
    }
    let token = |text: &str| {
        Event::default()
            .event("token")
            .data(json!({ "text": text }).to_string())
    };
    let init = St {
        check: StreamingCheck::new(ctx.assistant.sentence_check(&ctx.prepared)),
        ctx,
        rx,
        queue: std::collections::VecDeque::new(),
        finished: false,
        preview,
    };
    stream::unfold(init, move |mut st| async move {
        if let Some(handle) = st.preview.take() {
            if let Ok(Ok(text)) = handle.await {
                st.queue.push_back(
                    Event::default()
                        .event("extract")
                        .data(json!({ "text": text }).to_string()),
                );
            }
        }
        loop {
            if let Some(event) = st.queue.pop_front() {
                return Some((Ok(event), st));
            }
            if st.finished {
                return None;
            }
            match tokio::time::timeout_at(deadline, st.rx.recv()).await {
                Err(_) => {
                    st.finished = true;
                    let e = ApiError::timeout("generation took too long");
                    st.queue
                        .push_back(Event::default().event("error").data(e.body().to_string()));
                }
                Ok(None) => {
                    st.finished = true;
                    let e = ApiError::internal("the model worker stopped mid-answer");
                    st.queue
                        .push_back(Event::default().event("error").data(e.body().to_string()));
                }
                // A sentence is released once it is complete and checked.
                Ok(Some(GenerationEvent::Token(t))) => {
                    let shown = st.check.push(&t);
                    if !shown.is_empty() {
                        st.queue.push_back(token(&shown));
                    }
                }
                Ok(Some(GenerationEvent::Done(summary))) => {
                    st.finished = true;
                    let rest = st.check.finish();
                    if !rest.is_empty() {
                        st.queue.push_back(token(&rest));
                    }
                    st.ctx.observe(&summary);
                    st.ctx
                        .assistant
                        .count_removed(st.check.verification.removed);
                    let (assistant, prepared) = (st.ctx.assistant.clone(), st.ctx.prepared.clone());
                    let (shown, verification) = (
                        st.check.released().to_string(),
                        st.check.verification.clone(),
                    );
                    let finished = blocking(move || {
                        assistant
                            .conclude(&prepared, shown, verification)
                            .map_err(ApiError::from)
                    })
                    .await;
                    let event = match finished {
                        Ok(finished) => {
                            let served = Served::from(finished);
                            if served.extractive {
                                st.queue.push_back(token(&format!("\n\n{}", served.text)));
                            }
                            match st.ctx.record(served.text.clone()).await {
                                Ok(()) => {
                                    st.ctx.remember(&served);
                                    st.ctx.final_event(&served, Some(&summary))
                                }
                                Err(e) => {
                                    Event::default().event("error").data(e.body().to_string())
                                }
                            }
                        }
                        Err(e) => Event::default().event("error").data(e.body().to_string()),
                    };
                    st.queue.push_back(event);
                }
                Ok(Some(GenerationEvent::Error(e))) => {
                    st.finished = true;
                    let e = ApiError::from(e);
                    st.queue
                        .push_back(Event::default().event("error").data(e.body().to_string()));
                }
            }
        }
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct CreateSession {
    #[serde(default)]
    pub user_id: Option<String>,
}

pub async fn create_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    OptionalJsonBody(body): OptionalJsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let user_id = checked_user_id(body.unwrap_or_default().user_id.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let owner = SessionOwner {
        owner: Some(caller.owner),
        user_id,
    };
    let info = blocking(move || {
        let id = SessionId::new_random();
        Ok(assistant.memory().create_session(&id, &owner)?)
    })
    .await?;
    Ok(Json(json!({
        "session_id": info.id,
        "user_id": info.user_id,
        "created_at": ms_to_rfc3339(info.created_at_ms),
    }))
    .into_response())
}

/// `?user_id=` on the session routes: when given, it must be the session's.
#[derive(Debug, Deserialize, Default)]
pub struct SessionQuery {
    #[serde(default)]
    pub user_id: Option<String>,
}

pub async fn get_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id)?;
    let user_id = checked_user_id(q.user_id.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let (info, turns) = blocking(move || {
        let memory = assistant.memory();
        let info = memory
            .session(&id)?
            .filter(|info| may_use(info, &caller, user_id.as_deref(), true))
            .ok_or_else(|| no_such_session(&id))?;
        let turns = memory.history(&id, 1000)?;
        Ok((info, turns))
    })
    .await?;
    let messages: Vec<serde_json::Value> = turns
        .iter()
        .map(|t| {
            json!({
                "role": match t.role { Speaker::User => "user", Speaker::Assistant => "assistant" },
                "content": t.content,
                "sources": t.sources,
                "timestamp": ms_to_rfc3339(t.created_at_ms),
            })
        })
        .collect();
    Ok(Json(json!({
        "session_id": info.id,
        "user_id": info.user_id,
        "created_at": ms_to_rfc3339(info.created_at_ms),
        "messages": messages,
    }))
    .into_response())
}

pub async fn delete_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id)?;
    let user_id = checked_user_id(q.user_id.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let shown = id.to_string();
    blocking(move || {
        let memory = assistant.memory();
        match memory.session(&id)? {
            Some(info) if may_use(&info, &caller, user_id.as_deref(), false) => {
                memory.delete_session(&id)?;
                Ok(())
            }
            _ => Err(no_such_session(&id)),
        }
    })
    .await?;
    Ok(Json(json!({ "session_id": shown, "deleted": true })).into_response())
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
