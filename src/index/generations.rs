//! Generations in use: a server holds a *lease* on the generation it answers from, `novapay index`
//! deletes only generations nobody holds, and a running server notices a newly published `CURRENT`.
//!
//! The lease is an advisory file lock (`flock`) on `<generation>/in-use.lock`: every server takes it
//! shared, the indexer tries to take it exclusive before deleting. The operating system drops a dead
//! process's locks, so a server killed with `kill -9` never pins a generation forever, and no lease
//! file has to be cleaned up. Servers open the file read-only, so a read-only index volume works.
//! Ordering that makes it race-free: the indexer deletes the manifest first while it holds the
//! exclusive lock; a server checks the manifest only after its shared lock is granted.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{storage, IndexError, IndexSettings, KnowledgeBase, CURRENT, MANIFEST};

pub(super) const LEASE: &str = "in-use.lock";
/// Folder-name prefix of a generation.
pub(super) const PREFIX: &str = "gen-";

/// A shared lock on a generation; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

/// Why a lease could not be taken.
pub(super) enum LeaseRefused {
    /// The generation is being deleted, or is already gone: read `CURRENT` again.
    Gone,
    Error(IndexError),
}

/// Takes a shared lease on `dir`. `Ok(None)`: a generation written before leases existed on a
/// read-only volume, served without one.
pub(super) fn lease(dir: &Path) -> Result<Option<Lease>, LeaseRefused> {
    let path = dir.join(LEASE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.join(MANIFEST).is_file() {
                return Err(LeaseRefused::Gone);
            }
            // Older generation without a lock file: create it when the volume is writable.
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => f,
                Err(_) => return Ok(None),
            }
        }
        Err(e) => return Err(LeaseRefused::Error(storage(e))),
    };
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(LeaseRefused::Gone),
        Err(std::fs::TryLockError::Error(e)) => return Err(LeaseRefused::Error(storage(e))),
    }
    // Granted: nobody can start deleting now; one that finished before leaves no manifest.
    if !dir.join(MANIFEST).is_file() {
        return Err(LeaseRefused::Gone);
    }
    Ok(Some(Lease { _file: file }))
}

/// The generation `CURRENT` names, if any.
pub fn current_generation(index_dir: &Path) -> Option<String> {
    std::fs::read_to_string(index_dir.join(CURRENT))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What a clean-up after publishing did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cleanup {
    pub deleted: Vec<String>,
    /// Older generations kept because a running server still answers from them.
    pub in_use: Vec<String>,
}

/// Deletes every generation except `keep` that no server holds, and leftovers of crashed runs. The
/// caller holds the index lock, so no other run is writing a generation.
pub(super) fn delete_unused(index_dir: &Path, keep: &str) -> Cleanup {
    let mut cleanup = Cleanup::default();
    let Ok(entries) = std::fs::read_dir(index_dir) else {
        return cleanup;
    };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, path)| name.starts_with(PREFIX) && name != keep && path.is_dir())
        .collect();
    dirs.sort();
    for (name, dir) in dirs {
        let lock = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LEASE))
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(generation = %name, error = %e, "cannot check whether an old index generation is in use; kept");
                cleanup.in_use.push(name);
                continue;
            }
        };
        match lock.try_lock() {
            Ok(()) => {
                // Manifest first: a server that opened the lock file before us finds no manifest.
                let _ = std::fs::remove_file(dir.join(MANIFEST));
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => cleanup.deleted.push(name),
                    Err(e) => {
                        tracing::warn!(generation = %name, error = %e, "cannot delete an old index generation")
                    }
                }
            }
            Err(_) => cleanup.in_use.push(name),
        }
    }
    cleanup
}

/// Follows `CURRENT` for a running server: [`Self::poll`] opens a newly published generation.
pub struct GenerationWatcher {
    index_dir: PathBuf,
    settings: IndexSettings,
    serving: String,
    /// A generation built with other settings: not opened again at every poll.
    refused: Option<String>,
}

impl GenerationWatcher {
    /// Watches `index_dir` for a server that answers from generation `serving`.
    pub fn new(index_dir: &Path, settings: IndexSettings, serving: &str) -> Self {
        Self {
            index_dir: index_dir.to_path_buf(),
            settings,
            serving: serving.to_string(),
            refused: None,
        }
    }

    /// The generation the server now answers from (it switched by other means, e.g. an upload).
    pub fn set_serving(&mut self, generation: &str) {
        if self.serving != generation {
            self.serving = generation.to_string();
        }
    }

    /// The newly published generation, loaded and leased, when `CURRENT` moved on; `Ok(None)` when
    /// it did not. On an error the caller keeps answering from the one it has; one built with other
    /// settings (another embedder) is reported once, other errors (I/O) again at the next poll.
    /// Blocking.
    pub fn poll(&mut self) -> Result<Option<KnowledgeBase>, IndexError> {
        let Some(name) = current_generation(&self.index_dir) else {
            return Ok(None);
        };
        if name == self.serving || self.refused.as_deref() == Some(name.as_str()) {
            return Ok(None);
        }
        match KnowledgeBase::open(&self.index_dir, &self.settings) {
            Ok(kb) => {
                self.serving = kb.manifest.generation.clone();
                self.refused = None;
                Ok(Some(kb))
            }
            Err(e) => {
                if matches!(e, IndexError::Mismatch { .. }) {
                    self.refused = Some(name);
                }
                Err(e)
            }
        }
    }
}
