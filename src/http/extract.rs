//! Request bodies: JSON only (415 otherwise), size-limited (413 as JSON, not plain text), with a UTF-8
//! byte-order mark accepted (1C sends one), and parse errors as 400 with the reason.

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
        let bytes = body_bytes(req, state, false).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON body that may also be absent (empty body, any or no content type).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Shared> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state, true).await?;
        if strip_bom(&bytes).iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalJsonBody(None));
        }
        parse(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

async fn body_bytes(req: Request, state: &Shared, empty_ok: bool) -> Result<Vec<u8>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let is_json = content_type.starts_with("application/json")
        || (content_type.starts_with("application/") && content_type.contains("+json"));
    if !is_json && !(empty_ok && (content_type.is_empty() || declared_len == Some(0))) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ));
    }
    // Read the whole body (up to a hard cap) even when it is too large, so the client has finished
    // sending before it gets the 413: answering mid-upload makes many clients see a broken pipe
    // instead of the JSON error.
    let mut bytes = Vec::with_capacity(declared_len.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        seen += chunk.len();
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(bytes)
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
