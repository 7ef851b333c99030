//! The models lock: the size and sha256 of every model file novapay may load, written where the models
//! were fetched (or deliberately re-pinned) and checked before they are loaded. The models folder is
//! the trust boundary (SECURITY.md): whoever replaces a GGUF changes every answer, so a file that
//! differs from the lock is refused, naming the file, until an operator pins it again.
//!
//! Two depths: the full sha256 (`novapay verify-models`, seconds for a 2 GB GGUF) and, at every start,
//! the size plus a *sampled* sha256 over fixed regions (the first 16 MiB, where GGUF and safetensors
//! keep their metadata, tokenizer and chat template, and 17 blocks of 1 MiB spread evenly from the
//! first to the last MiB): milliseconds, and it catches a truncated, swapped or corrupted file, but not
//! an edit placed between the sampled blocks by someone who knows them — that is what the full check is
//! for.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModelSource;

/// The lock's file name in the models directory.
pub const LOCK_FILE_NAME: &str = "novapay-models.lock";
/// The `format` field: a reader refuses any other.
pub const LOCK_FORMAT: &str = "novapay-models-lock/1";
/// What `sampled_sha256` covers, written into the lock for whoever reads it.
pub const SAMPLED_HASH_DESCRIPTION: &str =
    "sha256 of: the text `novapay-sampled-sha256/1`, the size \
     (u64 little-endian), the first 16 MiB, then 17 blocks of 1 MiB at offsets k*(size-1MiB)/16, \
     k = 0..16, that are not inside the first 16 MiB (a file of at most 33 MiB: all of it)";

const MIB: u64 = 1024 * 1024;
const SAMPLE_HEAD: u64 = 16 * MIB;
const SAMPLE_BLOCK: u64 = MIB;
const SAMPLE_BLOCKS: u64 = 17;
const SAMPLE_DOMAIN: &[u8] = b"novapay-sampled-sha256/1";

/// The embedder files the loader reads when they are there (the required ones are always pinned).
const EMBEDDER_REQUIRED: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
const EMBEDDER_OPTIONAL_LOADED: &[&str] = &["1_Pooling/config.json", "sentence_bert_config.json"];

#[derive(Debug, Clone, thiserror::Error)]
pub enum PinError {
    #[error(
        "no models lock at {0}: nothing records which model files were approved, so novapay will not \
         load them. Copy the lock from the machine that downloaded the models (`novapay download` \
         writes it next to them), or, after checking the files, pin them here with \
         `novapay verify-models --pin`"
    )]
    LockMissing(PathBuf),
    #[error("cannot read the models lock {path}: {reason}")]
    LockUnreadable { path: PathBuf, reason: String },
    #[error(
        "the models lock {path} is not a valid novapay models lock ({reason}); restore it from the \
         machine that downloaded the models, or write it again with `novapay verify-models --pin` \
         after checking the model files"
    )]
    LockMalformed { path: PathBuf, reason: String },
    #[error("cannot write the models lock {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot hash {path}: {reason}")]
    Hash { path: PathBuf, reason: String },
    #[error(
        "refusing to load model files that differ from the models lock {lock}:\n{problems}\
         If these files were changed on purpose, pin them: `novapay verify-models --pin`. Otherwise \
         restore them from the approved copy; `novapay verify-models` checks every byte of every pinned file."
    )]
    Refused { lock: PathBuf, problems: Problems },
    #[error(
        "not writing the models lock {lock}: files already pinned there have changed since:\n{problems}\
         A download does not bless a changed file. Restore it (delete it and download again), or, if \
         it was changed on purpose, pin it with `novapay verify-models --pin`."
    )]
    ChangedSincePinned { lock: PathBuf, problems: Problems },
}

/// Files that failed a check, one line each (for error messages).
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<FileReport>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.0 {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

/// The lock file: JSON, models in the order they were given, files sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub format: String,
    /// How `sampled_sha256` is computed (documentation for whoever reads the file).
    pub sampled_sha256: String,
    pub models: Vec<PinnedModel>,
}

/// One configured model and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedModel {
    /// llm, llm-tokenizer or embedder.
    pub role: String,
    /// The setting it was pinned for (`owner/repo:file.gguf@rev` or a path).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Hub commit the files came from (the Hub cache's snapshot folder), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub files: Vec<PinnedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedFile {
    /// Relative to the lock's folder when the file is inside it (a copied models folder keeps
    /// working), else absolute.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub sampled_sha256: String,
}

impl Lock {
    pub fn new(models: Vec<PinnedModel>) -> Self {
        Self {
            format: LOCK_FORMAT.into(),
            sampled_sha256: SAMPLED_HASH_DESCRIPTION.into(),
            models,
        }
    }

    /// Parses and validates a lock's text; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lock: Lock = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if lock.format != LOCK_FORMAT {
            return Err(format!(
                "format `{}`, expected `{LOCK_FORMAT}`",
                lock.format
            ));
        }
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for m in &lock.models {
            for f in &m.files {
                if f.path.is_empty() {
                    return Err(format!("a file of `{}` has an empty path", m.role));
                }
                if !hex64(&f.sha256) || !hex64(&f.sampled_sha256) {
                    return Err(format!("{}: a sha256 is not 64 hex digits", f.path));
                }
            }
        }
        Ok(lock)
    }

    /// The lock as written: pretty JSON and a final newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a lock serializes");
        text.push('\n');
        text
    }

    fn find(&self, key: &str) -> Option<(&PinnedModel, &PinnedFile)> {
        self.models
            .iter()
            .flat_map(|m| m.files.iter().map(move |f| (m, f)))
            .find(|(_, f)| f.path == key)
    }
}

/// The files a configured model loads, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub role: &'static str,
    pub source: String,
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub files: Vec<PathBuf>,
}

impl ModelFiles {
    /// The LLM: its GGUF file.
    pub fn llm(spec: &str, gguf: &Path) -> Self {
        Self::with_source("llm", spec, vec![gguf.to_path_buf()])
    }

    /// A tokenizer.json given instead of the GGUF's vocabulary.
    pub fn llm_tokenizer(path: &Path) -> Self {
        Self::with_source(
            "llm-tokenizer",
            &path.display().to_string(),
            vec![path.to_path_buf()],
        )
    }

    /// The embedder folder: its required files (pinned even when absent, so that one missing is
    /// reported) and the optional ones the loader reads, when present.
    pub fn embedder(spec: &str, dir: &Path) -> Self {
        let mut files: Vec<PathBuf> = EMBEDDER_REQUIRED.iter().map(|f| dir.join(f)).collect();
        files.extend(
            EMBEDDER_OPTIONAL_LOADED
                .iter()
                .map(|f| dir.join(f))
                .filter(|p| p.is_file()),
        );
        Self::with_source("embedder", spec, files)
    }

    fn with_source(role: &'static str, spec: &str, files: Vec<PathBuf>) -> Self {
        let (repo, revision) = match ModelSource::parse(spec) {
            Ok(ModelSource::Hub { repo, revision, .. }) => (Some(repo), Some(revision)),
            _ => (None, None),
        };
        let commit = files.first().and_then(|f| snapshot_commit(f));
        Self {
            role,
            source: spec.to_string(),
            repo,
            revision,
            commit,
            files,
        }
    }
}

/// The commit of a Hub cache path `.../snapshots/<commit>/...`.
fn snapshot_commit(path: &Path) -> Option<String> {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let i = parts.iter().rposition(|p| *p == "snapshots")?;
    parts.get(i + 1).map(|s| s.to_string())
}

/// The default lock of a models directory.
pub fn default_lock_path(models_dir: &Path) -> PathBuf {
    models_dir.join(LOCK_FILE_NAME)
}

/// Reads and validates the lock at `path`; a missing file is [`PinError::LockMissing`].
pub fn read_lock(path: &Path) -> Result<Lock, PinError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PinError::LockMissing(path.to_path_buf()))
        }
        Err(e) => {
            return Err(PinError::LockUnreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    Lock::parse(&text).map_err(|reason| PinError::LockMalformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether a lock that already pins a file may be rewritten with a different hash for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repin {
    /// The operator re-pins deliberately (`verify-models --pin`): the lock is replaced by the
    /// configured models.
    Replace,
    /// A download records what it fetched: other models' entries are kept, and a file already pinned
    /// with another hash is an error, not a new pin.
    KeepPinned,
}

/// Hashes `models`' files and writes the lock at `lock_path` (atomically: a temporary file renamed
/// over it). Returns the lock written.
pub fn write_lock(lock_path: &Path, models: &[ModelFiles], repin: Repin) -> Result<Lock, PinError> {
    let base = lock_base(lock_path);
    let previous = match read_lock(lock_path) {
        Ok(lock) => Some(lock),
        Err(PinError::LockMissing(_)) => None,
        // A damaged lock is not silently replaced by a download; a deliberate re-pin replaces it.
        Err(e) if repin == Repin::KeepPinned => return Err(e),
        Err(_) => None,
    };
    let mut pinned = Vec::new();
    let mut changed = Vec::new();
    for m in models {
        let mut files = Vec::new();
        for path in &m.files {
            let (size, sha256, sampled) = hash_file(path)?;
            if let Some(named) = hub_blob_sha256(path) {
                if named != sha256 {
                    return Err(PinError::Hash {
                        path: path.clone(),
                        reason: format!(
                            "the Hub cache names it by sha256 {named} but its content hashes to \
                             {sha256}: a damaged or altered download; delete it and download again"
                        ),
                    });
                }
            }
            let key = lock_key(&base, path);
            if let (Repin::KeepPinned, Some((_, old))) =
                (repin, previous.as_ref().and_then(|l| l.find(&key)))
            {
                if old.sha256 != sha256 || old.size != size {
                    changed.push(FileReport {
                        role: m.role.to_string(),
                        path: path.clone(),
                        state: FileState::Mismatch(mismatch_of(old, size, &sha256, "sha256")),
                    });
                }
            }
            files.push(PinnedFile {
                path: key,
                size,
                sha256,
                sampled_sha256: sampled,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        pinned.push(PinnedModel {
            role: m.role.to_string(),
            source: m.source.clone(),
            repo: m.repo.clone(),
            revision: m.revision.clone(),
            commit: m.commit.clone(),
            files,
        });
    }
    if !changed.is_empty() {
        return Err(PinError::ChangedSincePinned {
            lock: lock_path.to_path_buf(),
            problems: Problems(changed),
        });
    }
    if let (Repin::KeepPinned, Some(previous)) = (repin, previous) {
        // Models this run did not fetch (`download --llm-only`) stay pinned.
        let kept: Vec<PinnedModel> = previous
            .models
            .into_iter()
            .filter(|old| !pinned.iter().any(|m| m.role == old.role))
            .collect();
        pinned.extend(kept);
    }
    let lock = Lock::new(pinned);
    write_atomically(lock_path, lock.to_text().as_bytes())?;
    Ok(lock)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PinError> {
    let err = |e: std::io::Error| PinError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".novapay-models.lock.")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    #[cfg(unix)]
    {
        // Not a secret: whoever runs novapay must read it; only the models' owner writes it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// How deep a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    /// Size and the sampled sha256 (every start).
    #[default]
    Sampled,
    /// Size and the sha256 of every byte.
    Full,
}

/// The state of one file against the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Mismatch(Mismatch),
    Missing,
    /// Configured to be loaded, but not in the lock (the configuration changed without a re-pin).
    NotPinned,
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// size, sha256 or sampled sha256.
    pub what: &'static str,
    pub pinned: String,
    pub found: String,
}

fn mismatch_of(old: &PinnedFile, size: u64, hash: &str, what: &'static str) -> Mismatch {
    if old.size != size {
        Mismatch {
            what: "size",
            pinned: format!("{} bytes", old.size),
            found: format!("{size} bytes"),
        }
    } else {
        let pinned = if what == "sha256" {
            &old.sha256
        } else {
            &old.sampled_sha256
        };
        Mismatch {
            what,
            pinned: pinned.clone(),
            found: hash.to_string(),
        }
    }
}

impl FileState {
    pub fn label(&self) -> &'static str {
        match self {
            FileState::Ok => "OK",
            FileState::Mismatch(_) => "MISMATCH",
            FileState::Missing => "MISSING",
            FileState::NotPinned => "NOT PINNED",
            FileState::Unreadable(_) => "UNREADABLE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub role: String,
    pub path: PathBuf,
    pub state: FileState,
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<10} {} ({})",
            self.state.label(),
            self.path.display(),
            self.role
        )?;
        match &self.state {
            FileState::Mismatch(m) => {
                write!(f, ": {} is {}, the lock says {}", m.what, m.found, m.pinned)
            }
            FileState::Missing => write!(f, ": pinned but not on disk"),
            FileState::NotPinned => write!(f, ": configured to be loaded but not in the lock"),
            FileState::Unreadable(e) => write!(f, ": {e}"),
            FileState::Ok => Ok(()),
        }
    }
}

/// Checks `models`' files against the lock at `lock_path`: every file to be loaded must be pinned,
/// present and the same. Files of the lock that are not configured are not read.
pub fn check_configured(
    lock_path: &Path,
    lock: &Lock,
    models: &[ModelFiles],
    depth: Depth,
) -> Vec<FileReport> {
    let base = lock_base(lock_path);
    let mut reports = Vec::new();
    for m in models {
        for path in &m.files {
            let state = match find_pinned(lock, &base, path) {
                None if !path.exists() => FileState::Missing,
                None => FileState::NotPinned,
                Some(pinned) => check_file(path, pinned, depth),
            };
            reports.push(FileReport {
                role: m.role.to_string(),
                path: path.clone(),
                state,
            });
        }
    }
    reports
}

/// The configured files the lock does not name (each [`FileState::NotPinned`], or
/// [`FileState::Missing`] when not on disk either); reads no file's content.
pub fn not_pinned(lock_path: &Path, lock: &Lock, models: &[ModelFiles]) -> Vec<FileReport> {
    let base = lock_base(lock_path);
    models
        .iter()
        .flat_map(|m| m.files.iter().map(move |p| (m, p)))
        .filter(|(_, p)| find_pinned(lock, &base, p).is_none())
        .map(|(m, p)| FileReport {
            role: m.role.to_string(),
            path: p.clone(),
            state: if p.exists() {
                FileState::NotPinned
            } else {
                FileState::Missing
            },
        })
        .collect()
}

/// Checks every file the lock names (whatever is configured), at `depth`.
pub fn check_lock(lock_path: &Path, lock: &Lock, depth: Depth) -> Vec<FileReport> {
    let base = lock_base(lock_path);
    lock.models
        .iter()
        .flat_map(|m| m.files.iter().map(move |f| (m, f)))
        .map(|(m, f)| {
            let path = resolve_key(&base, &f.path);
            FileReport {
                role: m.role.clone(),
                state: check_file(&path, f, depth),
                path,
            }
        })
        .collect()
}

/// What the start check found: the files are as pinned, or there is no lock and the operator allowed
/// that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCheck {
    Pinned { lock: PathBuf, files: usize },
    Unpinned { lock: PathBuf },
}

/// The check before loading: every configured file as pinned, else [`PinError::Refused`]. Without a
/// lock: [`PinError::LockMissing`], unless `allow_unpinned` (then [`StartCheck::Unpinned`]).
pub fn check_at_start(
    lock_path: &Path,
    models: &[ModelFiles],
    depth: Depth,
    allow_unpinned: bool,
) -> Result<StartCheck, PinError> {
    let lock = match read_lock(lock_path) {
        Ok(lock) => lock,
        Err(PinError::LockMissing(_)) if allow_unpinned => {
            return Ok(StartCheck::Unpinned {
                lock: lock_path.to_path_buf(),
            })
        }
        Err(e) => return Err(e),
    };
    let reports = check_configured(lock_path, &lock, models, depth);
    let files = reports.len();
    let problems: Vec<FileReport> = reports
        .into_iter()
        .filter(|r| r.state != FileState::Ok)
        .collect();
    if problems.is_empty() {
        Ok(StartCheck::Pinned {
            lock: lock_path.to_path_buf(),
            files,
        })
    } else {
        Err(PinError::Refused {
            lock: lock_path.to_path_buf(),
            problems: Problems(problems),
        })
    }
}

fn check_file(path: &Path, pinned: &PinnedFile, depth: Depth) -> FileState {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => return FileState::Unreadable(e.to_string()),
    };
    let size = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return FileState::Unreadable("not a regular file".into()),
        Err(e) => return FileState::Unreadable(e.to_string()),
    };
    if size != pinned.size {
        return FileState::Mismatch(mismatch_of(pinned, size, "", "size"));
    }
    let (hash, what) = match depth {
        Depth::Sampled => (sampled_sha256_of(&mut file, size), "sampled sha256"),
        Depth::Full => (full_sha256_of(&mut file), "sha256"),
    };
    match hash {
        Err(e) => FileState::Unreadable(e.to_string()),
        Ok(h) => {
            let expected = match depth {
                Depth::Sampled => &pinned.sampled_sha256,
                Depth::Full => &pinned.sha256,
            };
            if h.eq_ignore_ascii_case(expected) {
                FileState::Ok
            } else {
                FileState::Mismatch(mismatch_of(pinned, size, &h, what))
            }
        }
    }
}

/// Size, full sha256 and sampled sha256 of a file (two reads: the sample is a few MiB).
fn hash_file(path: &Path) -> Result<(u64, String, String), PinError> {
    let err = |e: std::io::Error| PinError::Hash {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let full = full_sha256_of(&mut file).map_err(err)?;
    let sampled = sampled_sha256_of(&mut file, size).map_err(err)?;
    Ok((size, full, sampled))
}

/// The sha256 of every byte of `path`.
pub fn full_sha256(path: &Path) -> std::io::Result<String> {
    full_sha256_of(&mut File::open(path)?)
}

/// The sampled sha256 of `path` (see [`SAMPLED_HASH_DESCRIPTION`]).
pub fn sampled_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    sampled_sha256_of(&mut file, size)
}

fn full_sha256_of(file: &mut File) -> std::io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The byte ranges `(offset, length)` the sampled sha256 reads, in order, for a file of `size` bytes.
pub fn sample_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= SAMPLE_HEAD + SAMPLE_BLOCKS * SAMPLE_BLOCK {
        return vec![(0, size)];
    }
    let mut ranges = vec![(0, SAMPLE_HEAD)];
    let span = (size - SAMPLE_BLOCK) as u128;
    for k in 0..SAMPLE_BLOCKS {
        let offset = (span * k as u128 / (SAMPLE_BLOCKS - 1) as u128) as u64;
        if offset + SAMPLE_BLOCK > SAMPLE_HEAD {
            ranges.push((offset, SAMPLE_BLOCK));
        }
    }
    ranges
}

fn sampled_sha256_of(file: &mut File, size: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(SAMPLE_DOMAIN);
    hasher.update(size.to_le_bytes());
    let mut buf = vec![0u8; MIB as usize];
    for (offset, len) in sample_ranges(size) {
        file.seek(SeekFrom::Start(offset))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            // A file shorter than its metadata said (truncated under us) is an error, not a hash.
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 the Hub cache names a file's blob by (`blobs/<sha256>` for LFS files: the GGUF and the
/// safetensors), when the path is a snapshot link to such a blob.
pub fn hub_blob_sha256(path: &Path) -> Option<String> {
    let target = std::fs::canonicalize(path).ok()?;
    let parent = target.parent()?;
    if parent.file_name()? != "blobs" {
        return None;
    }
    let name = target.file_name()?.to_str()?;
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_lowercase())
}

/// The folder relative lock paths start from, made absolute.
fn lock_base(lock_path: &Path) -> PathBuf {
    let dir = match lock_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    absolute(dir)
}

fn absolute(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // Lexically: `a/../b` is `b` (no symlinks resolved: a Hub snapshot link stays a snapshot path).
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// How the lock names a file: relative (with `/`) when under the lock's folder, else absolute.
fn lock_key(base: &Path, file: &Path) -> String {
    let abs = absolute(file);
    match abs.strip_prefix(base) {
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => abs.to_string_lossy().into_owned(),
    }
}

fn resolve_key(base: &Path, key: &str) -> PathBuf {
    let p = Path::new(key);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The lock's entry for `file`: by its name, else by the file it is (another spelling of the same
/// path through a symlinked folder).
fn find_pinned<'a>(lock: &'a Lock, base: &Path, file: &Path) -> Option<&'a PinnedFile> {
    if let Some((_, f)) = lock.find(&lock_key(base, file)) {
        return Some(f);
    }
    let real = std::fs::canonicalize(file).ok()?;
    lock.models.iter().flat_map(|m| m.files.iter()).find(|f| {
        std::fs::canonicalize(resolve_key(base, &f.path))
            .ok()
            .as_deref()
            == Some(real.as_path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_lock_round_trips_through_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("models--o--r/snapshots/abc123/m.gguf");
        write(&gguf, b"GGUF weights");
        let emb = dir.path().join("emb");
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            write(&emb.join(f), f.as_bytes());
        }
        write(&emb.join("1_Pooling/config.json"), b"{}");
        let lock_path = dir.path().join(LOCK_FILE_NAME);
        let models = [
            ModelFiles::llm("o/r:m.gguf@v1", &gguf),
            ModelFiles::embedder(&emb.display().to_string(), &emb),
        ];
        let lock = write_lock(&lock_path, &models, Repin::Replace).unwrap();
        let text = std::fs::read_to_string(&lock_path).unwrap();
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert_eq!(lock.to_text(), text, "the same text again: stable order");
        let llm = &lock.models[0];
        assert_eq!(llm.repo.as_deref(), Some("o/r"));
        assert_eq!(llm.revision.as_deref(), Some("v1"));
        assert_eq!(llm.commit.as_deref(), Some("abc123"));
        assert_eq!(llm.files[0].path, "models--o--r/snapshots/abc123/m.gguf");
        assert_eq!(
            llm.files[0].sha256,
            hex(&Sha256::digest(b"GGUF weights")),
            "the full hash is the file's plain sha256 (sha256sum agrees)"
        );
        let paths: Vec<&str> = lock.models[1]
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "emb/1_Pooling/config.json",
                "emb/config.json",
                "emb/model.safetensors",
                "emb/tokenizer.json"
            ]
        );
        // Unchanged files pass both depths; a copy of the folder elsewhere still matches.
        for depth in [Depth::Sampled, Depth::Full] {
            assert!(check_at_start(&lock_path, &models, depth, false).is_ok());
        }
    }

    #[test]
    fn a_malformed_lock_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE_NAME);
        for text in [
            "not json",
            r#"{"format":"other/1","sampled_sha256":"","models":[]}"#,
            r#"{"format":"novapay-models-lock/1","sampled_sha256":"","models":[{"role":"llm","source":"x","files":[{"path":"a","size":1,"sha256":"zz","sampled_sha256":"zz"}]}]}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_lock(&path).unwrap_err();
            assert!(matches!(err, PinError::LockMalformed { .. }), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(read_lock(&path), Err(PinError::LockMissing(_))));
        assert!(matches!(
            check_at_start(&path, &[], Depth::Sampled, true),
            Ok(StartCheck::Unpinned { .. })
        ));
    }

    #[test]
    fn sample_ranges_cover_head_middle_and_tail() {
        assert_eq!(sample_ranges(10), vec![(0, 10)]);
        assert_eq!(sample_ranges(33 * MIB), vec![(0, 33 * MIB)]);
        let size = 2_000_000_000;
        let ranges = sample_ranges(size);
        assert_eq!(ranges[0], (0, SAMPLE_HEAD));
        assert_eq!(*ranges.last().unwrap(), (size - MIB, MIB));
        let covered = |b: u64| ranges.iter().any(|(o, l)| b >= *o && b < o + l);
        assert!(covered(size / 2), "the middle byte");
        assert!(covered(size - 1) && covered(0) && covered(SAMPLE_HEAD - 1));
        let read: u64 = ranges.iter().map(|(_, l)| l).sum();
        assert!(read <= 33 * MIB, "{read}");
    }

    #[test]
    fn the_sampled_hash_sees_sampled_bytes_and_size_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let size = 40 * MIB as usize;
        let mut bytes = pseudo_random(size);
        write(&path, &bytes);
        let base = sampled_sha256(&path).unwrap();
        assert_eq!(base, sampled_sha256(&path).unwrap(), "deterministic");
        assert_ne!(base, full_sha256(&path).unwrap());

        let ranges = sample_ranges(size as u64);
        let covered = |b: usize| {
            ranges
                .iter()
                .any(|(o, l)| (b as u64) >= *o && (b as u64) < o + l)
        };
        // A byte in the middle is sampled.
        let mid = size / 2;
        assert!(covered(mid));
        bytes[mid] ^= 1;
        write(&path, &bytes);
        assert_ne!(sampled_sha256(&path).unwrap(), base);
        bytes[mid] ^= 1;
        // A byte between blocks is not (the full hash is for that).
        let gap = (SAMPLE_HEAD as usize..size).find(|b| !covered(*b)).unwrap();
        bytes[gap] ^= 1;
        write(&path, &bytes);
        assert_eq!(sampled_sha256(&path).unwrap(), base);
        bytes[gap] ^= 1;
        // One byte shorter: another size, another hash.
        write(&path, &bytes[..size - 1]);
        assert_ne!(sampled_sha256(&path).unwrap(), base);
    }

    /// A Hub cache names an LFS file's blob by its sha256: a blob whose content says otherwise is a
    /// damaged or altered download and is not pinned.
    #[cfg(unix)]
    #[test]
    fn a_hub_blob_must_hash_to_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--o--r");
        let content = b"gguf from the hub";
        let sha = hex(&Sha256::digest(content));
        write(&repo.join("blobs").join(&sha), content);
        let snap = repo.join("snapshots/c0ffee");
        std::fs::create_dir_all(&snap).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), snap.join("m.gguf")).unwrap();
        let gguf = snap.join("m.gguf");
        assert_eq!(hub_blob_sha256(&gguf), Some(sha.clone()));
        let lock_path = dir.path().join(LOCK_FILE_NAME);
        let models = [ModelFiles::llm("o/r:m.gguf", &gguf)];
        let lock = write_lock(&lock_path, &models, Repin::KeepPinned).unwrap();
        assert_eq!(
            lock.models[0].files[0].path,
            "models--o--r/snapshots/c0ffee/m.gguf"
        );
        assert_eq!(lock.models[0].commit.as_deref(), Some("c0ffee"));
        write(&repo.join("blobs").join(&sha), b"altered in the cache");
        for repin in [Repin::KeepPinned, Repin::Replace] {
            let err = write_lock(&lock_path, &models, repin).unwrap_err();
            assert!(err.to_string().contains("names it by sha256"), "{err}");
        }
    }

    #[test]
    fn a_changed_file_is_refused_by_name_until_repinned() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        write(&gguf, b"approved weights");
        let lock_path = dir.path().join(LOCK_FILE_NAME);
        let models = [ModelFiles::llm(&gguf.display().to_string(), &gguf)];
        write_lock(&lock_path, &models, Repin::KeepPinned).unwrap();
        write(&gguf, b"tampered weights");
        let err = check_at_start(&lock_path, &models, Depth::Sampled, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("m.gguf") && msg.contains("MISMATCH"), "{msg}");
        // A download does not bless it; a deliberate re-pin does.
        let err = write_lock(&lock_path, &models, Repin::KeepPinned).unwrap_err();
        assert!(matches!(err, PinError::ChangedSincePinned { .. }), "{err}");
        write_lock(&lock_path, &models, Repin::Replace).unwrap();
        assert!(check_at_start(&lock_path, &models, Depth::Full, false).is_ok());
        // A configured file the lock does not name is refused too.
        let other = dir.path().join("other.gguf");
        write(&other, b"x");
        let err = check_at_start(
            &lock_path,
            &[ModelFiles::llm("x", &other)],
            Depth::Sampled,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("NOT PINNED"), "{err}");
        std::fs::remove_file(&gguf).unwrap();
        let reports = check_lock(&lock_path, &read_lock(&lock_path).unwrap(), Depth::Full);
        assert_eq!(reports[0].state, FileState::Missing);
    }
}
