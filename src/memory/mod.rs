//! Conversation memory: each session's turns, behind one trait so that a shared backend (Redis, for
//! several replicas) can replace the default SQLite file without touching callers. Calls block: async
//! callers run them on a blocking thread.

mod redis;
mod sqlite;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::redis::RedisStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("invalid session id: {0}")]
    InvalidSessionId(String),
    #[error("conversation storage is unavailable: {0}")]
    Unavailable(String),
}

/// A session id: 1-64 characters of letters, digits, `-`, `_`, `.` or `:` (UUIDs, Bitrix24 dialog ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(s: &str) -> Result<Self, MemoryError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(MemoryError::InvalidSessionId(format!(
                "{s:?}: use 1-64 letters, digits, '-', '_', '.' or ':'"
            )))
        }
    }

    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = MemoryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(s: SessionId) -> String {
        s.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Speaker,
    pub content: String,
    /// Sources the answer cited (assistant turns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Unix time, milliseconds.
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub user_id: Option<String>,
    pub created_at_ms: i64,
}

pub trait ConversationStore: Send + Sync {
    fn create_session(
        &self,
        id: &SessionId,
        user_id: Option<&str>,
    ) -> Result<SessionInfo, MemoryError>;
    fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, MemoryError>;
    /// Appends a turn, creating the session if it does not exist yet.
    fn append(&self, id: &SessionId, turn: &Turn) -> Result<(), MemoryError>;
    /// The last `max_turns` turns, oldest first.
    fn history(&self, id: &SessionId, max_turns: usize) -> Result<Vec<Turn>, MemoryError>;
    /// Returns whether the session existed.
    fn delete_session(&self, id: &SessionId) -> Result<bool, MemoryError>;
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where conversation history lives: the `--memory` / `NOVAPAY_MEMORY` setting.
#[derive(Clone, PartialEq, Eq)]
pub enum MemorySpec {
    /// A SQLite file: the state directory's own (`None`) or the given path. One server only.
    Sqlite(Option<PathBuf>),
    /// A Redis URL (`redis://`, `rediss://` or `redis+unix://`), shared by several replicas.
    Redis(String),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid memory setting {given:?}: {reason}; use `sqlite` (the file in the state directory), `sqlite://PATH`, `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `rediss://...` (TLS)")]
pub struct InvalidMemorySpec {
    /// The setting with any password blanked out.
    given: String,
    reason: String,
}

impl FromStr for MemorySpec {
    type Err = InvalidMemorySpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let invalid = |reason: &str| InvalidMemorySpec {
            given: without_credentials(s),
            reason: reason.to_string(),
        };
        if s.is_empty() || s.eq_ignore_ascii_case("sqlite") {
            return Ok(Self::Sqlite(None));
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid("the path after sqlite:// is empty"));
            }
            return Ok(Self::Sqlite(Some(PathBuf::from(path))));
        }
        let scheme = s.split("://").next().unwrap_or("").to_ascii_lowercase();
        if matches!(scheme.as_str(), "redis" | "rediss" | "redis+unix") && s.contains("://") {
            return match self::redis::connection_info(s) {
                Ok(_) => Ok(Self::Redis(s.to_string())),
                Err(reason) => Err(invalid(&reason)),
            };
        }
        Err(invalid("unknown kind of storage"))
    }
}

/// `scheme://user:password@host...` as `scheme://***@host...`.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl std::fmt::Display for MemorySpec {
    /// Never shows a Redis password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(None) => f.write_str("sqlite"),
            Self::Sqlite(Some(path)) => write!(f, "sqlite://{}", path.display()),
            Self::Redis(url) => match self::redis::connection_info(url) {
                Ok(info) => f.write_str(&self::redis::describe(&info)),
                Err(_) => f.write_str("redis://(invalid)"),
            },
        }
    }
}

impl std::fmt::Debug for MemorySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemorySpec({self})")
    }
}

/// Opens the configured store. `default_sqlite` is the state directory's file; `redis_ttl` is how long
/// Redis keeps an idle conversation (`None`: forever). Redis must answer now: a replica that cannot
/// reach the shared history should not start.
pub fn open(
    spec: &MemorySpec,
    default_sqlite: &Path,
    redis_ttl: Option<Duration>,
) -> Result<Arc<dyn ConversationStore>, MemoryError> {
    Ok(match spec {
        MemorySpec::Sqlite(path) => Arc::new(SqliteStore::open(
            path.as_deref().unwrap_or(default_sqlite),
        )?),
        MemorySpec::Redis(url) => Arc::new(RedisStore::open(url, redis_ttl)?),
    })
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn memory_settings_parse_into_the_accepted_forms() {
        assert_eq!(
            "sqlite".parse::<MemorySpec>().unwrap(),
            MemorySpec::Sqlite(None)
        );
        assert_eq!("".parse::<MemorySpec>().unwrap(), MemorySpec::Sqlite(None));
        assert_eq!(
            "sqlite:///var/lib/novapay/m.sqlite"
                .parse::<MemorySpec>()
                .unwrap(),
            MemorySpec::Sqlite(Some(PathBuf::from("/var/lib/novapay/m.sqlite")))
        );
        let redis: MemorySpec = "redis://:hunter2@10.0.0.5:6380/2".parse().unwrap();
        assert_eq!(redis.to_string(), "redis://10.0.0.5:6380/2");
        assert!(!format!("{redis:?}").contains("hunter2"));
        let tls: MemorySpec = "rediss://cache.internal".parse().unwrap();
        assert_eq!(tls.to_string(), "rediss://cache.internal:6379/0");
    }

    #[test]
    fn a_bad_memory_setting_names_the_accepted_forms_and_hides_the_password() {
        for bad in [
            "mysql://x",
            "redis://:hunter2@host/notanumber",
            "sqlite://",
            "memcached",
        ] {
            let e = bad.parse::<MemorySpec>().unwrap_err().to_string();
            assert!(e.contains("sqlite://PATH") && e.contains("redis://"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
