//! The HTTP service: routes, JSON, SSE, auth, limits, metrics and the web chat page. It reaches the
//! engine and conversation memory only through `rag` (the answering service, `rag::Assistant::ask`)
//! and never names candle, usearch or SQLite types.
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
mod documents;
pub mod error;
mod extract;
mod feedback;
mod host;
mod mcp;
pub mod metrics;
pub(crate) mod openai;
pub mod openapi;
pub mod routes;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::assistant::Assistant;
use crate::integrations::bitrix24::WebhookHandler;
use auth::Caller;
use error::ApiError;
use metrics::Metrics;

pub use crate::logsafe::mask_card_numbers;

pub const CHAT_HTML: &str = include_str!("static/index.html");

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required on every non-public route when not empty (or when `admin_keys` is not empty).
    pub api_keys: Vec<String>,
    /// Keys that may also read any caller's session (support staff); valid API keys as well.
    pub admin_keys: Vec<String>,
    /// Allowed CORS origins; `*` allows any; empty disables CORS.
    pub cors_origins: Vec<String>,
    /// A generation that runs longer answers 504 (and is cancelled).
    pub generation_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// The Bitrix24 event handler, when the integration runs in handler mode.
    pub bitrix24: Option<Arc<WebhookHandler>>,
    /// Open connections at most; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must finish sending a request's headers within this, and an idle keep-alive
    /// connection is closed after it.
    pub header_read_timeout: Duration,
    /// A client must finish sending a request's body within this.
    pub body_read_timeout: Duration,
    /// A small demo model stands in for the product's (no Hub access at set-up): `/health` and the
    /// chat page say that answers are not reliable.
    pub demo_model: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            cors_origins: Vec::new(),
            generation_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            bitrix24: None,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            demo_model: false,
        }
    }
}

/// What `/health` reports and the handlers use once loaded.
pub struct Services {
    pub assistant: Arc<Assistant>,
    pub llm_name: String,
    pub embedder_name: String,
}

pub struct AppState {
    pub config: ServerConfig,
    services: OnceLock<Services>,
    /// `/v1/embeddings` requests in progress (each runs the embedder on up to 64 texts).
    embeddings: Arc<Semaphore>,
    pub metrics: Metrics,
    /// No API keys and a loopback address: only requests addressed to a loopback name reach the API
    /// (see `host`).
    loopback_only: bool,
    /// Knowledge-base management, when the server knows its data folder.
    documents: OnceLock<Arc<crate::assistant::documents::Documents>>,
}

impl AppState {
    pub fn services(&self) -> Result<&Services, ApiError> {
        self.services.get().ok_or_else(ApiError::loading)
    }

    /// A place among the embeddings requests in progress, or 429 at once.
    pub(crate) fn admit_embeddings(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.embeddings
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "too many embeddings requests in progress; retry shortly",
                )
            })
    }
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let mut app = Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::METRICS, get(metrics_text))
        .route(routes::OPENAPI, get(openapi))
        .route(routes::CHAT_PAGE, get(chat_page))
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
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state.clone());
    if let Some(cors) = cors_layer(&state.config.cors_origins) {
        app = app.layer(cors);
    }
    app
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT]),
    )
}

/// The error code of an error response, for the metrics middleware.
#[derive(Clone, Copy)]
pub(crate) struct ErrorCode(pub &'static str);

pub use crate::assistant::BUSY_EXTRACT_MAX;

/// Request headers larger than this (in all) are refused with a JSON 431. hyper's own limits, past
/// which it answers 431 without a body, are set well above ours.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// More request header fields than this are refused with a JSON 431.
pub const MAX_HEADERS: usize = 100;
const HYPER_MAX_BUF_BYTES: usize = 256 * 1024;
const HYPER_MAX_HEADERS: usize = 1000;

/// Header limits, auth on non-public routes (the caller goes into the request's extensions), then
/// request counting by route and status. Every error leaves with the documented JSON body, also the
/// ones axum makes itself (405, a path that is not UTF-8, ...).
async fn observe(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Bitrix24 cannot send an API key; its events are checked against the application token.
    let public = routes::PUBLIC.contains(&route.as_str())
        || route == routes::BITRIX24_EVENTS
        || route == "unmatched";
    let openai_path = request.uri().path().starts_with(routes::OPENAI_PREFIX);
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let caller = auth::authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        &state.config.api_keys,
        &state.config.admin_keys,
    );
    let response = if header_bytes > MAX_HEADER_BYTES || request.headers().len() > MAX_HEADERS {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "request headers are limited to {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes"
            ),
        )
        .into_response()
    } else if public || request.method() == Method::OPTIONS {
        next.run(request).await
    } else if state.loopback_only && !host::is_loopback_host(request.headers().get(header::HOST)) {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        host::refused().into_response()
    } else if let Some(caller) = caller {
        request.extensions_mut().insert::<Caller>(caller);
        next.run(request).await
    } else {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>, or Basic)",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer, Basic realm=\"novapay\""),
        );
        r
    };
    let response = json_error_body(response).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.metrics.errors.with_label_values(&[code.0]).inc();
    }
    if openai_path {
        return openai::reshape_error(response).await;
    }
    response
}

async fn health(State(state): State<Shared>) -> Response {
    let demo_model = state.config.demo_model;
    match state.services.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(wire::Health {
                status: "loading".into(),
                demo_model,
                llm: None,
                embedder: None,
                index: None,
                queue: None,
            }),
        )
            .into_response(),
        Some(s) => {
            let status = s.assistant.status();
            axum::Json(wire::Health {
                status: "ok".into(),
                demo_model,
                llm: Some(s.llm_name.clone()),
                embedder: Some(s.embedder_name.clone()),
                index: Some(wire::HealthIndex {
                    chunks: status.chunks,
                    files: status.files,
                    generation: status.generation,
                }),
                queue: Some(wire::HealthQueue {
                    waiting: status.queue_waiting,
                    depth: status.queue_depth,
                }),
            })
            .into_response()
        }
    }
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let answers = state
        .services
        .get()
        .map(|s| s.assistant.metrics().gather())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(answers),
    )
        .into_response()
}

/// The OpenAPI document, generated once from the wire types.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        openapi::document()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// An error response made outside our handlers (axum's 405, a path that does not parse, ...) gets the
/// documented JSON body; its status and other headers (e.g. `Allow`) are kept.
async fn json_error_body(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ErrorCode>().is_some()
        || is_json
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|m| !m.is_empty());
    let (code, fallback) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this method is not allowed here; see /openapi.json",
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such route; see /openapi.json"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "request headers are too large")
        }
        s if s.is_server_error() => ("internal", "internal error; see the server log"),
        _ => ("bad_request", "the request is malformed"),
    };
    let message = match (status.is_server_error(), detail) {
        (false, Some(d)) => crate::logsafe::truncate_chars(&d, 300),
        _ => fallback.to_string(),
    };
    let mut fixed = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// The chat page's Content-Security-Policy: only its own inline script and style (by hash) and calls
/// to this server; no framing.
pub fn chat_page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash_between = |open: &str, close: &str| {
            use base64::Engine;
            use sha2::Digest;
            let start = CHAT_HTML.find(open).map_or(0, |i| i + open.len());
            let end = CHAT_HTML[start..].find(close).map_or(start, |i| start + i);
            let digest = sha2::Sha256::digest(&CHAT_HTML.as_bytes()[start..end]);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_between("<script>", "</script>"),
            hash_between("<style>", "</style>"),
        )
    })
}

async fn chat_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, chat_page_csp()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CHAT_HTML,
    )
        .into_response()
}

async fn method_not_allowed(State(state): State<Shared>, request: Request) -> ApiError {
    extract::drain(request.into_body(), state.config.body_read_timeout).await;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here; see /openapi.json",
    )
}

async fn not_found(State(state): State<Shared>, request: Request) -> ApiError {
    extract::drain(request.into_body(), state.config.body_read_timeout).await;
    ApiError::not_found("no such route; see /openapi.json")
}

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Makes the loaded services available: `/health` turns 200 and the API answers.
    pub fn set_ready(&self, services: Services) {
        let _ = self.state.services.set(services);
    }

    /// Enables the knowledge-base management routes (documents, reindex).
    pub fn set_documents(&self, documents: Arc<crate::assistant::documents::Documents>) {
        let _ = self.state.documents.set(documents);
    }

    /// Stops accepting, lets in-flight requests finish for up to the shutdown timeout.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let timeout = self.state.config.shutdown_timeout;
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(_) => tracing::info!("server stopped"),
            Err(_) => {
                tracing::warn!(
                    ?timeout,
                    "in-flight requests did not finish in time; stopping"
                );
                self.task.abort();
            }
        }
    }

    /// Waits until the server stops by itself (it only does on an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Starts serving on `listener` in the loading state.
pub fn start(listener: TcpListener, config: ServerConfig) -> Result<RunningServer, std::io::Error> {
    let addr = listener.local_addr()?;
    let metrics = Metrics::new().map_err(std::io::Error::other)?;
    let limits = ConnectionLimits {
        max_connections: config.max_connections.max(1),
        header_read_timeout: config.header_read_timeout,
    };
    let loopback_only =
        config.api_keys.is_empty() && config.admin_keys.is_empty() && addr.ip().is_loopback();
    let state = Arc::new(AppState {
        loopback_only,
        config,
        services: OnceLock::new(),
        embeddings: Arc::new(Semaphore::new(openai::EMBEDDINGS_IN_PROGRESS)),
        metrics,
        documents: OnceLock::new(),
    });
    let app = router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_connections(listener, app, rx, limits));
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

#[derive(Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_read_timeout: Duration,
}

/// Accepts connections until `stop`, at most `max_connections` at a time, each served by hyper's
/// HTTP/1 with a header read timeout; then lets the open ones finish their requests.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    mut stop: oneshot::Receiver<()>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    // Every connection task holds a sender: `recv` returns `None` once all of them have finished.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(HYPER_MAX_HEADERS)
                .max_buf_size(HYPER_MAX_BUF_BYTES);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
    Ok(())
}
