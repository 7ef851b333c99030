//! Request bodies: JSON only (415 otherwise), size-limited (413 as JSON, not plain text), with a UTF-8
//! byte-order mark accepted (1C sends one), and parse errors as 400 with the reason.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
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
    if declared_len.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let is_json = content_type.starts_with("application/json")
        || (content_type.starts_with("application/") && content_type.contains("+json"));
    if !is_json && !(empty_ok && (content_type.is_empty() || declared_len == Some(0))) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    Ok(bytes.to_vec())
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(strip_bom(bytes))
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}
