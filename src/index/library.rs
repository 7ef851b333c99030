//! The data folder managed while a server runs: add, replace or delete one document, or re-index the
//! folder, each followed by an incremental build and a published generation that the caller switches
//! to. Changes are serialized by one lock (held across write, build, publish and switch), so two
//! uploads never publish out of order; the index folder's file lock also keeps a separate
//! `novapay index` run out.
//!
//! A change that fails leaves both the data folder and the serving generation as they were: an upload
//! is checked (name, type, size, text) before anything is written, written to a hidden temporary file
//! and renamed into place (never a partial file), and put back as it was when the build fails; a
//! deleted file is moved aside and moved back on failure.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::build::{data_files, hex, read_current, relative};
use super::{
    build_index, extract, IndexError, IndexJob, IndexReport, IndexSettings, KnowledgeBase,
};
use crate::embed::Embedder;

/// Longest document name, in bytes (file systems allow 255 per component).
pub const MAX_NAME_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A name with a path, a parent reference, a hidden or control character, ...
    #[error("invalid document name {0:?}: use a file name such as `fees.md` (letters, digits, spaces, `-`, `_`, `.`; optionally `folder/name.md`), without `..` or a leading `.`")]
    InvalidName(String),
    #[error(
        "unsupported document type {0:?}: upload .md, .markdown, .txt, .html, .htm, .pdf or .docx"
    )]
    Unsupported(String),
    #[error("the document is {size} bytes; the limit is {limit} bytes (NOVAPAY_MAX_UPLOAD_BYTES)")]
    TooLarge { size: usize, limit: usize },
    #[error("{name}: {reason}")]
    Unreadable { name: String, reason: String },
    #[error("no document {0:?} in the knowledge base")]
    NotFound(String),
    /// Another process (`novapay index`) is building the index.
    #[error("another indexing run holds the index; retry when it has finished")]
    Busy,
    #[error(transparent)]
    Index(IndexError),
    #[error("cannot change the data folder: {0}")]
    Storage(String),
}

impl From<IndexError> for DocumentError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Locked(_) => Self::Busy,
            other => Self::Index(other),
        }
    }
}

fn io(e: std::io::Error) -> DocumentError {
    DocumentError::Storage(e.to_string())
}

/// Where a document of the data folder stands relative to the serving generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Indexed with its current content.
    Indexed,
    /// Changed (or added) on disk since the serving generation was built: not answered from yet.
    Pending,
    /// Could not be read at the last indexing run (see `error`).
    Failed,
    /// In the serving generation, but no longer in the data folder.
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    /// Path relative to the data folder, `/`-separated.
    pub name: String,
    /// Bytes on disk (0 when missing).
    pub size: u64,
    /// SHA-256 of the content on disk (of the indexed content when missing).
    pub hash: String,
    /// Chunks in the serving generation (0 when not indexed).
    pub chunks: usize,
    /// When the serving content was embedded (Unix seconds), when known.
    pub indexed_at_unix: Option<u64>,
    pub status: DocumentStatus,
    /// Why the last run could not read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a change did: the indexing run's report and the generation now serving.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryChange {
    /// The document added, replaced or deleted (none for a re-index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Chunks of that document in the new generation.
    pub chunks: usize,
    /// False when a re-index found nothing changed and published nothing.
    pub published: bool,
    pub report: IndexReport,
}

/// The data folder and index folder of a running server.
pub struct Library {
    data_dir: PathBuf,
    index_dir: PathBuf,
    settings: IndexSettings,
    embedder: Arc<Embedder>,
    max_document_bytes: usize,
    /// One change (write, build, publish, switch) at a time.
    changing: Mutex<()>,
}

impl Library {
    pub fn new(
        data_dir: &Path,
        index_dir: &Path,
        settings: IndexSettings,
        embedder: Arc<Embedder>,
        max_document_bytes: usize,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            index_dir: index_dir.to_path_buf(),
            settings,
            embedder,
            max_document_bytes,
            changing: Mutex::new(()),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn max_document_bytes(&self) -> usize {
        self.max_document_bytes
    }

    /// Holds the change lock for `f`: a server's generation watcher switches under it, so that it
    /// never switches back to an older generation while a change publishes a newer one.
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.lock();
        f()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded state is the data folder, which every change leaves consistent.
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks an upload before anything is written: the name, the type, the size and that text can
    /// be read from it. Returns the name relative to the data folder.
    pub fn check_upload(&self, name: &str, bytes: &[u8]) -> Result<String, DocumentError> {
        let rel = checked_name(name)?;
        if !extract::is_supported(Path::new(&rel)) {
            return Err(DocumentError::Unsupported(
                Path::new(&rel)
                    .extension()
                    .map(|e| format!(".{}", e.to_string_lossy()))
                    .unwrap_or_else(|| "(no extension)".into()),
            ));
        }
        if bytes.len() > self.max_document_bytes {
            return Err(DocumentError::TooLarge {
                size: bytes.len(),
                limit: self.max_document_bytes,
            });
        }
        if bytes.is_empty() {
            return Err(DocumentError::Unreadable {
                name: rel,
                reason: "the file is empty".into(),
            });
        }
        extract::extract(Path::new(&rel), bytes).map_err(|e| DocumentError::Unreadable {
            name: rel.clone(),
            reason: e.to_string(),
        })?;
        Ok(rel)
    }

    /// Adds or replaces a document, builds and publishes a generation, and hands it to `switch`
    /// (under the change lock). On any failure the data folder and the index are left as they were.
    /// Blocking (embeds the document).
    pub fn put(
        &self,
        name: &str,
        bytes: &[u8],
        switch: impl FnOnce(KnowledgeBase),
    ) -> Result<LibraryChange, DocumentError> {
        let rel = self.check_upload(name, bytes)?;
        let _guard = self.lock();
        let path = self.data_dir.join(&rel);
        if path.exists() && !path.is_file() {
            return Err(DocumentError::InvalidName(rel));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let previous = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        write_atomically(&path, bytes).map_err(io)?;
        let restore = || {
            let restored = match &previous {
                Some(old) => write_atomically(&path, old),
                None => std::fs::remove_file(&path),
            };
            if let Err(e) = restored {
                tracing::error!(document = %rel, error = %e, "cannot restore the data folder after a failed upload");
            }
        };
        let (report, kb) = match self.build() {
            Ok(built) => built,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        if let Some((_, reason)) = report.failed.iter().find(|(f, _)| *f == rel) {
            // Read once by the check, not by the run (changed in between?): not served.
            restore();
            return Err(DocumentError::Unreadable {
                name: rel,
                reason: reason.clone(),
            });
        }
        let chunks = kb.manifest.files.get(&rel).map_or(0, |f| f.chunks);
        switch(kb);
        Ok(LibraryChange {
            document: Some(rel),
            chunks,
            published: true,
            report,
        })
    }

    /// Deletes a document, builds and publishes a generation without it and hands it to `switch`.
    /// Blocking.
    pub fn delete(
        &self,
        name: &str,
        switch: impl FnOnce(KnowledgeBase),
    ) -> Result<LibraryChange, DocumentError> {
        let rel = checked_name(name)?;
        let _guard = self.lock();
        let path = self.data_dir.join(&rel);
        if !path.is_file() || !extract::is_supported(&path) {
            return Err(DocumentError::NotFound(rel));
        }
        // Moved aside (hidden: never indexed) until the new generation is published.
        let aside = hidden_sibling(&path, "deleted");
        std::fs::rename(&path, &aside).map_err(io)?;
        match self.build() {
            Ok((report, kb)) => {
                if let Err(e) = std::fs::remove_file(&aside) {
                    tracing::warn!(file = %aside.display(), error = %e, "cannot remove a deleted document's copy");
                }
                switch(kb);
                Ok(LibraryChange {
                    document: Some(rel),
                    chunks: 0,
                    published: true,
                    report,
                })
            }
            Err(e) => {
                if let Err(re) = std::fs::rename(&aside, &path) {
                    tracing::error!(document = %rel, error = %re, "cannot put a document back after a failed delete");
                }
                Err(e)
            }
        }
    }

    /// Indexes the data folder as it is (only changed files are embedded) and hands the new
    /// generation to `switch`; publishes nothing when no file changed since the current generation.
    /// Refuses to publish an empty knowledge base over a non-empty one (a data folder that is not
    /// mounted looks empty). Blocking.
    pub fn reindex(
        &self,
        switch: impl FnOnce(KnowledgeBase),
    ) -> Result<LibraryChange, DocumentError> {
        let _guard = self.lock();
        if let Some((manifest, _)) = read_current(&self.index_dir)? {
            let on_disk = self.hashes();
            if on_disk.is_empty() && !manifest.files.is_empty() {
                return Err(DocumentError::Storage(format!(
                    "the data folder {} has no documents but the index has {}; not publishing an \
                     empty knowledge base (delete documents one by one to empty it)",
                    self.data_dir.display(),
                    manifest.files.len()
                )));
            }
            let indexed: Vec<(&String, &String)> =
                manifest.files.iter().map(|(n, f)| (n, &f.hash)).collect();
            let mut now: Vec<(&String, &String)> = on_disk
                .iter()
                .filter(|(n, _)| !manifest.failed.contains_key(n))
                .map(|(n, h)| (n, h))
                .collect();
            now.sort();
            let failed_same = on_disk
                .iter()
                .filter(|(n, _)| manifest.failed.contains_key(n))
                .count()
                == manifest.failed.len();
            if manifest.settings == self.settings && indexed == now && failed_same {
                return Ok(LibraryChange {
                    document: None,
                    chunks: 0,
                    published: false,
                    report: IndexReport {
                        generation: manifest.generation,
                        files: manifest.files.len(),
                        unchanged: manifest.files.len(),
                        chunks: manifest.chunks,
                        ..IndexReport::default()
                    },
                });
            }
        }
        let (report, kb) = self.build()?;
        switch(kb);
        Ok(LibraryChange {
            document: None,
            chunks: 0,
            published: true,
            report,
        })
    }

    /// (name, SHA-256) of every document in the data folder, by name.
    fn hashes(&self) -> Vec<(String, String)> {
        data_files(&self.data_dir)
            .into_iter()
            .filter_map(|path| {
                let bytes = std::fs::read(&path).ok()?;
                Some((
                    relative(&self.data_dir, &path),
                    hex(&Sha256::digest(&bytes)),
                ))
            })
            .collect()
    }

    fn build(&self) -> Result<(IndexReport, KnowledgeBase), DocumentError> {
        let job = IndexJob {
            data_dir: self.data_dir.clone(),
            index_dir: self.index_dir.clone(),
            settings: self.settings.clone(),
            rebuild: false,
            fail_after_files: None,
        };
        let report = build_index(&job, &self.embedder, &|_, _| {})?;
        let kb = KnowledgeBase::open(&self.index_dir, &self.settings)?;
        Ok((report, kb))
    }

    /// The documents of the data folder and of the serving generation `kb`, by name. Reads (and
    /// hashes) every file: blocking.
    pub fn documents(&self, kb: &KnowledgeBase) -> Vec<DocumentInfo> {
        let manifest = &kb.manifest;
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for path in data_files(&self.data_dir) {
            let name = relative(&self.data_dir, &path);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let hash = hex(&Sha256::digest(&bytes));
            let entry = manifest.files.get(&name);
            let failed = manifest.failed.get(&name);
            let status = match (entry, failed) {
                (Some(e), _) if e.hash == hash => DocumentStatus::Indexed,
                (None, Some(_)) => DocumentStatus::Failed,
                _ => DocumentStatus::Pending,
            };
            out.push(DocumentInfo {
                size: bytes.len() as u64,
                hash,
                chunks: entry.map_or(0, |e| e.chunks),
                indexed_at_unix: entry.map(|e| e.indexed_unix).filter(|t| *t > 0),
                status,
                error: failed.filter(|_| status == DocumentStatus::Failed).cloned(),
                name: name.clone(),
            });
            seen.insert(name);
        }
        for (name, entry) in &manifest.files {
            if !seen.contains(name) {
                out.push(DocumentInfo {
                    name: name.clone(),
                    size: 0,
                    hash: entry.hash.clone(),
                    chunks: entry.chunks,
                    indexed_at_unix: Some(entry.indexed_unix).filter(|t| *t > 0),
                    status: DocumentStatus::Missing,
                    error: None,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// A document name as a path relative to the data folder: `/`-separated plain components (no `..`,
/// no leading `.`, no backslash or control character, no absolute path).
pub fn checked_name(name: &str) -> Result<String, DocumentError> {
    let invalid = || DocumentError::InvalidName(crate::logsafe::truncate_chars(name, 80));
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.contains('\\')
        || name.chars().any(|c| c.is_control())
    {
        return Err(invalid());
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        let plain = matches!(
            Path::new(part).components().next(),
            Some(Component::Normal(_))
        ) && Path::new(part).components().count() == 1;
        if part.is_empty() || part.starts_with('.') || part.trim() != part || !plain {
            return Err(invalid());
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// A hidden path beside `path` (skipped by indexing), unique to this call.
fn hidden_sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `bytes` to a hidden temporary file beside `path`, syncs it and renames it over `path`: a
/// reader (or an indexing run) sees the old content or the new one, never part of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = hidden_sibling(path, "upload");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_are_plain_relative_paths() {
        for ok in ["fees.md", "faq/cards.md", "Тарифы 2024.pdf", "a-b_c.d.txt"] {
            assert_eq!(checked_name(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/../../x.md",
            "/etc/passwd.md",
            ".env",
            "faq/.hidden.md",
            "a\\b.md",
            "a\0.md",
            "x\n.md",
            "a//b.md",
            "./a.md",
            " a.md",
            "..",
            &"x".repeat(300),
        ] {
            assert!(
                matches!(checked_name(bad), Err(DocumentError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }
}
