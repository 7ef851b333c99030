//! Route paths, in one place (the OpenAPI document lists each of them).

pub const HEALTH: &str = "/health";
pub const METRICS: &str = "/metrics";
pub const OPENAPI: &str = "/openapi.json";
pub const CHAT_PAGE: &str = "/";
pub const QUERY: &str = "/api/v1/query";
pub const SESSIONS: &str = "/api/v1/session";
pub const SESSION: &str = "/api/v1/session/{id}";
/// Knowledge-base documents (administrator keys only).
pub const DOCUMENTS: &str = "/api/v1/documents";
pub const DOCUMENT: &str = "/api/v1/documents/{name}";
pub const REINDEX: &str = "/api/v1/reindex";
/// A customer's rating of an answer.
pub const FEEDBACK: &str = "/api/v1/feedback";
/// The support report (administrator keys only).
pub const STATS: &str = "/api/v1/stats";
/// A customer's data: erase (DELETE) by user id (administrator keys only).
pub const USER: &str = "/api/v1/users/{user_id}";
/// A customer's data: export (administrator keys only).
pub const USER_EXPORT: &str = "/api/v1/users/{user_id}/export";
/// Bitrix24 chat-bot events (handler mode); authenticated by the application token, not an API key.
pub const BITRIX24_EVENTS: &str = "/integrations/bitrix24/events";

/// The MCP server's streamable HTTP transport (JSON-RPC, not a REST resource).
pub const MCP: &str = "/mcp";
/// The OpenAI-compatible API (same API keys, as `Authorization: Bearer`).
pub const OPENAI_CHAT: &str = "/v1/chat/completions";
pub const OPENAI_MODELS: &str = "/v1/models";
pub const OPENAI_MODEL: &str = "/v1/models/{model}";
pub const OPENAI_EMBEDDINGS: &str = "/v1/embeddings";
/// Where the OpenAI-compatible paths live: their errors take OpenAI's shape.
pub const OPENAI_PREFIX: &str = "/v1/";

/// Paths that never need an API key.
pub const PUBLIC: &[&str] = &[HEALTH, METRICS, OPENAPI, CHAT_PAGE];

/// Every route, for the OpenAPI check.
pub const ALL: &[&str] = &[
    HEALTH,
    METRICS,
    OPENAPI,
    CHAT_PAGE,
    QUERY,
    SESSIONS,
    SESSION,
    BITRIX24_EVENTS,
    MCP,
    OPENAI_CHAT,
    OPENAI_MODELS,
    OPENAI_MODEL,
    OPENAI_EMBEDDINGS,
    DOCUMENTS,
    DOCUMENT,
    REINDEX,
    FEEDBACK,
    STATS,
    USER,
    USER_EXPORT,
];
