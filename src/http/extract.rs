//! Request bodies: JSON only (415 otherwise), size-limited (413 as JSON, not plain text), read within a
//! time limit (408), with a UTF-8 byte-order mark accepted (1C sends one), and parse errors as 400
//! with the reason. The body is read (or drained) before any refusal, so that a client still uploading
//! gets the JSON error instead of a broken pipe.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::Shared;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read_body(req, state, state.config.max_body_bytes).await?;
        if !is_json(&content_type) {
            return Err(unsupported("send JSON with Content-Type: application/json"));
        }
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON body of up to `limit` bytes (routes whose bodies are larger than the server's default).
pub async fn json_with_limit<T: DeserializeOwned>(
    req: Request,
    state: &Shared,
    limit: usize,
) -> Result<T, ApiError> {
    let (content_type, bytes) = read_body(req, state, limit).await?;
    if !is_json(&content_type) {
        return Err(unsupported("send JSON with Content-Type: application/json"));
    }
    parse(&bytes)
}

/// A JSON body that may also be absent (empty body, any or no content type).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Shared> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read_body(req, state, state.config.max_body_bytes).await?;
        if strip_bom(&bytes).iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalJsonBody(None));
        }
        if !is_json(&content_type) && !content_type.is_empty() {
            return Err(unsupported("send JSON with Content-Type: application/json"));
        }
        parse(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// A Bitrix24 event body (`application/x-www-form-urlencoded`), at most [`FORM_LIMIT`] bytes.
pub struct FormBody(pub Vec<u8>);

/// Bitrix24 events are a few kilobytes; a message is at most 20,000 characters (x9 percent-encoded).
pub const FORM_LIMIT: usize = 256 * 1024;

impl FromRequest<Shared> for FormBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let (content_type, bytes) = read_body(req, state, FORM_LIMIT).await?;
        if !(content_type.is_empty()
            || content_type.starts_with("application/x-www-form-urlencoded"))
        {
            return Err(unsupported(
                "Bitrix24 events are application/x-www-form-urlencoded",
            ));
        }
        Ok(FormBody(bytes))
    }
}

/// A raw request body of any type (the handler checks it), at most `limit` bytes: uploads.
pub async fn raw_body(
    req: Request,
    state: &Shared,
    limit: usize,
) -> Result<(String, Vec<u8>), ApiError> {
    read_body(req, state, limit).await
}

fn is_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
        || (content_type.starts_with("application/") && content_type.contains("+json"))
}

pub(crate) fn unsupported(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    )
}

/// The lower-cased content type and the body, up to `limit` bytes. A larger body is drained (up to
/// [`DRAIN_CAP`]) and answered 413; a body that does not arrive within the configured time is 408.
pub(super) async fn read_body(
    req: Request,
    state: &Shared,
    limit: usize,
) -> Result<(String, Vec<u8>), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut bytes = Vec::with_capacity(declared_len.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    let mut stream = req.into_body().into_data_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
            seen += chunk.len();
            if seen <= limit {
                bytes.extend_from_slice(&chunk);
            } else if seen > DRAIN_CAP {
                break;
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(state.config.body_read_timeout, read).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    state.config.body_read_timeout.as_secs()
                ),
            ))
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        ));
    }
    Ok((content_type, bytes))
}

/// Reads and discards a request body that is refused unread (401, 431, unknown route), up to
/// [`DRAIN_CAP`] and the body timeout, so that the client gets the answer instead of a broken pipe.
pub async fn drain(body: axum::body::Body, timeout: std::time::Duration) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_CAP {
                break;
            }
        }
    })
    .await;
}

/// Past this, an oversized upload is cut off rather than drained.
const DRAIN_CAP: usize = 16 * 1024 * 1024;

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(strip_bom(bytes))
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}
