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
pub mod chunk;
pub mod documents;
pub mod extract;
pub mod generations;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use usearch::{Index as VectorIndex, IndexOptions as VectorOptions, MetricKind, ScalarKind};

use crate::embed::Embedder;
use bm25::{Bm25Config, Bm25Index};
use chunk::{Chunk, ChunkSettings, Chunker};
use generations::LeaseRefused;
pub use generations::{current_generation, Cleanup, GenerationWatcher, Lease};
use store::StoredChunk;

const FORMAT_VERSION: u32 = 1;
const CURRENT: &str = "CURRENT";
const LOCK: &str = "index.lock";
const MANIFEST: &str = "manifest.json";
const CHUNKS: &str = "chunks.sqlite";
const VECTORS: &str = "vectors.usearch";
/// Below this many chunks, exact search is a few milliseconds and has perfect recall.
const EXACT_SEARCH_MAX: usize = 20_000;

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

fn storage<E: std::fmt::Display>(e: E) -> IndexError {
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub settings: IndexSettings,
    pub generation: String,
    pub created_unix: u64,
    pub files: BTreeMap<String, FileEntry>,
    pub chunks: usize,
}

#[derive(Debug, Clone)]
pub struct IndexJob {
    pub data_dir: PathBuf,
    pub index_dir: PathBuf,
    pub settings: IndexSettings,
    /// Re-embed everything even when files did not change.
    pub rebuild: bool,
    /// Test hook: fail after embedding this many changed files, before publishing.
    pub fail_after_files: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub generation: String,
    pub files: usize,
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: usize,
    pub removed: Vec<String>,
    /// Files that could not be read, with the reason; they are skipped.
    pub failed: Vec<(String, String)>,
    pub chunks: usize,
    pub chunks_embedded: usize,
    pub elapsed_ms: u64,
    /// Older generations deleted, and kept because a running server still answers from them.
    pub cleanup: Cleanup,
}

/// Progress of a run, for a progress bar: (chunks embedded so far, chunks to embed).
pub type Progress<'a> = &'a dyn Fn(usize, usize);

/// Builds and publishes a new generation. See the module docs for the guarantees.
pub fn build_index(
    job: &IndexJob,
    embedder: &Embedder,
    progress: Progress,
) -> Result<IndexReport, IndexError> {
    let started = Instant::now();
    if !job.data_dir.is_dir() {
        return Err(IndexError::NoData(job.data_dir.clone()));
    }
    std::fs::create_dir_all(&job.index_dir).map_err(storage)?;
    let lock = File::create(job.index_dir.join(LOCK)).map_err(storage)?;
    // The OS releases the lock if the process dies, so a crash never leaves the index locked.
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(IndexError::Locked(job.index_dir.clone()))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(storage(e)),
    }

    let previous = match read_current(&job.index_dir) {
        Ok(Some((manifest, dir))) if manifest.settings == job.settings && !job.rebuild => {
            let chunks = store::read(&dir.join(CHUNKS)).map_err(storage)?;
            Some((manifest, chunks))
        }
        _ => None,
    };
    let mut reusable: HashMap<(String, String), Vec<StoredChunk>> = HashMap::new();
    // Files of the current generation, even when its vectors cannot be reused (rebuild, new settings).
    let previous_files: BTreeMap<String, FileEntry> = match &previous {
        Some((m, _)) => m.files.clone(),
        None => read_current(&job.index_dir)
            .ok()
            .flatten()
            .map(|(m, _)| m.files)
            .unwrap_or_default(),
    };
    if let Some((_, chunks)) = previous {
        for c in chunks {
            reusable
                .entry((c.chunk.source.clone(), c.file_hash.clone()))
                .or_default()
                .push(c);
        }
    }

    let chunker = Chunker::new(embedder.tokenizer(), job.settings.chunk).map_err(storage)?;
    let mut report = IndexReport::default();
    let mut kept: Vec<StoredChunk> = Vec::new();
    let mut fresh: Vec<(String, String, Vec<Chunk>)> = Vec::new();
    let mut files = BTreeMap::new();
    for path in data_files(&job.data_dir) {
        let rel = relative(&job.data_dir, &path);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.failed.push((rel, e.to_string()));
                continue;
            }
        };
        let hash = hex(&Sha256::digest(&bytes));
        report.files += 1;
        if let Some(chunks) = reusable.remove(&(rel.clone(), hash.clone())) {
            report.unchanged += 1;
            files.insert(
                rel,
                FileEntry {
                    hash,
                    chunks: chunks.len(),
                },
            );
            kept.extend(chunks);
            continue;
        }
        match extract::extract(&path, &bytes) {
            Ok(doc) => {
                let chunks = chunker.chunk(&rel, &doc.text, doc.kind);
                if previous_files.contains_key(&rel) {
                    report.updated.push(rel.clone());
                } else {
                    report.added.push(rel.clone());
                }
                files.insert(
                    rel.clone(),
                    FileEntry {
                        hash: hash.clone(),
                        chunks: chunks.len(),
                    },
                );
                fresh.push((rel, hash, chunks));
            }
            Err(e) => report.failed.push((rel, e.to_string())),
        }
    }
    report.removed = previous_files
        .keys()
        .filter(|k| !files.contains_key(*k))
        .cloned()
        .collect();

    let total: usize = fresh.iter().map(|(_, _, c)| c.len()).sum();
    let mut done = 0;
    progress(0, total);
    for (n, (_, hash, chunks)) in fresh.into_iter().enumerate() {
        if job.fail_after_files == Some(n) {
            return Err(IndexError::InjectedFailure(n));
        }
        let texts: Vec<String> = chunks.iter().map(Chunk::search_text).collect();
        let vectors = embedder
            .embed_passages(&texts)
            .map_err(|e| IndexError::Embed(e.to_string()))?;
        done += chunks.len();
        progress(done, total);
        kept.extend(
            chunks
                .into_iter()
                .zip(vectors)
                .map(|(chunk, vector)| StoredChunk {
                    chunk,
                    file_hash: hash.clone(),
                    vector,
                }),
        );
    }
    report.chunks_embedded = total;
    report.chunks = kept.len();
    // Stable order: by source, then position.
    kept.sort_by(|a, b| {
        (a.chunk.source.as_str(), a.chunk.position)
            .cmp(&(b.chunk.source.as_str(), b.chunk.position))
    });

    let generation = format!(
        "gen-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        std::process::id()
    );
    let manifest = Manifest {
        settings: job.settings.clone(),
        generation: generation.clone(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files,
        chunks: kept.len(),
    };
    report.cleanup = publish(&job.index_dir, &manifest, &kept)?;
    report.generation = generation;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    drop(lock);
    Ok(report)
}

fn publish(
    index_dir: &Path,
    manifest: &Manifest,
    chunks: &[StoredChunk],
) -> Result<Cleanup, IndexError> {
    let dir = index_dir.join(&manifest.generation);
    std::fs::create_dir_all(&dir).map_err(storage)?;
    store::write(&dir.join(CHUNKS), chunks).map_err(storage)?;
    let vectors = new_vector_index(manifest.settings.dimensions, chunks.len())?;
    for (key, c) in chunks.iter().enumerate() {
        vectors.add(key as u64, &c.vector).map_err(storage)?;
    }
    vectors
        .save(&dir.join(VECTORS).to_string_lossy())
        .map_err(storage)?;
    write_synced(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(manifest)
            .map_err(storage)?
            .as_bytes(),
    )?;
    // The lease file exists before anyone can find the generation, so servers on a read-only volume
    // can lock it.
    write_synced(&dir.join(generations::LEASE), b"")?;
    sync_path(&dir.join(CHUNKS))?;
    sync_path(&dir.join(VECTORS))?;
    sync_path(&dir)?;
    // The switch: CURRENT is replaced by rename, which is atomic.
    let tmp = index_dir.join(format!("{CURRENT}.tmp"));
    write_synced(&tmp, manifest.generation.as_bytes())?;
    std::fs::rename(&tmp, index_dir.join(CURRENT)).map_err(storage)?;
    sync_path(index_dir)?;
    // Older generations (and leftovers of crashed runs) go, unless a server still answers from them;
    // we hold the index lock.
    Ok(generations::delete_unused(index_dir, &manifest.generation))
}

fn new_vector_index(dimensions: usize, capacity: usize) -> Result<VectorIndex, IndexError> {
    let options = VectorOptions {
        dimensions,
        metric: MetricKind::Cos,
        // f16 halves the file at the same recall as f32 (measured on MiniLM vectors).
        quantization: ScalarKind::F16,
        connectivity: 0,
        expansion_add: 0,
        expansion_search: 0,
        multi: false,
    };
    let index = VectorIndex::new(&options).map_err(storage)?;
    index.reserve(capacity.max(1)).map_err(storage)?;
    Ok(index)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    use std::io::Write;
    let mut f = File::create(path).map_err(storage)?;
    f.write_all(bytes).map_err(storage)?;
    f.sync_all().map_err(storage)
}

fn sync_path(path: &Path) -> Result<(), IndexError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(storage)
}

fn read_current(index_dir: &Path) -> Result<Option<(Manifest, PathBuf)>, IndexError> {
    let Ok(name) = std::fs::read_to_string(index_dir.join(CURRENT)) else {
        return Ok(None);
    };
    let dir = index_dir.join(name.trim());
    let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(storage)?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(storage)?;
    Ok(Some((manifest, dir)))
}

/// Supported files under `dir`, recursively, in a stable order; hidden files and folders are skipped.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && extract::is_supported(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub chunk: Arc<Chunk>,
    /// Reciprocal-rank-fusion score (higher is better).
    pub score: f32,
    /// Best cosine similarity to a query, when dense search found it.
    pub dense: Option<f32>,
    /// Best BM25 score, when lexical search found it.
    pub lexical: Option<f32>,
}

pub struct SearchResult {
    /// Fused hits, best first.
    pub hits: Vec<Hit>,
    /// Per query vector, the best cosine similarity of any chunk.
    pub best_similarity: Vec<f32>,
}

/// A loaded generation: chunks, their vectors (usearch) and a BM25 index, read-only.
pub struct KnowledgeBase {
    chunks: Vec<Arc<Chunk>>,
    vectors: Mutex<VectorIndex>,
    bm25: Bm25Index,
    terms: TermStats,
    pub manifest: Manifest,
    /// Keeps `novapay index` from deleting the generation while this is loaded.
    lease: Option<Lease>,
}

/// How many chunks contain each content term (stemmed, stop words dropped): how much a word of a
/// question says about whether the knowledge base answers it. A word in every chunk, like the company
/// name, says nothing; a word in no chunk says the question is about something else.
#[derive(Debug, Clone, Default)]
pub struct TermStats {
    pub documents: usize,
    pub document_frequency: HashMap<String, usize>,
    /// Mean number of distinct content terms per chunk.
    pub mean_terms: f32,
}

impl TermStats {
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        let mut total = 0usize;
        for t in texts {
            let terms = bm25::content_terms(t.as_ref(), Bm25Config::KNOWLEDGE_BASE.languages);
            total += terms.len();
            for term in terms {
                *document_frequency.entry(term).or_default() += 1;
            }
        }
        Self {
            documents: texts.len(),
            mean_terms: if texts.is_empty() {
                0.0
            } else {
                total as f32 / texts.len() as f32
            },
            document_frequency,
        }
    }

    /// BM25's inverse document frequency; highest for a term no chunk contains.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.documents as f32;
        let df = self.document_frequency.get(term).copied().unwrap_or(0) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }
}

static IN_MEMORY_BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reciprocal rank fusion's constant (Cormack et al.).
const RRF_K: f32 = 60.0;

impl KnowledgeBase {
    /// Opens the current generation and leases it, refusing one built with other settings.
    pub fn open(index_dir: &Path, expected: &IndexSettings) -> Result<Self, IndexError> {
        // CURRENT may move on (and its old target be deleted) between reading it and leasing the
        // generation: then read it again.
        for _ in 0..20 {
            let name = current_generation(index_dir)
                .ok_or_else(|| IndexError::NoIndex(index_dir.to_path_buf()))?;
            let dir = index_dir.join(&name);
            match generations::lease(&dir) {
                Ok(lease) => {
                    let mut kb = Self::open_generation(index_dir, &dir, expected)?;
                    kb.lease = lease;
                    return Ok(kb);
                }
                Err(LeaseRefused::Gone)
                    if current_generation(index_dir).as_ref() != Some(&name) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(LeaseRefused::Gone) => {
                    return Err(IndexError::Storage(format!(
                        "{} (named by {}/CURRENT) is missing or incomplete; rebuild with `novapay \
                         index --rebuild`",
                        dir.display(),
                        index_dir.display()
                    )))
                }
                Err(LeaseRefused::Error(e)) => return Err(e),
            }
        }
        Err(IndexError::Storage(format!(
            "{}/CURRENT kept changing while opening the index",
            index_dir.display()
        )))
    }

    fn open_generation(
        index_dir: &Path,
        dir: &Path,
        expected: &IndexSettings,
    ) -> Result<Self, IndexError> {
        let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(storage)?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(storage)?;
        if &manifest.settings != expected {
            return Err(IndexError::Mismatch {
                dir: index_dir.to_path_buf(),
                built: manifest.settings.describe(),
                configured: expected.describe(),
            });
        }
        let stored = store::read(&dir.join(CHUNKS)).map_err(storage)?;
        let vectors =
            VectorIndex::restore(&dir.join(VECTORS).to_string_lossy()).map_err(storage)?;
        if vectors.size() != stored.len() {
            return Err(IndexError::Storage(format!(
                "{} holds {} vectors for {} chunks; rebuild with `novapay index --rebuild`",
                dir.display(),
                vectors.size(),
                stored.len()
            )));
        }
        let chunks = stored.into_iter().map(|s| s.chunk).collect();
        Self::assemble(chunks, vectors, manifest)
    }

    /// An in-memory knowledge base over already embedded chunks (evaluations, tests).
    pub fn from_chunks(
        chunks: Vec<Chunk>,
        vectors: &[Vec<f32>],
        settings: IndexSettings,
    ) -> Result<Self, IndexError> {
        let index = new_vector_index(settings.dimensions, chunks.len())?;
        for (key, v) in vectors.iter().enumerate() {
            index.add(key as u64, v).map_err(storage)?;
        }
        let manifest = Manifest {
            settings,
            // Unique per build, so that answers cached for one in-memory KB never serve another.
            generation: format!(
                "in-memory-{}",
                IN_MEMORY_BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            created_unix: 0,
            files: BTreeMap::new(),
            chunks: chunks.len(),
        };
        Self::assemble(chunks, index, manifest)
    }

    fn assemble(
        chunks: Vec<Chunk>,
        vectors: VectorIndex,
        manifest: Manifest,
    ) -> Result<Self, IndexError> {
        let chunks: Vec<Arc<Chunk>> = chunks.into_iter().map(Arc::new).collect();
        let texts: Vec<String> = chunks.iter().map(|c| c.search_text()).collect();
        let bm25 = Bm25Index::build(&texts, Bm25Config::KNOWLEDGE_BASE).map_err(storage)?;
        let terms = TermStats::build(&texts);
        Ok(Self {
            chunks,
            vectors: Mutex::new(vectors),
            bm25,
            terms,
            manifest,
            lease: None,
        })
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether this generation is leased (protected from deletion by `novapay index`).
    pub fn is_leased(&self) -> bool {
        self.lease.is_some()
    }

    pub fn term_stats(&self) -> &TermStats {
        &self.terms
    }

    /// Identifies what was indexed: a new generation (or another in-memory build) changes it.
    pub fn generation(&self) -> &str {
        &self.manifest.generation
    }

    /// Dense top-`k` for each query vector and BM25 top-`k` for each query text, fused by reciprocal
    /// rank. Several queries (the question alone, the question with recent turns) fuse the same way.
    pub fn search(&self, vectors: &[Vec<f32>], texts: &[&str], k: usize) -> SearchResult {
        let mut best_similarity = Vec::with_capacity(vectors.len());
        let mut fused: HashMap<usize, Hit> = HashMap::new();
        let mut add = |id: usize, rank: usize, dense: Option<f32>, lexical: Option<f32>| {
            let Some(chunk) = self.chunks.get(id) else {
                return;
            };
            let hit = fused.entry(id).or_insert_with(|| Hit {
                chunk: chunk.clone(),
                score: 0.0,
                dense: None,
                lexical: None,
            });
            hit.score += 1.0 / (RRF_K + rank as f32 + 1.0);
            if let Some(d) = dense {
                hit.dense = Some(hit.dense.map_or(d, |x| x.max(d)));
            }
            if let Some(l) = lexical {
                hit.lexical = Some(hit.lexical.map_or(l, |x| x.max(l)));
            }
        };
        for v in vectors {
            let dense = self.dense(v, k);
            best_similarity.push(dense.first().map_or(0.0, |(_, sim)| *sim));
            for (rank, (id, sim)) in dense.into_iter().enumerate() {
                add(id, rank, Some(sim), None);
            }
        }
        for t in texts {
            for (rank, (id, score)) in self.bm25.search(t, k).into_iter().enumerate() {
                add(id, rank, None, Some(score));
            }
        }
        let mut hits: Vec<(usize, Hit)> = fused.into_iter().collect();
        // Equal fused scores are common (rank 1 + rank 2 either way round): the closer meaning wins,
        // then the lower id, so results never depend on hash order.
        hits.sort_by(|(ia, a), (ib, b)| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| b.dense.unwrap_or(-1.0).total_cmp(&a.dense.unwrap_or(-1.0)))
                .then_with(|| ia.cmp(ib))
        });
        let mut hits: Vec<Hit> = hits.into_iter().map(|(_, h)| h).collect();
        hits.truncate(k);
        SearchResult {
            hits,
            best_similarity,
        }
    }

    /// Share of `query`'s content terms (stemmed, stop words dropped) present in the `hits`' text.
    pub fn term_coverage(&self, query: &str, hits: &[Hit]) -> f32 {
        let texts: Vec<String> = hits.iter().map(|h| h.chunk.search_text()).collect();
        bm25::term_coverage(query, &texts, Bm25Config::KNOWLEDGE_BASE.languages)
    }

    /// (chunk id, cosine similarity), best first.
    pub fn dense(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let Ok(index) = self.vectors.lock() else {
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
