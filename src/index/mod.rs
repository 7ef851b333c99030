//! The knowledge base on disk: files of the data folder, chunked, embedded and published as an
//! immutable *generation* (chunk store + usearch index + manifest) that `CURRENT` points to.
//!
//! - Incremental: chunks and vectors of files whose content hash did not change are copied from the
//!   previous generation; only new or edited files are embedded; deleted files drop out.
//! - Atomic: a new generation is written beside the old one and published by renaming `CURRENT`, so a
//!   crash or kill mid-run leaves the previous generation intact and serving.
//! - Exclusive: a lock file refuses a second concurrent run.
//! - Live: a running server holds a lease on the generation it answers from and switches to a newly
//!   published one by itself; a run deletes only older generations that no server holds
//!   (see [`generations`]).
//! - Checked: the manifest records the embedder and chunking; loading with other settings is an error
//!   that asks for a rebuild.

pub mod bm25;
mod build;
pub mod chunk;
pub mod documents;
pub mod extract;
mod fusion;
pub mod generations;
mod knowledge_base;
mod library;
pub mod store;
mod vectors;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
pub use build::{build_index, IndexJob, IndexReport, Progress};
use chunk::ChunkSettings;
pub use fusion::Fusion;
pub use generations::{current_generation, Cleanup, GenerationWatcher, Lease};
pub use knowledge_base::{CandidateScores, Hit, KnowledgeBase, SearchResult, TermStats};
pub use library::{DocumentError, DocumentInfo, DocumentStatus, Library, LibraryChange};

const FORMAT_VERSION: u32 = 2;
const CURRENT: &str = "CURRENT";
const LOCK: &str = "index.lock";
const MANIFEST: &str = "manifest.json";
const CHUNKS: &str = "chunks.sqlite";
const VECTORS: &str = "vectors.usearch";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("no knowledge-base index in {0}: build one with `novapay index --data <folder> --index-dir {0}`")]
    NoIndex(PathBuf),
    #[error("the index in {dir} was built with {built}, but novapay is configured with {configured}; rebuild it with `novapay index --rebuild --index-dir {dir}`")]
    Mismatch {
        dir: PathBuf,
        built: String,
        configured: String,
    },
    #[error("another `novapay index` is running on {0} (lock file {0}/index.lock); wait for it to finish")]
    Locked(PathBuf),
    #[error("data folder {0} does not exist or is not a folder")]
    NoData(PathBuf),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("index storage error: {0}")]
    Storage(String),
    #[error("indexing stopped by injected failure after {0} files")]
    InjectedFailure(usize),
}

pub(crate) fn storage<E: std::fmt::Display>(e: E) -> IndexError {
    IndexError::Storage(e.to_string())
}

/// What an index was built with; loading with different settings needs a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSettings {
    pub format: u32,
    pub embedder: String,
    pub dimensions: usize,
    pub max_length: usize,
    pub passage_prefix: String,
    pub chunk: ChunkSettings,
}

impl IndexSettings {
    pub fn new(embedder: &Embedder, passage_prefix: &str, chunk: ChunkSettings) -> Self {
        Self {
            format: FORMAT_VERSION,
            embedder: embedder.name.clone(),
            dimensions: embedder.dim(),
            max_length: embedder.max_length(),
            passage_prefix: passage_prefix.to_string(),
            chunk,
        }
    }

    fn describe(&self) -> String {
        format!(
            "embedder `{}` ({} dims, prefix {:?}), chunks of {} tokens with {} overlap, format {}",
            self.embedder,
            self.dimensions,
            self.passage_prefix,
            self.chunk.max_tokens,
            self.chunk.overlap_tokens,
            self.format
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub hash: String,
    pub chunks: usize,
    /// When this content was embedded (Unix seconds); 0 in manifests from before it was recorded.
    #[serde(default)]
    pub indexed_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub settings: IndexSettings,
    pub generation: String,
    pub created_unix: u64,
    pub files: BTreeMap<String, FileEntry>,
    pub chunks: usize,
    /// Files of the data folder that could not be read, with the reason (not indexed).
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
}
