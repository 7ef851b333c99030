//! Retrieval quality on public data sets: BEIR (nDCG@10, recall@10/100, computed as BEIR/pytrec_eval
//! do) and doc2dial (recall@5 of the gold passage with and without the dialogue history); the
//! answerability gate's refusal curves; and a knowledge base's own regression questions.

pub mod answerability;
pub mod answers;
pub mod beir;
pub mod doc2dial;
pub mod metrics;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {reason}")]
    Data { path: String, reason: String },
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<Vec<T>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Data {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::Data {
                path: path.display().to_string(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Embeds passages in groups of 256 so the progress callback moves; the embedder sorts by length within
/// each group.
pub(crate) fn embed_passages_with_progress(
    embedder: &crate::embed::Embedder,
    texts: &[String],
    what: &str,
    progress: &dyn Fn(&str, usize, usize),
) -> Result<Vec<Vec<f32>>, EvalError> {
    const GROUP: usize = 256;
    let mut vectors = Vec::with_capacity(texts.len());
    for group in texts.chunks(GROUP) {
        vectors.extend(
            embedder
                .embed_passages(group)
                .map_err(|e| EvalError::Failed(e.to_string()))?,
        );
        progress(what, vectors.len(), texts.len());
    }
    Ok(vectors)
}
