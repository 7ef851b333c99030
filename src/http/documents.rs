//! Knowledge-base management routes, for administrator keys only: `GET/POST /api/v1/documents`,
//! `DELETE /api/v1/documents/{name}`, `POST /api/v1/reindex`. Thin: the upload is read and unpacked
//! here, everything else is `rag::documents`.
//!
//! Logged: the caller's key fingerprint, the document name and size, the outcome. Never the content.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::extract::{raw_body, unsupported};
use super::Shared;
use crate::assistant::documents::Documents;
use crate::logsafe;

/// Room for the multipart framing around the file.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The management service, for an administrator; 403 for any other key.
fn admin_documents(state: &Shared, caller: &Caller) -> Result<Arc<Documents>, ApiError> {
    if !caller.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "managing the knowledge base needs an administrator key (NOVAPAY_ADMIN_KEYS)",
        ));
    }
    state.services()?;
    state.documents.get().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "knowledge-base management is not enabled on this server",
        )
    })
}

pub async fn list(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let documents = admin_documents(&state, &caller)?;
    let generation = state
        .services()?
        .assistant
        .knowledge_base()
        .manifest
        .generation
        .clone();
    let listed = blocking(move || Ok(documents.list())).await?;
    Ok(Json(json!({ "generation": generation, "documents": listed })).into_response())
}

/// `multipart/form-data` with the document in the field `file` (its file name is the document's
/// name). 201 once new questions are answered with it.
pub async fn upload(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let documents = match admin_documents(&state, &caller) {
        Ok(d) => d,
        Err(e) => {
            super::extract::drain(request.into_body(), state.config.body_read_timeout).await;
            return Err(e);
        }
    };
    let limit = documents.max_document_bytes();
    let (content_type, body) = raw_body(request, &state, limit + MULTIPART_OVERHEAD).await?;
    let boundary = multer::parse_boundary(&content_type).map_err(|_| {
        unsupported("send the document as multipart/form-data with the field `file`")
    })?;
    let (name, bytes) = file_field(body, boundary, limit).await?;
    let shown = logsafe::truncate_chars(&name, 120);
    let size = bytes.len();
    let change = blocking(move || Ok(documents.put(&name, &bytes)?)).await;
    match &change {
        Ok(c) => {
            tracing::info!(caller = %caller.owner, document = %shown, size, chunks = c.chunks, generation = %c.report.generation, "document uploaded")
        }
        Err(e) => {
            tracing::warn!(caller = %caller.owner, document = %shown, size, error = %e.message, "document upload refused")
        }
    }
    let change = change?;
    Ok((StatusCode::CREATED, Json(change)).into_response())
}

/// The first part named `file`: its file name and content (at most `limit` bytes).
async fn file_field(
    body: Vec<u8>,
    boundary: String,
    limit: usize,
) -> Result<(String, Vec<u8>), ApiError> {
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body))
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let malformed = |e: multer::Error| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("malformed multipart body: {e}"),
        )
    };
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field
            .file_name()
            .map(str::to_string)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_document_name",
                    "the `file` part has no file name (Content-Disposition: form-data; name=\"file\"; filename=\"fees.md\")",
                )
            })?;
        let bytes = field.bytes().await.map_err(malformed)?;
        if bytes.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the document is larger than {limit} bytes (NOVAPAY_MAX_UPLOAD_BYTES)"),
            ));
        }
        return Ok((name, bytes.to_vec()));
    }
    Err(ApiError::bad_request(
        "missing_file",
        "no `file` field in the multipart body",
    ))
}

pub async fn delete(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let documents = admin_documents(&state, &caller)?;
    let shown = logsafe::truncate_chars(&name, 120);
    let change = blocking(move || Ok(documents.delete(&name)?)).await?;
    tracing::info!(caller = %caller.owner, document = %shown, generation = %change.report.generation, "document deleted");
    Ok(Json(json!({ "deleted": true, "change": change })).into_response())
}

pub async fn reindex(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let documents = admin_documents(&state, &caller)?;
    let change = blocking(move || Ok(documents.reindex("reindex request")?)).await?;
    tracing::info!(caller = %caller.owner, generation = %change.report.generation, embedded = change.report.chunks_embedded, "knowledge base re-indexed");
    Ok(Json(change).into_response())
}
