//! The HTTP service: routes, JSON, SSE, auth, limits, metrics and the web chat page. It talks to the
//! engine only through `rag::Assistant` and never names candle, usearch or SQLite types.
//!
//! Start-up order: the listener serves `/health` as "loading" at once; the caller loads models and the
//! index on a blocking thread and hands them over with [`RunningServer::set_ready`].

mod api;
pub mod auth;
mod bitrix24;
pub mod error;
mod extract;
pub mod metrics;
pub mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::integrations::bitrix24::WebhookHandler;
use crate::rag::Assistant;
use error::ApiError;
use metrics::Metrics;

pub const OPENAPI_JSON: &str = include_str!("openapi.json");
pub const CHAT_HTML: &str = include_str!("static/index.html");

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required on every non-public route when not empty.
    pub api_keys: Vec<String>,
    /// Allowed CORS origins; `*` allows any; empty disables CORS.
    pub cors_origins: Vec<String>,
    /// A generation that runs longer answers 504 (and is cancelled).
    pub generation_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// Log the customer's question text at info level (masked card numbers).
    pub log_queries: bool,
    /// The Bitrix24 event handler, when the integration runs in handler mode.
    pub bitrix24: Option<Arc<WebhookHandler>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            cors_origins: Vec::new(),
            generation_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            log_queries: false,
            bitrix24: None,
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
    pub metrics: Metrics,
}

impl AppState {
    pub fn services(&self) -> Result<&Services, ApiError> {
        self.services.get().ok_or_else(ApiError::loading)
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

/// Auth on non-public routes, then request counting by route and status.
async fn observe(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Bitrix24 cannot send an API key; its events are checked against the application token.
    let public = routes::PUBLIC.contains(&route.as_str())
        || route == routes::BITRIX24_EVENTS
        || route == "unmatched";
    let response = if !public
        && request.method() != Method::OPTIONS
        && !auth::authorized(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            &state.config.api_keys,
        ) {
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
    } else {
        next.run(request).await
    };
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.metrics.errors.with_label_values(&[code.0]).inc();
    }
    response
}

async fn health(State(state): State<Shared>) -> Response {
    match state.services.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "loading" })),
        )
            .into_response(),
        Some(s) => {
            let kb = s.assistant.knowledge_base();
            let llm = s.assistant.llm();
            axum::Json(serde_json::json!({
                "status": "ok",
                "llm": s.llm_name,
                "embedder": s.embedder_name,
                "index": {
                    "chunks": kb.len(),
                    "files": kb.manifest.files.len(),
                    "generation": kb.manifest.generation,
                },
                "queue": { "waiting": llm.queued(), "depth": llm.info().queue_depth },
            }))
            .into_response()
        }
    }
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    if let Some(s) = state.services.get() {
        state
            .metrics
            .queue_depth
            .set(s.assistant.llm().queued() as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn chat_page() -> Html<&'static str> {
    Html(CHAT_HTML)
}

async fn not_found() -> ApiError {
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
    let state = Arc::new(AppState {
        config,
        services: OnceLock::new(),
        metrics,
    });
    let app = router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

/// Replaces card-number-like digit runs (13-19 digits, spaces or dashes allowed) before logging.
pub fn mask_card_numbers(text: &str) -> String {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"\b(?:\d[ -]?){12,18}\d\b").expect("valid card-number regex")
    });
    re.replace_all(text, "[card number]").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_and_amounts_are_not() {
        assert_eq!(
            mask_card_numbers("my card 4111 1111 1111 1111 was charged $1,000"),
            "my card [card number] was charged $1,000"
        );
        assert_eq!(mask_card_numbers("4111-1111-1111-1111"), "[card number]");
        assert_eq!(mask_card_numbers("order 123456"), "order 123456");
    }
}
