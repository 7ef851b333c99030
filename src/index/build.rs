//! Building and publishing a generation: read the data folder, reuse the chunks and vectors of
//! unchanged files, embed the rest, write the generation beside the old one and switch `CURRENT` to it
//! by rename (see the guarantees in [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::chunk::{Chunk, Chunker};
use super::generations::{self, Cleanup};
use super::store::{self, StoredChunk};
use super::vectors::VectorIndex;
use super::{
    extract, storage, FileEntry, IndexError, IndexSettings, Manifest, CHUNKS, CURRENT, LOCK,
    MANIFEST, VECTORS,
};
use crate::embed::Embedder;

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
    let now = unix_now();
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
            let indexed_unix = previous_files.get(&rel).map_or(now, |f| f.indexed_unix);
            files.insert(
                rel,
                FileEntry {
                    hash,
                    chunks: chunks.len(),
                    indexed_unix,
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
                        indexed_unix: now,
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
        created_unix: unix_now(),
        files,
        chunks: kept.len(),
        failed: report.failed.iter().cloned().collect(),
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
    let vectors: Vec<&[f32]> = chunks.iter().map(|c| c.vector.as_slice()).collect();
    VectorIndex::from_vectors(manifest.settings.dimensions, &vectors)?.save(&dir.join(VECTORS))?;
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

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    use std::io::Write;
    let mut f = File::create(path).map_err(storage)?;
    f.write_all(bytes).map_err(storage)?;
    f.sync_all().map_err(storage)
}

fn sync_path(path: &Path) -> Result<(), IndexError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(storage)
}

pub(super) fn read_current(index_dir: &Path) -> Result<Option<(Manifest, PathBuf)>, IndexError> {
    let Ok(name) = std::fs::read_to_string(index_dir.join(CURRENT)) else {
        return Ok(None);
    };
    let dir = index_dir.join(name.trim());
    let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(storage)?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(storage)?;
    Ok(Some((manifest, dir)))
}

/// Supported files under `dir`, recursively, in a stable order; hidden files and folders are skipped.
pub(super) fn data_files(dir: &Path) -> Vec<PathBuf> {
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

pub(super) fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
