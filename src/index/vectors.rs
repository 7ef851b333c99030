//! The vector index of a generation: the chunks' embeddings in usearch (cosine, f16), written by
//! [`super::build`] and searched by [`super::KnowledgeBase`]. The only module that names usearch.

use std::path::Path;
use std::sync::Mutex;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{storage, IndexError};

/// Below this many chunks, exact search is a few milliseconds and has perfect recall.
const EXACT_SEARCH_MAX: usize = 20_000;

/// Embeddings keyed by chunk id (0..n).
pub struct VectorIndex {
    // usearch's searches need a thread slot each; one search at a time keeps within them.
    index: Mutex<Index>,
}

impl VectorIndex {
    /// An empty index for `capacity` vectors of `dimensions`.
    pub fn new(dimensions: usize, capacity: usize) -> Result<Self, IndexError> {
        let options = IndexOptions {
            dimensions,
            metric: MetricKind::Cos,
            // f16 halves the file at the same recall as f32 (measured on MiniLM vectors).
            quantization: ScalarKind::F16,
            connectivity: 0,
            expansion_add: 0,
            expansion_search: 0,
            multi: false,
        };
        let index = Index::new(&options).map_err(storage)?;
        index.reserve(capacity.max(1)).map_err(storage)?;
        Ok(Self {
            index: Mutex::new(index),
        })
    }

    /// An index with `vectors` under keys 0..n.
    pub fn from_vectors<V: AsRef<[f32]>>(
        dimensions: usize,
        vectors: &[V],
    ) -> Result<Self, IndexError> {
        let index = Self::new(dimensions, vectors.len())?;
        {
            let inner = index.lock()?;
            for (key, v) in vectors.iter().enumerate() {
                inner.add(key as u64, v.as_ref()).map_err(storage)?;
            }
        }
        Ok(index)
    }

    /// Reads a saved index (mutable copy in memory, not a memory-mapped view).
    pub fn restore(path: &Path) -> Result<Self, IndexError> {
        let index = Index::restore(&path.to_string_lossy()).map_err(storage)?;
        Ok(Self {
            index: Mutex::new(index),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        self.lock()?.save(&path.to_string_lossy()).map_err(storage)
    }

    /// Vectors held.
    pub fn size(&self) -> usize {
        self.lock().map(|i| i.size()).unwrap_or(0)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Index>, IndexError> {
        self.index
            .lock()
            .map_err(|_| IndexError::Storage("a previous vector search panicked".into()))
    }

    /// (chunk id, cosine similarity), best first; empty when the search fails.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let Ok(index) = self.lock() else {
            return Vec::new();
        };
        let k = k.min(index.size());
        if k == 0 {
            return Vec::new();
        }
        let result = if index.size() <= EXACT_SEARCH_MAX {
            index.exact_search(query, k)
        } else {
            index.search(query, k)
        };
        match result {
            Ok(m) => m
                .keys
                .iter()
                .zip(&m.distances)
                .map(|(key, dist)| (*key as usize, 1.0 - dist))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
