//! The REST API's wire types: what `/api/v1/query` and the session routes read and write (kept from
//! the Flask prototype's JSON contract). `/openapi.json` is generated from these types (`utoipa`),
//! so the document cannot drift from what the server sends; each example here is checked against
//! its schema by the tests.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::assistant::{Answered, Source, Suggestion, WhenBusy};

/// A question, as the Flask prototype's clients send it.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "query": "How much does a domestic transfer cost?",
    "session_id": "3f2b8c1e-5d7a-4f7e-9a51-2b7c0e4d9f10",
    "user_id": "customer-42",
    "when_busy": "extract"
}))]
pub struct QueryRequest {
    /// The customer's question (trimmed; 1-1000 characters).
    #[schema(min_length = 1, max_length = 1000)]
    pub query: String,
    /// Continue this conversation (one created with the same API key); omit to start a new one,
    /// which is created with the first answer and belongs to the calling key.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub session_id: Option<String>,
    /// The integrator's end user; a session created with one is served only to requests that name
    /// the same user_id or none. No control characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
    /// Free-form context, at most 4096 bytes as JSON; only logged (masked) at debug level.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Answer as Server-Sent Events (also with `Accept: text/event-stream`).
    #[serde(default)]
    pub stream: Option<bool>,
    /// When the generation queue is full: `error` (429 with Retry-After, the default) or `extract`
    /// (an answer quoted from the knowledge base at once, marked extractive). The chat page sends
    /// extract.
    #[serde(default)]
    pub when_busy: Option<WhenBusyField>,
    /// Streams only: an `extract` event with the extractive answer first, while the model reads the
    /// prompt; the checked answer follows as token events. The chat page sends true.
    #[serde(default)]
    pub preview: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhenBusyField {
    Error,
    Extract,
}

impl From<Option<WhenBusyField>> for WhenBusy {
    fn from(f: Option<WhenBusyField>) -> Self {
        match f {
            Some(WhenBusyField::Extract) => WhenBusy::Extract,
            _ => WhenBusy::Error,
        }
    }
}

/// A knowledge-base excerpt the answer draws on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceDocument {
    /// The document's file name in the knowledge base.
    pub source: String,
    /// The section heading (or the document title).
    pub title: String,
    pub snippet: String,
    /// Cosine similarity of the excerpt to the question (0 when only keyword search found it).
    pub score: f32,
}

impl From<&Source> for SourceDocument {
    fn from(s: &Source) -> Self {
        Self {
            source: s.source.clone(),
            title: s.label().to_string(),
            snippet: s.snippet.clone(),
            score: s.score,
        }
    }
}

/// A section offered instead of an answer (`outcome: "suggested"`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SuggestionDocument {
    /// 1-based: what the customer picks, and what feedback's `suggestion` names.
    pub id: usize,
    /// The document's file name in the knowledge base.
    pub source: String,
    /// The document's title.
    pub title: String,
    /// The section's heading path.
    pub section: String,
    /// One line of the section.
    pub snippet: String,
    /// The section's text, shown when the customer picks it.
    pub text: String,
    pub score: f32,
}

impl From<&Suggestion> for SuggestionDocument {
    fn from(s: &Suggestion) -> Self {
        Self {
            id: s.id,
            source: s.source.clone(),
            title: s.title.clone(),
            section: s.section.clone(),
            snippet: s.snippet.clone(),
            text: s.text.clone(),
            score: s.score,
        }
    }
}

/// The figure check (verified mode, generated answers).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckSummary {
    /// Sentences checked.
    pub checked: usize,
    /// Sentences removed for a figure their sources do not state.
    pub removed: usize,
}

/// An answer with its sources.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "query_id": "7d0c5a2e-96b4-4c1b-8f0e-3a9d2b6c4e11",
    "session_id": "3f2b8c1e-5d7a-4f7e-9a51-2b7c0e4d9f10",
    "query": "How much does a domestic transfer cost?",
    "response": "A domestic transfer costs 0.5% of the amount, at least 30 RUB [1].",
    "source_documents": [{
        "source": "fees-and-limits.md",
        "title": "Domestic transfers",
        "snippet": "Transfers to other Russian banks cost 0.5% of the amount, minimum 30 RUB…",
        "score": 0.71
    }],
    "timestamp": "2026-12-01T14:00:00.000Z",
    "processing_time_ms": 2140,
    "outcome": "answered",
    "suggestions": [],
    "fallback": false,
    "extractive": false,
    "cached": false,
    "verification": {"checked": 1, "removed": 0},
    "answer_mode": "verified"
}))]
pub struct QueryResponse {
    pub query_id: String,
    pub session_id: String,
    /// The question as answered (trimmed).
    pub query: String,
    pub response: String,
    pub source_documents: Vec<SourceDocument>,
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub processing_time_ms: u64,
    /// `answered` (a checked generated or quoted answer, with its sources), `suggested` (no answer
    /// could be trusted: the closest sections are offered in `suggestions`, and the way to an operator)
    /// or `handed_off` (nothing relevant: the support contacts).
    #[schema(pattern = "^(answered|suggested|handed_off)$")]
    pub outcome: String,
    /// The sections offered (`suggested` only; otherwise empty).
    pub suggestions: Vec<SuggestionDocument>,
    /// True unless `outcome` is `answered` (the seed API's flag, kept for its clients).
    pub fallback: bool,
    /// True when the answer quotes the knowledge base verbatim instead of a generated text (extract
    /// mode, a full queue with `when_busy: "extract"`, or a generation the figure check emptied).
    pub extractive: bool,
    /// True when the answer was reused from an earlier identical question.
    pub cached: bool,
    /// Sentences checked and removed by the figure check (`verified` mode, generated answers).
    pub verification: Option<CheckSummary>,
    /// generate, extract or verified.
    #[schema(pattern = "^(generate|extract|verified)$")]
    pub answer_mode: String,
}

impl From<&Answered> for QueryResponse {
    fn from(a: &Answered) -> Self {
        Self {
            query_id: a.query_id.clone(),
            session_id: a
                .session
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            query: a.question.clone(),
            response: a.answer.text.clone(),
            source_documents: a.answer.sources.iter().map(SourceDocument::from).collect(),
            timestamp: now_rfc3339(),
            processing_time_ms: a.elapsed_ms,
            outcome: a.answer.outcome().as_str().to_string(),
            suggestions: a
                .answer
                .suggestions
                .iter()
                .map(SuggestionDocument::from)
                .collect(),
            fallback: a.answer.fallback(),
            extractive: a.answer.extractive(),
            cached: a.answer.cached,
            verification: a.answer.verification.as_ref().map(|v| CheckSummary {
                checked: v.checked,
                removed: v.removed,
            }),
            answer_mode: a.answer_mode.to_string(),
        }
    }
}

/// A piece of a streamed answer (the data of `token` and `extract` events).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"text": "A domestic transfer costs 0.5% of the amount."}))]
pub struct TextEvent {
    pub text: String,
}

/// The optional body of `POST /api/v1/session`.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[schema(example = json!({"user_id": "customer-42"}))]
pub struct CreateSession {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
}

/// A new, empty conversation.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "session_id": "3f2b8c1e-5d7a-4f7e-9a51-2b7c0e4d9f10",
    "user_id": "customer-42",
    "created_at": "2026-12-01T14:00:00.000Z"
}))]
pub struct SessionCreated {
    pub session_id: String,
    pub user_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `?user_id=` on the session routes: when given, it must be the session's.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// When given, it must be the session's user_id.
    #[serde(default)]
    #[param(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
}

/// One turn of a stored conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionMessage {
    /// user or assistant.
    #[schema(pattern = "^(user|assistant)$")]
    pub role: String,
    pub content: String,
    /// The documents an assistant turn cited.
    pub sources: Vec<String>,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// A conversation's history, oldest turn first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "session_id": "3f2b8c1e-5d7a-4f7e-9a51-2b7c0e4d9f10",
    "user_id": null,
    "created_at": "2026-12-01T14:00:00.000Z",
    "messages": [
        {"role": "user", "content": "How much does a domestic transfer cost?", "sources": [],
         "timestamp": "2026-12-01T14:00:02.000Z"},
        {"role": "assistant", "content": "0.5% of the amount, at least 30 RUB [1].",
         "sources": ["fees-and-limits.md"], "timestamp": "2026-12-01T14:00:04.000Z"}
    ]
}))]
pub struct SessionHistory {
    pub session_id: String,
    pub user_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub messages: Vec<SessionMessage>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"session_id": "3f2b8c1e-5d7a-4f7e-9a51-2b7c0e4d9f10", "deleted": true}))]
pub struct SessionDeleted {
    pub session_id: String,
    pub deleted: bool,
}

/// The JSON error body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "overloaded", "message": "the generation queue is full (4 waiting); retry shortly"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code (invalid_query, not_found, overloaded, timeout, ...).
    pub code: String,
    pub message: String,
}

/// What `/health` reports: `loading` (503) until the models and the index are ready.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "ok", "demo_model": false, "models_pinned": true, "llm": "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
    "embedder": "multilingual-e5-small",
    "index": {"chunks": 412, "files": 23, "generation": "g-20261201-140000"},
    "queue": {"waiting": 0, "depth": 4}
}))]
pub struct Health {
    /// ok or loading.
    #[schema(pattern = "^(ok|loading)$")]
    pub status: String,
    /// A small demo model stands in for the product's: answers are not reliable.
    pub demo_model: bool,
    /// The model files matched the models lock at start; false: there was no lock at its default
    /// place, so they were not checked (absent while loading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_pinned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<HealthIndex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<HealthQueue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthIndex {
    pub chunks: usize,
    pub files: usize,
    pub generation: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthQueue {
    /// Generation jobs waiting.
    pub waiting: usize,
    /// Jobs that may wait while one runs.
    pub depth: usize,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The acknowledgement of a Bitrix24 event (the answer follows through the portal's REST API).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"result": "accepted"}))]
pub struct Bitrix24Ack {
    /// installed, accepted or ignored.
    #[schema(pattern = "^(installed|accepted|ignored)$")]
    pub result: String,
    /// Why an event was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A customer's rating of an answer (`POST /api/v1/feedback`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "query_id": "8d0c6a0e-2f4b-4c61-9b8e-3f1d2a7c5e90",
    "rating": "down",
    "comment": "The fee for international transfers is different now"
}))]
pub struct FeedbackRequest {
    /// The `query_id` of an answer given in one of the caller's sessions.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub query_id: String,
    pub rating: RatingField,
    /// At most 1000 characters, no control characters but new lines.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub comment: Option<String>,
    /// When the session was created with a user_id, the same one.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
    /// For a `suggested` answer: the id of the offered section that answered the question (with
    /// `rating: "up"`). An id the answer did not offer is a 400 (`invalid_suggestion`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub suggestion: Option<usize>,
    /// The customer asked for an operator after this answer ("talk to an operator").
    #[serde(default)]
    pub operator: Option<bool>,
    /// When given, the answer must have been given in this session (else 409, `session_mismatch`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub session_id: Option<String>,
}

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RatingField {
    Up,
    Down,
}

impl From<RatingField> for crate::assistant::feedback::Rating {
    fn from(r: RatingField) -> Self {
        match r {
            RatingField::Up => Self::Up,
            RatingField::Down => Self::Down,
        }
    }
}

/// A stored rating.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"query_id": "8d0c6a0e-2f4b-4c61-9b8e-3f1d2a7c5e90", "rating": "up", "suggestion": 2, "operator": false, "stored": true}))]
pub struct FeedbackStored {
    pub query_id: String,
    pub rating: RatingField,
    /// The offered section that helped, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<usize>,
    /// The customer asked for an operator.
    pub operator: bool,
    pub stored: bool,
}

/// `?days=` of `GET /api/v1/stats`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
pub struct StatsQuery {
    /// Days back the report covers (default 30, 1-3650).
    #[serde(default)]
    #[param(minimum = 1, maximum = 3650)]
    pub days: Option<u32>,
}

/// `?channel=` of the customer routes.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// `bitrix24`: the path names a Bitrix24 portal user id (their bot dialogs); absent: the API's
    /// `user_id`.
    #[serde(default)]
    #[param(pattern = "^bitrix24$")]
    pub channel: Option<String>,
}
