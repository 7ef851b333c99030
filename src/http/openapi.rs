//! `/openapi.json`, generated with `utoipa` from the wire types (`wire.rs`) and the route constants
//! (`routes.rs`). Each route is documented here, next to the others, by an operation stub: the
//! handlers stay free of documentation attributes, and the tests check that every served route is in
//! the document and every example validates against its schema.

#![allow(dead_code)] // The stubs exist for their `#[utoipa::path]` attributes only.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::openai::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta,
    MessageIn, MessageOut, NovapayExtension, StreamOptions, Usage,
};
use super::openai::embeddings::EmbeddingsRequest;
use super::openai::error::{OpenAiErrorBody, OpenAiErrorDetail};
use super::openai::models::ModelObject;
use super::routes;
use super::wire::{
    Bitrix24Ack, CheckSummary, CreateSession, ErrorBody, ErrorDetail, Health, HealthIndex,
    HealthQueue, QueryRequest, QueryResponse, SessionCreated, SessionDeleted, SessionHistory,
    SessionMessage, SessionQuery, SourceDocument, SuggestionDocument, TextEvent, WhenBusyField,
};
use super::wire::{CustomerQuery, FeedbackRequest, FeedbackStored, RatingField, StatsQuery};

/// The OpenAPI document, generated once from the wire types.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`.
pub(super) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

const HEADERS_431: &str = "Request headers too large (more than 100 fields or 16 KiB)";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "novapay",
        description = "Offline NovaPay customer-support assistant. Answers come only from the \
            knowledge base, with sources; when it has no answer, a fallback points to human support."
    ),
    paths(
        query, create_session, get_session, delete_session, health, metrics, openapi, chat_page,
        bitrix24_events, mcp, openai_chat, openai_models, openai_model, openai_embeddings, feedback, stats, erase_customer, export_customer, list_documents, upload_document,
        delete_document, reindex
    ),
    components(schemas(
        QueryRequest, WhenBusyField, QueryResponse, SourceDocument, SuggestionDocument, CheckSummary, TextEvent,
        CreateSession, SessionCreated, SessionHistory, SessionMessage, SessionDeleted, ErrorBody,
        ErrorDetail, Health, HealthIndex, HealthQueue, Bitrix24Ack, ChatCompletionRequest,
        MessageIn, StreamOptions, ChatCompletion, Choice, MessageOut, Usage, NovapayExtension,
        ChatCompletionChunk, ChunkChoice, Delta, EmbeddingsRequest, ModelObject, OpenAiErrorBody,
        OpenAiErrorDetail, FeedbackRequest, RatingField, FeedbackStored
    )),
    security(("bearer" = []), ("basic" = []), ()),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description =
            Some("The API key as user name or password (1C HTTPСоединение).".to_string());
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
    }
}

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// Ask a question.
///
/// With `stream: true` (or `Accept: text/event-stream`) the answer comes as Server-Sent Events: an
/// `extract` event first when `preview` is asked for, `token` events `{text}` as checked sentences
/// are released, then one `done` event with the full QueryResponse plus `usage` and `timings` for a
/// generated answer, or an `error` event with the error body.
#[utoipa::path(
    post, path = routes::QUERY, tag = "answers",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The answer with its sources (JSON), or the event stream",
            content(
                (QueryResponse = "application/json"),
                (String = "text/event-stream", example = "event: token\ndata: {\"text\":\"A domestic transfer costs 0.5% of the amount.\"}\n\nevent: done\ndata: {\"query_id\":\"...\"}\n\n")
            )),
        (status = 400, description = "Invalid JSON, empty or too long query, malformed session id, user_id or metadata out of bounds", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown session, or one that belongs to another API key or user_id (never 403: a caller cannot tell the two apart)", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many answers in progress (the generation queue is full); refused before any work, with Retry-After", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading, model or storage unavailable (Retry-After)", body = ErrorBody),
        (status = 504, description = "Generation timed out", body = ErrorBody),
    )
)]
fn query() {}

/// Start a conversation.
#[utoipa::path(
    post, path = routes::SESSIONS, tag = "sessions",
    request_body(content = Option<CreateSession>, description = "Optional"),
    responses(
        (status = 200, description = "The new session", body = SessionCreated),
        (status = 400, description = "Invalid JSON or user_id", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn create_session() {}

/// A conversation's history.
#[utoipa::path(
    get, path = routes::SESSION, tag = "sessions",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The session id"),
        SessionQuery
    ),
    responses(
        (status = 200, description = "The session and its messages, oldest first", body = SessionHistory),
        (status = 400, description = "Malformed session id or user_id (an internal channel's id, e.g. bitrix24:..., is malformed here)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown session, or one that belongs to another API key or user_id (an admin key, NOVAPAY_ADMIN_KEYS, may read any)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn get_session() {}

/// Delete a conversation.
#[utoipa::path(
    delete, path = routes::SESSION, tag = "sessions",
    params(
        ("id" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,64}$", description = "The session id"),
        SessionQuery
    ),
    responses(
        (status = 200, description = "Deleted", body = SessionDeleted),
        (status = 400, description = "Malformed session id or user_id", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown session, or one that belongs to another API key or user_id", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn delete_session() {}

/// Readiness.
#[utoipa::path(
    get, path = routes::HEALTH, tag = "operations", security(()),
    responses(
        (status = 200, description = "Models and index loaded", body = Health),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Still loading", body = Health,
            example = json!({"status": "loading", "demo_model": false})),
    )
)]
fn health() {}

/// Prometheus metrics: HTTP requests and errors, and every answer whatever door it left through
/// (`novapay_answers_total{door,kind}`).
#[utoipa::path(
    get, path = routes::METRICS, tag = "operations", security(()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 431, description = HEADERS_431, body = ErrorBody),
    )
)]
fn metrics() {}

/// This document.
#[utoipa::path(
    get, path = routes::OPENAPI, tag = "operations", security(()),
    responses(
        (status = 200, description = "OpenAPI 3.1 document", body = Object),
        (status = 431, description = HEADERS_431, body = ErrorBody),
    )
)]
fn openapi() {}

/// Web chat page (self-contained, works offline).
#[utoipa::path(
    get, path = routes::CHAT_PAGE, tag = "operations", security(()),
    responses(
        (status = 200, description = "HTML page", content_type = "text/html", body = String),
        (status = 431, description = HEADERS_431, body = ErrorBody),
    )
)]
fn chat_page() {}

/// Bitrix24 chat-bot event (handler mode).
///
/// Receives Bitrix24's classic chat-bot events (ONAPPINSTALL, ONIMBOTJOINCHAT, ONIMBOTMESSAGEADD,
/// ONIMBOTDELETE) as PHP-style form fields. Every event's auth[application_token] must match the
/// token stored at ONAPPINSTALL or NOVAPAY_BITRIX24_APPLICATION_TOKEN. The event is acknowledged at
/// once; the answer is posted back with imbot.message.add, and an Open Lines chat without an answer
/// in the knowledge base is handed to an operator (imopenlines.bot.session.operator). No API key:
/// Bitrix24 cannot send one. The token is checked before the body is parsed. Without
/// NOVAPAY_BITRIX24_APPLICATION_TOKEN, ONAPPINSTALL is accepted once, and only from
/// NOVAPAY_BITRIX24_PORTAL (and NOVAPAY_BITRIX24_MEMBER_ID when set). Replies go to the configured
/// portal's REST endpoint only.
#[utoipa::path(
    post, path = routes::BITRIX24_EVENTS, tag = "integrations", security(()),
    request_body(content = Object, content_type = "application/x-www-form-urlencoded",
        description = "PHP-style form fields: event=ONIMBOTMESSAGEADD&data[PARAMS][DIALOG_ID]=27&data[PARAMS][MESSAGE]=...&data[BOT][567][BOT_ID]=567&auth[application_token]=..."),
    responses(
        (status = 200, description = "Acknowledged", body = Bitrix24Ack),
        (status = 400, description = "Not a Bitrix24 event (malformed fields, missing DIALOG_ID); more than 1000 fields or nesting deeper than 8", body = ErrorBody),
        (status = 401, description = "Missing or wrong application token; nothing was done", body = ErrorBody),
        (status = 404, description = "The Bitrix24 integration is off (NOVAPAY_BITRIX24_MODE)", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Wrong content type (answered after the body was read)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
    )
)]
fn bitrix24_events() {}

/// MCP server (Model Context Protocol, streamable HTTP).
///
/// Not a REST resource: the MCP server's streamable HTTP transport, for MCP clients (IDE and desktop
/// assistants). JSON-RPC 2.0 messages as the MCP specification defines them; stateless (no
/// Mcp-Session-Id), JSON responses. Tools: search_knowledge_base(query, top_k?) returns ranked
/// excerpts with source, heading and score (no LLM); ask(question, session_id?) returns a grounded
/// answer with its sources and the session_id of the conversation, which only the same API key can
/// continue. Resources: the knowledge-base documents (novapay://kb/<name>) as indexed text. Same API
/// keys as the REST API; the body limit is NOVAPAY_MAX_BODY_BYTES. Without API keys only loopback
/// Host names are accepted; browser Origins must be in NOVAPAY_CORS_ORIGINS. See docs/api.md, MCP
/// section.
#[utoipa::path(
    post, path = routes::MCP, tag = "mcp",
    request_body(content = Object, content_type = "application/json",
        description = "A JSON-RPC 2.0 request or notification (MCP)",
        example = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_knowledge_base", "arguments": {"query": "How much does a domestic transfer cost?", "top_k": 3}}})),
    responses(
        (status = 200, description = "The JSON-RPC response (a tool error is a result with isError: true)", body = Object),
        (status = 202, description = "A notification was accepted"),
        (status = 400, description = "Not a JSON-RPC message the MCP transport accepts (malformed JSON, a batch, an unsupported MCP-Protocol-Version)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Host or Origin not allowed (without API keys only loopback Host names; browser Origins only from NOVAPAY_CORS_ORIGINS)", body = ErrorBody),
        (status = 406, description = "The client must accept both application/json and text/event-stream (Accept header)", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 413, description = "The request body is larger than NOVAPAY_MAX_BODY_BYTES", body = ErrorBody),
        (status = 415, description = "Not Content-Type: application/json", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Models and index still loading; retry after Retry-After", body = ErrorBody),
    )
)]
fn mcp() {}
/// OpenAI-compatible chat completion: a grounded answer (Open WebUI, LibreChat, the `openai` SDKs).
///
/// The last user message is the question, earlier user/assistant messages the history (stateless:
/// nothing is stored); system messages are ignored. `model` must be `novapay`. With `stream: true`,
/// Server-Sent Events of `chat.completion.chunk` objects ending with `data: [DONE]`; the chunk with
/// `finish_reason` carries the `novapay` extension. Sources are cited under the text and in
/// `novapay.sources`. Errors of `/v1/` paths are in OpenAI's shape.
#[utoipa::path(
    post, path = routes::OPENAI_CHAT, tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "A chat.completion, or the event stream of chat.completion.chunk",
            content(
                (ChatCompletion = "application/json"),
                (String = "text/event-stream")
            )),
        (status = 400, description = "Invalid request (the field is in error.param): no user question last, n other than 1, tools, images, too many or too long messages", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key (invalid_api_key)", body = OpenAiErrorBody),
        (status = 404, description = "Unknown model (model_not_found)", body = OpenAiErrorBody),
        (status = 408, description = "The request body did not arrive in time", body = OpenAiErrorBody),
        (status = 413, description = "Body larger than 1 MiB", body = OpenAiErrorBody),
        (status = 415, description = "Not JSON", body = OpenAiErrorBody),
        (status = 429, description = "Too many answers in progress; Retry-After", body = OpenAiErrorBody),
        (status = 431, description = HEADERS_431, body = OpenAiErrorBody),
        (status = 503, description = "Loading, model or storage unavailable (Retry-After)", body = OpenAiErrorBody),
        (status = 504, description = "Generation timed out", body = OpenAiErrorBody),
    )
)]
fn openai_chat() {}

/// OpenAI-compatible model list: `novapay` (chat) and `novapay-embeddings`.
#[utoipa::path(
    get, path = routes::OPENAI_MODELS, tag = "openai",
    responses(
        (status = 200, description = "{object: list, data: [Model]}", body = Object),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 431, description = HEADERS_431, body = OpenAiErrorBody),
    )
)]
fn openai_models() {}

/// One served model.
#[utoipa::path(
    get, path = routes::OPENAI_MODEL, tag = "openai",
    params(("model" = String, Path, description = "novapay or novapay-embeddings")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 404, description = "Not a served model", body = OpenAiErrorBody),
        (status = 431, description = HEADERS_431, body = OpenAiErrorBody),
    )
)]
fn openai_model() {}

/// OpenAI-compatible embeddings with the knowledge base's embedder.
///
/// `input`: a string or up to 64 strings (16,000 characters each, and within the model's token
/// length). `encoding_format`: float or base64 (little-endian f32). Returns {object: list, data:
/// [{object: embedding, index, embedding}], model, usage: {prompt_tokens, total_tokens}}.
#[utoipa::path(
    post, path = routes::OPENAI_EMBEDDINGS, tag = "openai",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "One unit-length vector per input, in order", body = Object),
        (status = 400, description = "Invalid input: empty, too many or too long texts, token arrays, other dimensions", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 404, description = "Unknown model", body = OpenAiErrorBody),
        (status = 408, description = "The request body did not arrive in time", body = OpenAiErrorBody),
        (status = 413, description = "Body larger than 1 MiB", body = OpenAiErrorBody),
        (status = 415, description = "Not JSON", body = OpenAiErrorBody),
        (status = 429, description = "Too many embeddings requests in progress", body = OpenAiErrorBody),
        (status = 431, description = HEADERS_431, body = OpenAiErrorBody),
        (status = 503, description = "Loading", body = OpenAiErrorBody),
    )
)]
fn openai_embeddings() {}
const ADMIN_403: &str =
    "Not an administrator key (NOVAPAY_ADMIN_KEYS): query keys cannot manage the \
    knowledge base or read the support report";
const UNAVAILABLE_503: &str =
    "Loading, knowledge-base management not enabled, or storage unavailable (Retry-After)";

/// Rate an answer.
///
/// Only the key that created the answer's session (with its user_id, when the session has one) may
/// rate it; anyone else, an administrator included, gets 404 as for an unknown query_id. A new
/// rating replaces an earlier one. Counted in `novapay_feedback_total{rating}`.
#[utoipa::path(
    post, path = routes::FEEDBACK, tag = "answers",
    request_body = FeedbackRequest,
    responses(
        (status = 200, description = "Stored", body = FeedbackStored),
        (status = 400, description = "Invalid JSON, query_id, rating or comment", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such answer, or one in a session of another key or user_id", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn feedback() {}

/// The support report (administrator keys).
///
/// Questions answered, fallback answers, the questions the knowledge base could not answer (grouped
/// by wording, most frequent first), answers rated down with their question, answer, sources and
/// comment (newest first), and p50/p95 latency in ms. It shows customers' question text: admin keys
/// only. `novapay report --json` prints the same document from the conversation store.
#[utoipa::path(
    get, path = routes::STATS, tag = "operations",
    params(StatsQuery),
    responses(
        (status = 200, description = "{since_ms, questions_answered, fallback_answers, unanswered_questions: [{question, count, last_asked_ms}], feedback: {up, down}, thumbs_down: [{query_id, question, answer, sources, comment, fallback, answered_at_ms}], latency_ms: {p50, p95}, truncated}", body = Object),
        (status = 400, description = "Malformed days", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn stats() {}

const USER_ID_400: &str = "`user_id` with path characters ('/', '\\', '.', '..'), control characters or more than 128 characters (a Bitrix24 user id: 1-64 letters, digits, '-', '_', '.'), or an unknown `channel`; the message names the rule";

/// Erase a customer's data (administrator keys).
///
/// Removes every conversation of the customer — sessions, turns, answer records, ratings and
/// comments, in SQLite or Redis — and the cached answers built from their questions; an answer of
/// theirs still being generated is not stored. Bitrix24 dialogs are found by the portal user id
/// (`?channel=bitrix24`). Idempotent: an unknown or already erased id answers 200 with zero counts
/// and `removed_anything: false`. Written to the audit log with the key's fingerprint and the counts.
#[utoipa::path(
    delete, path = routes::USER, tag = "customers",
    params(("user_id" = String, Path, description = "The customer's user_id (or the Bitrix24 portal user id)"), CustomerQuery),
    responses(
        (status = 200, description = "What was removed: {user_id, channel?, removed_anything, removed: {conversations: {store: sqlite|redis, sessions, turns, answer_records, ratings, comments}, answer_cache: {entries}}}", body = Object),
        (status = 400, description = USER_ID_400, body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 404, description = "No such route (an id of `.` or `..` is resolved away by clients before it is sent)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 500, description = "The audit log could not be written (the erase may have happened; repeat it)", body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn erase_customer() {}

/// Export a customer's data (administrator keys).
///
/// Every stored conversation of the customer with its messages (as `GET /api/v1/session/{id}`
/// shows them) and each answer's record and rating, nothing of anyone else's. Written to the audit
/// log with the key's fingerprint and the counts.
#[utoipa::path(
    get, path = routes::USER_EXPORT, tag = "customers",
    params(("user_id" = String, Path, description = "The customer's user_id (or the Bitrix24 portal user id)"), CustomerQuery),
    responses(
        (status = 200, description = "{user_id, channel?, exported_at, sessions: [{session_id, user_id, created_at, messages: [{role, content, sources?, timestamp}], answers: [{query_id, question, answer, sources, outcome, answered_at, suggestions?, rating?: {rating, comment?, suggestion?, operator, rated_at}}]}]}", body = Object),
        (status = 400, description = USER_ID_400, body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 404, description = "No such route (an id of `.` or `..` is resolved away by clients before it is sent)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 500, description = "The audit log could not be written: nothing is shown", body = ErrorBody),
        (status = 503, description = "Loading or storage unavailable (Retry-After)", body = ErrorBody),
    )
)]
fn export_customer() {}

/// The knowledge base's documents (administrator keys).
#[utoipa::path(
    get, path = routes::DOCUMENTS, tag = "knowledge base",
    responses(
        (status = 200, description = "{generation, documents: [{name, size, hash (SHA-256), chunks, indexed_at_unix, status: indexed|pending|failed|missing, error?}]}", body = Object),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 503, description = UNAVAILABLE_503, body = ErrorBody),
    )
)]
fn list_documents() {}

/// Upload a document (administrator keys).
///
/// `multipart/form-data` with the document in the field `file` (md, markdown, txt, html, htm, pdf or
/// docx; its file name is the document's name, a relative path without `..` or hidden parts). The
/// file is written to the data folder atomically, indexed (only it is embedded) and served when the
/// 201 arrives; a failure leaves the data folder and the serving index as they were.
#[utoipa::path(
    post, path = routes::DOCUMENTS, tag = "knowledge base",
    request_body(content = Object, content_type = "multipart/form-data",
        description = "The field `file` with a file name"),
    responses(
        (status = 201, description = "Indexed and served: {document, chunks, published, report: {generation, added, updated, removed, chunks_embedded, ...}}", body = Object),
        (status = 400, description = "Malformed multipart body, no `file` field, or an invalid document name (path traversal, hidden, control characters)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time (NOVAPAY_BODY_TIMEOUT_SECS)", body = ErrorBody),
        (status = 409, description = "Another indexing run (`novapay index`) holds the index; retry (Retry-After)", body = ErrorBody),
        (status = 413, description = "Larger than NOVAPAY_MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data, or an unsupported document type", body = ErrorBody),
        (status = 422, description = "No readable text (empty, corrupt PDF or DOCX, ...): the message says why", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 500, description = "Indexing failed; the data folder and the serving index are unchanged", body = ErrorBody),
        (status = 503, description = UNAVAILABLE_503, body = ErrorBody),
    )
)]
fn upload_document() {}

/// Delete a document and re-index (administrator keys).
#[utoipa::path(
    delete, path = routes::DOCUMENT, tag = "knowledge base",
    params(("name" = String, Path, description = "The document's name as listed (a / in a nested name as %2F)")),
    responses(
        (status = 200, description = "Deleted; new questions no longer see it: {deleted, change}", body = Object),
        (status = 400, description = "Invalid document name", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
        (status = 409, description = "Another indexing run holds the index; retry (Retry-After)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 500, description = "Indexing failed; the document was put back", body = ErrorBody),
        (status = 503, description = UNAVAILABLE_503, body = ErrorBody),
    )
)]
fn delete_document() {}

/// Index the data folder as it is (administrator keys; only changed files are embedded, nothing is
/// published when nothing changed).
#[utoipa::path(
    post, path = routes::REINDEX, tag = "knowledge base",
    responses(
        (status = 200, description = "{document: null, chunks, published, report}", body = Object),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = ADMIN_403, body = ErrorBody),
        (status = 409, description = "Another indexing run holds the index; retry (Retry-After)", body = ErrorBody),
        (status = 431, description = HEADERS_431, body = ErrorBody),
        (status = 500, description = "Indexing failed (or the data folder is empty while the index is not); the serving index is unchanged", body = ErrorBody),
        (status = 503, description = UNAVAILABLE_503, body = ErrorBody),
    )
)]
fn reindex() {}
