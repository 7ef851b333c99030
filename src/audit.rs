//! The audit log: one JSON line for every administrator's read of customers' data (a session, the
//! support report, an export) and every erase, in a file of its own (mode 600, opened for append
//! only), so that "who read customers' conversations?" has an answer. It names who (an API key's
//! fingerprint, or `cli`), when, what (the action, the route or command, the user or session id,
//! the counts) and never customer text: no question, answer or comment goes in.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// Who acted, for entries written by the command line (which has no API key).
pub const CLI: &str = "cli";

/// One audited action.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// An API key's fingerprint (`key:<hex>`, as sessions record their owner), `anonymous`, or `cli`.
    pub who: String,
    /// `session.read`, `stats.read`, `customer.export`, `customer.erase`.
    pub action: &'static str,
    /// `GET /api/v1/session/{id}`, ..., or the command (`novapay forget`).
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `bitrix24` for a portal user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// What the action returned or removed (counts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(who: &str, action: &'static str, via: impl Into<String>) -> Self {
        Self {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            who: who.to_string(),
            action,
            via: via.into(),
            user_id: None,
            channel: None,
            session_id: None,
            counts: None,
        }
    }

    /// Whose data: a user id, and its channel (`bitrix24`) when it is not the API's `user_id`.
    pub fn user(mut self, user_id: &str, channel: Option<&str>) -> Self {
        self.user_id = Some(user_id.to_string());
        self.channel = channel.map(str::to_string);
        self
    }

    pub fn session(mut self, session_id: &str) -> Self {
        self.session_id = Some(session_id.to_string());
        self
    }

    pub fn counts(mut self, counts: serde_json::Value) -> Self {
        self.counts = Some(counts);
        self
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The audit log file, shared by every handler of a server (and by several processes: each line is
/// written with one `write` to a file opened with `O_APPEND`).
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates, mode 600, its directory 700) the log for appending; an existing file is
    /// narrowed to 600.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let fail = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    builder.mode(0o700);
                }
                builder.create(dir).map_err(fail)?;
            }
        }
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(fail)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and flushes it to the file. Blocking. An action whose entry cannot be
    /// written should not go ahead (reads) or should be reported as failed (erases).
    pub fn record(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| AuditError {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|source| AuditError {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(&AuditEntry::new(
            "key:ab",
            "stats.read",
            "GET /api/v1/stats",
        ))
        .unwrap();
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.record(
            &AuditEntry::new(CLI, "customer.erase", "novapay forget")
                .user("27", Some("bitrix24"))
                .counts(serde_json::json!({"sessions": 2})),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["who"], "key:ab");
        assert_eq!(lines[1]["action"], "customer.erase");
        assert_eq!(lines[1]["counts"]["sessions"], 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
