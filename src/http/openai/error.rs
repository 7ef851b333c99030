//! Errors of the OpenAI-compatible API: `{"error": {"message", "type", "param", "code"}}` with
//! OpenAI's status codes, for our handlers and for every other error response of a `/v1/` path.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::http::ErrorCode;
use crate::logsafe;

/// An error of this API: the shared [`ApiError`] plus the request field it is about.
#[derive(Debug)]
pub struct OpenAiError {
    pub(super) error: ApiError,
    pub(super) param: Option<&'static str>,
}

impl OpenAiError {
    pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: ApiError::bad_request("invalid_value", message),
            param: Some(param),
        }
    }

    pub(super) fn unknown_model(given: &str, served: &str) -> Self {
        Self {
            error: ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "the model `{}` does not exist here: use `{served}` (see GET /v1/models)",
                    logsafe::truncate_chars(given, 100)
                ),
            ),
            param: Some("model"),
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

impl From<crate::assistant::AnswerError> for OpenAiError {
    fn from(e: crate::assistant::AnswerError) -> Self {
        let invalid = matches!(
            e,
            crate::assistant::AnswerError::InvalidQuestion(_)
                | crate::assistant::AnswerError::ContextOverflow(_)
        );
        Self {
            error: e.into(),
            param: invalid.then_some("messages"),
        }
    }
}

/// The request field an error is about, for [`reshape_error`].
#[derive(Clone, Copy)]
struct ErrorParam(&'static str);

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(p) = self.param {
            response.extensions_mut().insert(ErrorParam(p));
        }
        response
    }
}

/// OpenAI's `type` and `code` for one of our errors.
pub(super) fn openai_kind(status: StatusCode, code: &str) -> (&'static str, String) {
    let kind = match status.as_u16() {
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let code = match code {
        "unauthorized" => "invalid_api_key",
        "overloaded" => "rate_limit_exceeded",
        other => other,
    };
    (kind, code.to_string())
}

/// Rewrites an error response of a `/v1/` path (ours, the auth layer's or axum's, already in the
/// `{"error": {"code", "message"}}` shape) into OpenAI's shape; status and headers (Retry-After,
/// WWW-Authenticate) are kept. Successful responses pass unchanged.
pub(crate) async fn reshape_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let param = response.extensions().get::<ErrorParam>().map(|p| p.0);
    let known_code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    let (mut parts, body) = response.into_parts();
    let parsed: Value = axum::body::to_bytes(body, 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let message = parsed["error"]["message"]
        .as_str()
        .unwrap_or("the request failed")
        .to_string();
    let code = known_code
        .map(str::to_string)
        .or_else(|| parsed["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "error".into());
    let (kind, code) = openai_kind(status, &code);
    let body = json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The body of every error of a `/v1/` path (documentation; built by [`reshape_error`]).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// invalid_request_error, rate_limit_error or server_error.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field the error is about.
    pub param: Option<String>,
    /// invalid_api_key, model_not_found, rate_limit_exceeded, invalid_value, ...
    pub code: String,
}
