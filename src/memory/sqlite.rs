//! The default conversation store: one SQLite file in the state directory, so history survives restarts.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, ConversationStore, MemoryError, SessionId, SessionInfo, Speaker, Turn};

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn unavailable<E: std::fmt::Display>(e: E) -> MemoryError {
    MemoryError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, MemoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA foreign_keys=ON;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS sessions (
                 id TEXT PRIMARY KEY,
                 user_id TEXT,
                 created_at_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS turns (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                 role TEXT NOT NULL,
                 content TEXT NOT NULL,
                 sources TEXT NOT NULL DEFAULT '[]',
                 created_at_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS turns_by_session ON turns(session_id, id);",
        )
        .map_err(unavailable)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, MemoryError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| MemoryError::Unavailable("a previous storage call panicked".into()))?;
        f(&conn).map_err(unavailable)
    }
}

impl ConversationStore for SqliteStore {
    fn create_session(
        &self,
        id: &SessionId,
        user_id: Option<&str>,
    ) -> Result<SessionInfo, MemoryError> {
        let created = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO sessions (id, user_id, created_at_ms) VALUES (?1, ?2, ?3)",
                params![id.as_str(), user_id, created],
            )
        })?;
        self.session(id)?
            .ok_or_else(|| MemoryError::Unavailable("session vanished after insert".into()))
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, MemoryError> {
        self.with(|c| {
            c.query_row(
                "SELECT user_id, created_at_ms FROM sessions WHERE id = ?1",
                params![id.as_str()],
                |r| {
                    Ok(SessionInfo {
                        id: id.clone(),
                        user_id: r.get(0)?,
                        created_at_ms: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }

    fn append(&self, id: &SessionId, turn: &Turn) -> Result<(), MemoryError> {
        let sources = serde_json::to_string(&turn.sources).map_err(unavailable)?;
        let role = match turn.role {
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        };
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO sessions (id, user_id, created_at_ms) VALUES (?1, NULL, ?2)",
                params![id.as_str(), turn.created_at_ms],
            )?;
            c.execute(
                "INSERT INTO turns (session_id, role, content, sources, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id.as_str(), role, turn.content, sources, turn.created_at_ms],
            )?;
            Ok(())
        })
    }

    fn history(&self, id: &SessionId, max_turns: usize) -> Result<Vec<Turn>, MemoryError> {
        let mut turns = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT role, content, sources, created_at_ms FROM turns
                 WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id.as_str(), max_turns as i64], |r| {
                let role: String = r.get(0)?;
                let sources: String = r.get(2)?;
                Ok(Turn {
                    role: if role == "user" {
                        Speaker::User
                    } else {
                        Speaker::Assistant
                    },
                    content: r.get(1)?,
                    sources: serde_json::from_str(&sources).unwrap_or_default(),
                    created_at_ms: r.get(3)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        turns.reverse();
        Ok(turns)
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool, MemoryError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM turns WHERE session_id = ?1",
                params![id.as_str()],
            )?;
            Ok(c.execute("DELETE FROM sessions WHERE id = ?1", params![id.as_str()])? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_survives_reopening_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.sqlite");
        let id = SessionId::parse("abc-123").unwrap();
        {
            let store = SqliteStore::open(&path).unwrap();
            for i in 0..5 {
                let turn = Turn {
                    role: if i % 2 == 0 {
                        Speaker::User
                    } else {
                        Speaker::Assistant
                    },
                    content: format!("turn {i}"),
                    sources: vec![],
                    created_at_ms: i,
                };
                store.append(&id, &turn).unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        let last = store.history(&id, 2).unwrap();
        assert_eq!(
            last.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(),
            ["turn 3", "turn 4"]
        );
        assert!(store.delete_session(&id).unwrap());
        assert!(store.history(&id, 10).unwrap().is_empty());
        assert!(!store.delete_session(&id).unwrap());
    }

    #[test]
    fn session_ids_are_validated() {
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("a b").is_err());
        assert!(SessionId::parse(&"x".repeat(65)).is_err());
        assert!(SessionId::parse("chat:42").is_ok());
    }
}
