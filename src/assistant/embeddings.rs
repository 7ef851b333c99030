//! The sentence embedder offered to callers who build their own search (the OpenAI-compatible
//! `/v1/embeddings`): the same vectors the knowledge base is indexed with, with the model's query or
//! passage prefix, and the word pieces each text costs. A text longer than the model reads is refused
//! rather than silently cut, so that a caller never stores a vector of half a document.

use super::Assistant;

/// What the texts are: e5-style models embed search queries and the passages searched differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextKind {
    Query,
    #[default]
    Passage,
}

/// The embedding model as callers see it.
#[derive(Debug, Clone)]
pub struct EmbeddingModel {
    pub name: String,
    pub dimensions: usize,
    /// Word pieces a text may have at most (prefix and special tokens included).
    pub max_tokens: usize,
}

/// Unit-length vectors in input order, and the word pieces read.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("input {index} is longer than the {max} tokens the embedding model reads; split it")]
    TooLong { index: usize, max: usize },
    #[error("embedding failed: {0}")]
    Failed(String),
}

impl Assistant {
    pub fn embedding_model(&self) -> EmbeddingModel {
        EmbeddingModel {
            name: self.embedder.name.clone(),
            dimensions: self.embedder.dim(),
            max_tokens: self.embedder.max_length(),
        }
    }

    /// Embeds `texts` as `kind`. Blocking (runs the model).
    pub fn embed_texts(
        &self,
        texts: &[String],
        kind: TextKind,
    ) -> Result<Embedded, EmbeddingError> {
        let prefix = match kind {
            TextKind::Query => self.embedder.query_prefix(),
            TextKind::Passage => self.embedder.passage_prefix(),
        };
        let prefixed: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let max = self.embedder.max_length();
        let mut tokens = 0;
        for (index, text) in prefixed.iter().enumerate() {
            // The tokenizer truncates at the model's length; what it cut off is in `overflowing`.
            let encoding = self
                .embedder
                .tokenizer()
                .encode(text.as_str(), true)
                .map_err(|e| EmbeddingError::Failed(format!("tokenizer: {e}")))?;
            if !encoding.get_overflowing().is_empty() {
                return Err(EmbeddingError::TooLong { index, max });
            }
            tokens += encoding
                .get_attention_mask()
                .iter()
                .filter(|&&m| m == 1)
                .count();
        }
        let vectors = self
            .embedder
            .embed(&prefixed)
            .map_err(|e| EmbeddingError::Failed(e.to_string()))?;
        Ok(Embedded { vectors, tokens })
    }
}
