//! The one place that maps errors to HTTP statuses and the JSON error body
//! `{"error": {"code", "message"}}`. Details of 5xx errors are logged, not sent.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::wire::{ErrorBody, ErrorDetail};
use super::{extract, Shared};
use crate::assistant::AnswerError;
use crate::integrations::bitrix24::Bitrix24Error;

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
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        })
        .unwrap_or_default()
    }
}

/// Runs blocking work (SQLite, index files, the embedder) off the async workers; a task that
/// panicked is an internal error.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// The one mapping of the answering service's errors to statuses: what the caller should do decides
/// the status (fix the request: 4xx; retry later: 429/503 with `Retry-After`).
impl From<AnswerError> for ApiError {
    fn from(e: AnswerError) -> Self {
        let status = match &e {
            AnswerError::InvalidQuestion(_)
            | AnswerError::InvalidSession(_)
            | AnswerError::InvalidUserId(_)
            | AnswerError::ContextOverflow(_) => StatusCode::BAD_REQUEST,
            AnswerError::UnknownSession(_) => StatusCode::NOT_FOUND,
            AnswerError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            AnswerError::StorageUnavailable(detail) => {
                tracing::error!(
                    error = %crate::logsafe::user_text(detail),
                    "conversation storage unavailable"
                );
                StatusCode::SERVICE_UNAVAILABLE
            }
            AnswerError::ModelUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AnswerError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AnswerError::Internal(detail) => return Self::internal(detail),
        };
        Self {
            retry_after_secs: e.retry_after().map(|d| d.as_secs()),
            ..Self::new(status, e.code(), e.to_string())
        }
    }
}

impl From<crate::assistant::documents::DocumentError> for ApiError {
    fn from(e: crate::assistant::documents::DocumentError) -> Self {
        use crate::assistant::documents::DocumentError as D;
        let message = e.to_string();
        match e {
            D::InvalidName(_) => Self::bad_request("invalid_document_name", message),
            D::Unsupported(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_document_type",
                message,
            ),
            D::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            D::Unreadable { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unreadable_document",
                message,
            ),
            D::NotFound(_) => Self::not_found(message),
            D::Busy => Self {
                retry_after_secs: Some(10),
                ..Self::new(StatusCode::CONFLICT, "indexing_busy", message)
            },
            D::Index(_) | D::Storage(_) => Self::internal(message),
        }
    }
}

/// The audit log could not be written: the read is not served (the details go to the log).
impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        Self::internal(e)
    }
}

/// A Bitrix24 event that was refused: the portal sees 401 or 400, anything else is ours (500).
impl From<Bitrix24Error> for ApiError {
    fn from(e: Bitrix24Error) -> Self {
        match e {
            // Logged (with a hash of the token only) where it was refused.
            Bitrix24Error::Unauthorized(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            Bitrix24Error::BadEvent(m) => ApiError::bad_request("bad_event", m),
            other => ApiError::internal(other),
        }
    }
}

/// The error code of an error response, for the metrics middleware.
#[derive(Clone, Copy)]
pub(crate) struct ErrorCode(pub &'static str);

/// An error response made outside our handlers (axum's 405, a path that does not parse, ...) gets the
/// documented JSON body; its status and other headers (e.g. `Allow`) are kept.
pub(super) async fn json_error_body(response: Response) -> Response {
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

pub(super) async fn method_not_allowed(State(state): State<Shared>, request: Request) -> ApiError {
    extract::drain(request.into_body(), state.config.body_read_timeout).await;
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here; see /openapi.json",
    )
}

pub(super) async fn not_found(State(state): State<Shared>, request: Request) -> ApiError {
    extract::drain(request.into_body(), state.config.body_read_timeout).await;
    ApiError::not_found("no such route; see /openapi.json")
}
