//! `POST /v1/embeddings`: the knowledge base's embedder for callers building their own search.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{
    blocking, OpenAiError, OpenAiJson, EMBEDDING_MODEL, MAX_EMBEDDING_INPUTS,
    MAX_EMBEDDING_INPUT_CHARS,
};
use crate::assistant::embeddings::{EmbeddingError, TextKind};
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::Shared;
use crate::logsafe;

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// A string or an array of strings (token arrays are refused).
    #[serde(default)]
    pub input: Option<Value>,
    /// "float" (the default) or "base64" (little-endian f32, what the `openai` SDKs ask for).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Only the model's own dimension.
    #[serde(default)]
    pub dimensions: Option<i64>,
    /// novapay's extension: "query" (the default, also right for similarity between texts) or
    /// "passage" (documents to be searched), for models that embed them differently (e5).
    #[serde(default)]
    pub input_type: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

fn read_inputs(input: Option<Value>) -> Result<Vec<String>, OpenAiError> {
    let bad = |m: String| OpenAiError::invalid("input", m);
    let texts = match input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad(format!(
                    "input[{i}] is not a string (token arrays are not supported: send text)"
                ))),
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => return Err(bad("`input` is required".into())),
        Some(_) => return Err(bad("`input` must be a string or an array of strings".into())),
    };
    if texts.is_empty() {
        return Err(bad("`input` must not be empty".into()));
    }
    if texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(bad(format!(
            "at most {MAX_EMBEDDING_INPUTS} texts per request"
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(bad(format!("input[{i}] is empty")));
        }
        if t.chars().count() > MAX_EMBEDDING_INPUT_CHARS {
            return Err(bad(format!(
                "input[{i}] is longer than {MAX_EMBEDDING_INPUT_CHARS} characters"
            )));
        }
    }
    Ok(texts)
}

pub async fn embeddings(
    State(state): State<Shared>,
    Extension(_caller): Extension<Caller>,
    OpenAiJson(req): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, OpenAiError> {
    match req.model.as_deref() {
        None | Some("") => {
            return Err(OpenAiError::invalid(
                "model",
                format!("`model` is required: use `{EMBEDDING_MODEL}` (see GET /v1/models)"),
            ))
        }
        Some(EMBEDDING_MODEL) => {}
        Some(other) => return Err(OpenAiError::unknown_model(other, EMBEDDING_MODEL)),
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "encoding_format",
                "`encoding_format` must be \"float\" or \"base64\"",
            ))
        }
    };
    let kind = match req.input_type.as_deref() {
        None | Some("query") => TextKind::Query,
        Some("passage") | Some("document") => TextKind::Passage,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "input_type",
                "`input_type` must be \"query\" or \"passage\"",
            ))
        }
    };
    let texts = read_inputs(req.input)?;
    let services = state.services()?;
    let model = services.assistant.embedding_model();
    if let Some(d) = req.dimensions {
        if usize::try_from(d).ok() != Some(model.dimensions) {
            return Err(OpenAiError::invalid(
                "dimensions",
                format!(
                    "the embedding model has {} dimensions and cannot shorten them",
                    model.dimensions
                ),
            ));
        }
    }
    let _slot = state.admit_embeddings()?;
    let assistant = services.assistant.clone();
    let embedded = blocking(move || {
        assistant.embed_texts(&texts, kind).map_err(|e| match e {
            EmbeddingError::TooLong { .. } => OpenAiError::invalid("input", e.to_string()),
            EmbeddingError::Failed(m) => ApiError::internal(m).into(),
        })
    })
    .await?;
    tracing::debug!(
        texts = embedded.vectors.len(),
        tokens = embedded.tokens,
        user = %req.user.as_deref().map(logsafe::user_text).unwrap_or_default(),
        "embedded"
    );
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": EMBEDDING_MODEL,
        "usage": { "prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_inputs_are_strings_within_limits() {
        assert_eq!(read_inputs(Some(json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(read_inputs(Some(json!(["a", "b"]))).unwrap().len(), 2);
        for bad in [
            json!([1, 2, 3]),
            json!([]),
            json!(""),
            json!(7),
            json!(vec!["x"; MAX_EMBEDDING_INPUTS + 1]),
            json!("x".repeat(MAX_EMBEDDING_INPUT_CHARS + 1)),
        ] {
            assert!(read_inputs(Some(bad)).is_err());
        }
        assert!(read_inputs(None).is_err());
    }
}
