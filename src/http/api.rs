//! `/api/v1/query` and the session routes, keeping the Flask prototype's JSON contract.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::extract::{JsonBody, OptionalJsonBody};
use super::{mask_card_numbers, Shared};
use crate::engine::{GenerationEvent, GenerationSummary};
use crate::memory::{SessionId, Speaker};
use crate::rag::{Assistant, Plan, Source, MAX_QUESTION_CHARS};

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
    let requested = req
        .session_id
        .as_deref()
        .map(SessionId::parse)
        .transpose()?;
    let services = state.services()?;
    let assistant = services.assistant.clone();
    let stream = wants_stream(&req, &headers);

    let session = {
        let assistant = assistant.clone();
        let user_id = req.user_id.clone();
        blocking(move || {
            let memory = assistant.memory();
            match requested {
                Some(id) => match memory.session(&id)? {
                    Some(_) => Ok(id),
                    None => Err(ApiError::not_found(format!(
                        "session {id} does not exist; omit session_id to start one"
                    ))),
                },
                None => {
                    let id = SessionId::new_random();
                    memory.create_session(&id, user_id.as_deref())?;
                    Ok(id)
                }
            }
        })
        .await?
    };
    let query_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("query", %query_id, session_id = %session);
    let _guard = span.enter();
    if state.config.log_queries {
        tracing::info!(query = %mask_card_numbers(&question), "question");
    } else {
        tracing::debug!(query = %mask_card_numbers(&question), "question");
    }
    tracing::debug!(metadata = ?req.metadata, user_id = ?req.user_id, "request context");
    drop(_guard);

    let prepared = {
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
    let ctx = Answering {
        state: state.clone(),
        assistant,
        query_id,
        session,
        question,
        sources: prepared.sources.clone(),
        documents: sources,
        started,
    };

    match prepared.plan {
        Plan::Fallback(text) => {
            tracing::info!(query_id = %ctx.query_id, session_id = %ctx.session, "answered by the fallback");
            state.metrics.fallbacks.inc();
            ctx.record(text.clone()).await?;
            if stream {
                let events: Vec<Result<Event, Infallible>> = vec![
                    Ok(Event::default()
                        .event("token")
                        .data(json!({ "text": text }).to_string())),
                    Ok(ctx.final_event(&text, true, None)),
                ];
                return Ok(Sse::new(stream::iter(events)).into_response());
            }
            Ok(Json(ctx.response(text, true)).into_response())
        }
        Plan::Generate(request) => {
            let rx = ctx.assistant.submit(request)?;
            if stream {
                return Ok(Sse::new(sse_stream(ctx, rx))
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
            ctx.record(text.clone()).await?;
            Ok(Json(ctx.response(text, false)).into_response())
        }
    }
}

/// Everything needed to finish one answer, streamed or not.
struct Answering {
    state: Shared,
    assistant: Arc<Assistant>,
    query_id: String,
    session: SessionId,
    question: String,
    sources: Vec<Source>,
    documents: Vec<SourceDocument>,
    started: Instant,
}

impl Answering {
    async fn record(&self, answer: String) -> Result<(), ApiError> {
        let assistant = self.assistant.clone();
        let (session, question, sources) = (
            self.session.clone(),
            self.question.clone(),
            self.sources.clone(),
        );
        blocking(move || {
            assistant
                .record(&session, &question, &answer, &sources)
                .map_err(ApiError::from)
        })
        .await
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

    fn response(&self, text: String, fallback: bool) -> QueryResponse {
        QueryResponse {
            query_id: self.query_id.clone(),
            session_id: self.session.to_string(),
            query: self.question.clone(),
            response: text,
            source_documents: self.documents.clone(),
            timestamp: now_rfc3339(),
            processing_time_ms: self.started.elapsed().as_millis() as u64,
            fallback,
        }
    }

    fn final_event(
        &self,
        text: &str,
        fallback: bool,
        summary: Option<&GenerationSummary>,
    ) -> Event {
        let mut body =
            serde_json::to_value(self.response(text.to_string(), fallback)).unwrap_or_default();
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

/// Token events as they come, then one `done` event with the sources, the session and the timings.
/// Dropping the stream (the client went away) drops the receiver, which stops the generation.
fn sse_stream(
    ctx: Answering,
    rx: UnboundedReceiver<GenerationEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let deadline = tokio::time::Instant::now() + ctx.state.config.generation_timeout;
    struct St {
        ctx: Answering,
        rx: UnboundedReceiver<GenerationEvent>,
        text: String,
        finished: bool,
    }
    let init = St {
        ctx,
        rx,
        text: String::new(),
        finished: false,
    };
    stream::unfold(init, move |mut st| async move {
        if st.finished {
            return None;
        }
        let event = match tokio::time::timeout_at(deadline, st.rx.recv()).await {
            Err(_) => {
                st.finished = true;
                let e = ApiError::timeout("generation took too long");
                Event::default().event("error").data(e.body().to_string())
            }
            Ok(None) => {
                st.finished = true;
                let e = ApiError::internal("the model worker stopped mid-answer");
                Event::default().event("error").data(e.body().to_string())
            }
            Ok(Some(GenerationEvent::Token(t))) => {
                st.text.push_str(&t);
                Event::default()
                    .event("token")
                    .data(json!({ "text": t }).to_string())
            }
            Ok(Some(GenerationEvent::Done(summary))) => {
                st.finished = true;
                let text = st.text.trim().to_string();
                st.ctx.observe(&summary);
                match st.ctx.record(text.clone()).await {
                    Ok(()) => st.ctx.final_event(&text, false, Some(&summary)),
                    Err(e) => Event::default().event("error").data(e.body().to_string()),
                }
            }
            Ok(Some(GenerationEvent::Error(e))) => {
                st.finished = true;
                let e = ApiError::from(e);
                Event::default().event("error").data(e.body().to_string())
            }
        };
        Some((Ok(event), st))
    })
}

#[derive(Debug, Deserialize, Default)]
pub struct CreateSession {
    #[serde(default)]
    pub user_id: Option<String>,
}

pub async fn create_session(
    State(state): State<Shared>,
    OptionalJsonBody(body): OptionalJsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let assistant = state.services()?.assistant.clone();
    let user_id = body.unwrap_or_default().user_id;
    let info = blocking(move || {
        let id = SessionId::new_random();
        Ok(assistant.memory().create_session(&id, user_id.as_deref())?)
    })
    .await?;
    Ok(Json(json!({
        "session_id": info.id,
        "user_id": info.user_id,
        "created_at": ms_to_rfc3339(info.created_at_ms),
    }))
    .into_response())
}

pub async fn get_session(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id)?;
    let assistant = state.services()?.assistant.clone();
    let (info, turns) = blocking(move || {
        let memory = assistant.memory();
        let info = memory
            .session(&id)?
            .ok_or_else(|| ApiError::not_found(format!("session {id} does not exist")))?;
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
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id)?;
    let assistant = state.services()?.assistant.clone();
    let shown = id.to_string();
    let existed = blocking(move || Ok(assistant.memory().delete_session(&id)?)).await?;
    if !existed {
        return Err(ApiError::not_found(format!(
            "session {shown} does not exist"
        )));
    }
    Ok(Json(json!({ "session_id": shown, "deleted": true })).into_response())
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
