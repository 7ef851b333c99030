//! `/mcp`: the MCP server's streamable HTTP transport (rmcp's, stateless, JSON responses), behind the
//! same API keys and body limit as the REST API (admission and timeouts are `rag`'s, for every door). The `observe` middleware has already
//! authenticated the caller; this handler reads the body within the limits, puts the caller and the
//! assistant into the request for the tools, and hands it to rmcp.
//!
//! Stateless: no MCP session is kept between requests, so a caller cannot pile up server memory; a
//! conversation continues through `ask`'s `session_id`, owned by the caller's key.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rmcp::model::Extensions;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower::ServiceExt as _;

use super::auth::Caller;
use super::error::ApiError;
use super::{extract, Shared};
use crate::assistant::Access;
use crate::mcp::{KnowledgeServer, McpContext};

pub type McpService = StreamableHttpService<KnowledgeServer, NeverSessionManager>;

/// rmcp's transport, configured from the server's settings.
pub fn service(config: &super::ServerConfig) -> McpService {
    let mut mcp = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(config.max_body_bytes);
    // Without keys (a loopback server), only loopback Host names: a web page that rebinds its own DNS
    // name to 127.0.0.1 cannot reach the tools. With keys, the key is what keeps others out.
    if !(config.api_keys.is_empty() && config.admin_keys.is_empty()) {
        mcp = mcp.disable_allowed_hosts();
    }
    // Browsers only from the configured CORS origins (MCP clients are not browsers; a web page that
    // holds a key still needs its origin allowed).
    mcp = if config.cors_origins.iter().any(|o| o == "*") {
        mcp.disable_allowed_origins()
    } else {
        mcp.with_allowed_origins(config.cors_origins.clone())
            .enforce_origin_validation()
    };
    StreamableHttpService::new(
        || Ok(KnowledgeServer::per_request(context_of)),
        Arc::new(NeverSessionManager::default()),
        mcp,
    )
}

/// The [`McpContext`] this handler put into the HTTP request, as the tools find it.
fn context_of(extensions: &Extensions) -> Option<McpContext> {
    extensions
        .get::<axum::http::request::Parts>()?
        .extensions
        .get::<McpContext>()
        .cloned()
}

pub async fn handle(
    State(state): State<Shared>,
    Extension(service): Extension<McpService>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    // Only a pre-flight (OPTIONS) passes `observe` without a caller; no CORS layer answered it.
    let Some(Extension(caller)) = caller else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "MCP takes POST; cross-origin browser calls need NOVAPAY_CORS_ORIGINS",
        ));
    };
    let services = match state.services() {
        Ok(s) => s,
        Err(e) => {
            extract::drain(body, state.config.body_read_timeout).await;
            return Err(e);
        }
    };
    parts.extensions.insert(McpContext {
        assistant: services.assistant.clone(),
        caller: Access {
            owner: caller.owner,
            user_id: None,
            admin: caller.admin,
        },
    });
    // The body within the server's limit and read timeout (413 / 408 as for every route).
    let (_, bytes) = extract::read_body(
        Request::from_parts(parts.clone(), body),
        &state,
        state.config.max_body_bytes,
    )
    .await?;
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = service
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    Ok(response.map(Body::new).into_response())
}
