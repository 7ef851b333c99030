//! What every handler shares: the server's settings, the loaded services (set once loading ends) and
//! the per-server state (metrics, the embeddings admission, the loopback-only rule).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::metrics::Metrics;
use crate::assistant::Assistant;
use crate::integrations::bitrix24::WebhookHandler;

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
    /// Where administrators' reads of customer data and erasures are recorded (`None`: nowhere,
    /// for tests; `serve` always opens one).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
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
            audit: None,
        }
    }
}

/// What `/health` reports and the handlers use once loaded.
pub struct Services {
    pub assistant: Arc<Assistant>,
    pub llm_name: String,
    pub embedder_name: String,
    /// The model files matched the models lock at start (false: started without a lock, allowed by
    /// the operator).
    pub models_pinned: bool,
}

pub struct AppState {
    pub config: ServerConfig,
    pub(super) services: OnceLock<Services>,
    /// `/v1/embeddings` requests in progress (each runs the embedder on up to 64 texts).
    pub(super) embeddings: Arc<Semaphore>,
    pub metrics: Metrics,
    /// No API keys and a loopback address: only requests addressed to a loopback name reach the API
    /// (see `host`).
    pub(super) loopback_only: bool,
    /// Knowledge-base management, when the server knows its data folder.
    pub(super) documents: OnceLock<Arc<crate::assistant::documents::Documents>>,
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
