//! The OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`) for Open WebUI,
//! LibreChat, LangChain and the `openai` SDKs: a thin adapter over `rag`'s grounded answer and its
//! embedder, speaking OpenAI's request, response, stream-chunk and error shapes.
//!
//! Stateless, as OpenAI clients expect: the last user message is the question, the earlier user and
//! assistant messages are the history, and nothing is written to the conversation memory (the client
//! keeps the conversation and sends it again each time). The client's system messages are ignored:
//! the grounded prompt is the server's. Sources come back as numbered citations under the text and in
//! the `novapay` extension field of the response (of the last chunk when streaming).

pub(crate) mod chat;
pub(crate) mod embeddings;
pub(crate) mod error;
pub(crate) mod models;

use axum::extract::{FromRequest, Request};

use super::error::ApiError;
use super::Shared;

pub use chat::chat_completions;
pub use embeddings::embeddings;
pub(crate) use error::reshape_error;
pub use error::OpenAiError;
pub use models::{get_model, list_models};

/// The one chat model served: the grounded assistant, whichever LLM runs underneath.
pub const CHAT_MODEL: &str = "novapay";
/// The embedding model served: the embedder the knowledge base is indexed with.
pub const EMBEDDING_MODEL: &str = "novapay-embeddings";
/// Messages in one chat request at most (only the last few turns are read).
pub const MAX_MESSAGES: usize = 256;
/// Characters in one earlier message at most (the question itself follows the REST API's rule).
pub const MAX_MESSAGE_CHARS: usize = 8_000;
/// Texts in one embeddings request at most.
pub const MAX_EMBEDDING_INPUTS: usize = 64;
/// Characters in one text to embed at most (checked before tokenizing; the model's own token limit
/// is checked after).
pub const MAX_EMBEDDING_INPUT_CHARS: usize = 16_000;
/// Request bodies of this API at most: clients send the whole conversation with every question.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Embeddings requests in progress at most (each runs the embedder on up to 64 texts).
pub const EMBEDDINGS_IN_PROGRESS: usize = 2;

/// A JSON body of up to [`MAX_BODY_BYTES`] (or the server's limit when larger).
pub struct OpenAiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<Shared> for OpenAiJson<T> {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        let limit = MAX_BODY_BYTES.max(state.config.max_body_bytes);
        Ok(OpenAiJson(
            super::extract::json_with_limit(req, state, limit).await?,
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OpenAiError> + Send + 'static,
) -> Result<T, OpenAiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpenAiError::from(ApiError::internal(e)))?
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
