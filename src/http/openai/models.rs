//! `GET /v1/models`: the chat model `novapay` and the embedding model `novapay-embeddings`.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{unix_now, OpenAiError, CHAT_MODEL, EMBEDDING_MODEL};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: &'static str,
    pub object: &'static str,
    /// When this server started (the models have no release date of their own).
    pub created: u64,
    pub owned_by: &'static str,
}

fn models() -> [ModelObject; 2] {
    static STARTED: OnceLock<u64> = OnceLock::new();
    let created = *STARTED.get_or_init(unix_now);
    [CHAT_MODEL, EMBEDDING_MODEL].map(|id| ModelObject {
        id,
        object: "model",
        created,
        owned_by: "novapay",
    })
}

pub async fn list_models() -> Response {
    Json(json!({ "object": "list", "data": models() })).into_response()
}

pub async fn get_model(Path(id): Path<String>) -> Result<Response, OpenAiError> {
    models()
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| Json(m).into_response())
        .ok_or_else(|| OpenAiError::unknown_model(&id, CHAT_MODEL))
}
