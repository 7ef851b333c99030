//! `/api/v1/query` and the session routes, keeping the Flask prototype's JSON contract.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures_util::stream::Stream;
use futures_util::StreamExt;
use serde_json::json;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::extract::{JsonBody, OptionalJsonBody};
use super::wire::{
    ms_to_rfc3339, CreateSession, QueryRequest, QueryResponse, SessionCreated, SessionDeleted,
    SessionHistory, SessionMessage, SessionQuery, TextEvent,
};
use super::Shared;
use crate::assistant::{
    parse_session_id, Access, AnswerEvent, AnswerStream, Ask, Conversation, Door, Speaker,
};
use crate::logsafe;

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

fn wants_stream(req: &QueryRequest, headers: &HeaderMap) -> bool {
    req.stream.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
}

fn access(caller: &Caller, user_id: Option<String>) -> Access {
    Access {
        owner: caller.owner.clone(),
        user_id,
        admin: caller.admin,
    }
}

/// `POST /api/v1/query`: the REST door of [`crate::assistant::Assistant::ask`], as one JSON answer or as
/// server-sent events.
pub async fn query(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let user_id = checked_user_id(req.user_id.as_deref())?;
    if let Some(m) = &req.metadata {
        if m.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!("`metadata` is larger than {MAX_METADATA_BYTES} bytes as JSON"),
            ));
        }
    }
    let access = access(&caller, user_id.clone());
    let conversation = match req.session_id.as_deref() {
        Some(id) => Conversation::Continue {
            id: parse_session_id(id)?,
            access,
        },
        None => Conversation::New(access),
    };
    tracing::debug!(
        metadata = %req.metadata.as_ref().map(logsafe::json_value).unwrap_or_default(),
        user_id = %user_id.as_deref().map(logsafe::user_text).unwrap_or_default(),
        "request context"
    );
    let assistant = state.services()?.assistant.clone();
    let stream = wants_stream(&req, &headers);
    let ask = Ask {
        preview: stream && req.preview == Some(true),
        timeout: Some(state.config.generation_timeout),
        when_busy: req.when_busy.into(),
        ..Ask::new(req.query, conversation, Door::Rest)
    };
    let answer = assistant.ask(ask).await?;
    if stream {
        return Ok(Sse::new(sse_events(answer))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let answered = answer.collect().await?;
    Ok(Json(QueryResponse::from(&answered)).into_response())
}

fn text_event(name: &str, text: String) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(&TextEvent { text }).unwrap_or_default())
}

/// `token` events as sentences complete and pass the check (an `extract` event first when a preview
/// was asked for), then one `done` event with the served answer, the sources, the session and, for a
/// generated answer, the usage and timings; or an `error` event. Dropping the stream (the client
/// went away) cancels the generation.
fn sse_events(answer: AnswerStream) -> impl Stream<Item = Result<Event, Infallible>> {
    answer.into_stream().map(|event| {
        Ok(match event {
            AnswerEvent::Preview(text) => text_event("extract", text),
            AnswerEvent::Text(text) => text_event("token", text),
            AnswerEvent::Replaced(text) => text_event("token", format!("\n\n{text}")),
            AnswerEvent::Done(answered) => {
                let mut body =
                    serde_json::to_value(QueryResponse::from(&*answered)).unwrap_or_default();
                if let (Some(usage), Some(timings)) = (answered.usage(), answered.timings) {
                    body["usage"] = json!(usage);
                    body["timings"] = json!(timings);
                }
                Event::default().event("done").data(body.to_string())
            }
            AnswerEvent::Error(e) => Event::default()
                .event("error")
                .data(ApiError::from(e).body().to_string()),
        })
    })
}

pub async fn create_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    OptionalJsonBody(body): OptionalJsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let user_id = checked_user_id(body.unwrap_or_default().user_id.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let access = access(&caller, user_id);
    let info = blocking(move || Ok(assistant.create_session(&access)?)).await?;
    Ok(Json(SessionCreated {
        session_id: info.id.to_string(),
        user_id: info.user_id,
        created_at: ms_to_rfc3339(info.created_at_ms),
    })
    .into_response())
}

pub async fn get_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let id = parse_session_id(&id)?;
    let access = access(&caller, checked_user_id(q.user_id.as_deref())?);
    let assistant = state.services()?.assistant.clone();
    let audit = state.config.audit.clone().filter(|_| caller.admin);
    let who = caller.owner.clone();
    let (info, turns) = blocking(move || {
        let (info, turns) = assistant.session_turns(&id, &access, 1000)?;
        // An administrator's read of a conversation is audited (whoever created it).
        if let Some(log) = &audit {
            log.record(
                &crate::audit::AuditEntry::new(&who, "session.read", "GET /api/v1/session/{id}")
                    .session(id.as_str())
                    .counts(json!({"messages": turns.len()})),
            )?;
        }
        Ok((info, turns))
    })
    .await?;
    let messages = turns
        .into_iter()
        .map(|t| SessionMessage {
            role: match t.role {
                Speaker::User => "user",
                Speaker::Assistant => "assistant",
            }
            .into(),
            content: t.content,
            sources: t.sources,
            timestamp: ms_to_rfc3339(t.created_at_ms),
        })
        .collect();
    Ok(Json(SessionHistory {
        session_id: info.id.to_string(),
        user_id: info.user_id,
        created_at: ms_to_rfc3339(info.created_at_ms),
        messages,
    })
    .into_response())
}

pub async fn delete_session(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    let id = parse_session_id(&id)?;
    let access = access(&caller, checked_user_id(q.user_id.as_deref())?);
    let assistant = state.services()?.assistant.clone();
    let shown = id.to_string();
    blocking(move || Ok(assistant.delete_session(&id, &access)?)).await?;
    Ok(Json(SessionDeleted {
        session_id: shown,
        deleted: true,
    })
    .into_response())
}
