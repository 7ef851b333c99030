//! The HTTP service: routes, JSON, SSE, auth, limits, metrics and the web chat page. It reaches the
//! engine and conversation memory only through the assistant (`assistant::Assistant::ask`) and never
//! names candle, usearch or SQLite types.
//!
//! This file is the router. Around it: `state.rs` (settings and what handlers share), `middleware.rs`
//! (limits, auth, counting), `serve.rs` (start-up and the connection loop), `error.rs` (the one mapping
//! of errors to statuses and the JSON error body), `health.rs`, `metrics.rs`, `openapi.rs`,
//! `chat_page.rs`, and the handlers (`api.rs`, `documents.rs`, `feedback.rs`, `customers.rs`,
//! `bitrix24.rs`, `mcp.rs`, `openai/`).
//!
//! Start-up order: the listener serves `/health` as "loading" at once; the caller loads models and the
//! index on a blocking thread and hands them over with [`RunningServer::set_ready`].
//!
//! Connections are served by hyper directly (not `axum::serve`) so that a client that sends its headers
//! slowly is cut off ([`ServerConfig::header_read_timeout`]) and the number of open connections is
//! capped ([`ServerConfig::max_connections`]): `axum::serve` configures neither.

mod api;
pub mod auth;
mod bitrix24;
mod chat_page;
mod customers;
mod documents;
pub mod error;
mod extract;
mod feedback;
mod health;
mod host;
mod mcp;
pub mod metrics;
mod middleware;
pub(crate) mod openai;
pub mod openapi;
pub mod routes;
mod serve;
mod state;
pub mod wire;

use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post};
use axum::Router;

pub use crate::assistant::BUSY_EXTRACT_MAX;
pub use crate::logsafe::mask_card_numbers;
pub use chat_page::{chat_page_csp, CHAT_HTML};
pub(crate) use error::ErrorCode;
pub use middleware::{MAX_HEADERS, MAX_HEADER_BYTES};
pub use openapi::openapi_json;
pub use serve::{start, RunningServer};
pub use state::{AppState, ServerConfig, Services, Shared};

pub fn router(state: Shared) -> Router {
    let mut app = Router::new()
        .route(routes::HEALTH, get(health::health))
        .route(routes::METRICS, get(metrics::metrics_text))
        .route(routes::OPENAPI, get(openapi::serve))
        .route(routes::CHAT_PAGE, get(chat_page::chat_page))
        .route(routes::QUERY, post(api::query))
        .route(routes::SESSIONS, post(api::create_session))
        .route(
            routes::SESSION,
            get(api::get_session).delete(api::delete_session),
        )
        .route(routes::BITRIX24_EVENTS, post(bitrix24::events))
        .route(
            routes::MCP,
            any(mcp::handle).layer(axum::Extension(mcp::service(&state.config))),
        )
        .route(routes::OPENAI_CHAT, post(openai::chat_completions))
        .route(routes::OPENAI_MODELS, get(openai::list_models))
        .route(routes::OPENAI_MODEL, get(openai::get_model))
        .route(routes::OPENAI_EMBEDDINGS, post(openai::embeddings))
        .route(
            routes::DOCUMENTS,
            get(documents::list).post(documents::upload),
        )
        .route(routes::DOCUMENT, axum::routing::delete(documents::delete))
        .route(routes::REINDEX, post(documents::reindex))
        .route(routes::FEEDBACK, post(feedback::feedback))
        .route(routes::STATS, get(feedback::stats))
        .route(routes::USER, axum::routing::delete(customers::erase))
        .route(routes::USER_EXPORT, get(customers::export))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state.clone());
    if let Some(cors) = middleware::cors_layer(&state.config.cors_origins) {
        app = app.layer(cors);
    }
    app
}
