//! Conversation memory: each session's turns, behind one trait so that a shared backend (Redis, for
//! several replicas) can replace the default SQLite file without touching callers. Calls block: async
//! callers run them on a blocking thread.

mod sqlite;

use serde::{Deserialize, Serialize};

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
