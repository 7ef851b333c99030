//! The one place that maps errors to HTTP statuses and the JSON error body
//! `{"error": {"code", "message"}}`. Details of 5xx errors are logged, not sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::memory::MemoryError;
use crate::rag::RagError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn loading() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                "models and index are still loading; retry shortly",
            )
        }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(
            error = %crate::logsafe::user_text(&detail.to_string()),
            "internal error"
        );
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response
            .extensions_mut()
            .insert(super::ErrorCode(self.code));
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded { .. } => Self {
                retry_after_secs: Some(2),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string())
            },
            EngineError::InvalidInput(m) => Self::bad_request("invalid_request", m),
            EngineError::ContextOverflow { .. } => {
                Self::bad_request("context_overflow", e.to_string())
            }
            EngineError::Unavailable(_) => Self {
                retry_after_secs: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the model is unavailable",
                )
            },
            other => Self::internal(other),
        }
    }
}

impl From<MemoryError> for ApiError {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::InvalidSessionId(m) => Self::bad_request("invalid_session_id", m),
            MemoryError::Unavailable(detail) => {
                tracing::error!(
                    error = %crate::logsafe::user_text(&detail),
                    "conversation storage unavailable"
                );
                Self {
                    retry_after_secs: Some(5),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "conversation storage is unavailable; retry shortly",
                    )
                }
            }
        }
    }
}

impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        match e {
            RagError::Engine(e) => e.into(),
            RagError::Memory(e) => e.into(),
            RagError::InvalidQuestion(m) => Self::bad_request("invalid_query", m),
            RagError::Retrieval(m) => Self::internal(m),
        }
    }
}
