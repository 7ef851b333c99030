//! The default conversation store: one SQLite file in the state directory, so history survives restarts.
//! The file is readable by its owner only (conversations are bank data), and conversations idle for
//! longer than the TTL are treated as gone and purged in the background, as Redis expires them.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    now_ms, AnswerRecord, ConversationStore, Customer, Erased, Feedback, FiledOutcome, MemoryError,
    Rating, SessionId, SessionInfo, SessionOwner, Speaker, Turn,
};

/// How often the background task deletes expired conversations.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

pub struct SqliteStore {
    conn: Mutex<Connection>,
    ttl: Option<Duration>,
}

fn unavailable<E: std::fmt::Display>(e: E) -> MemoryError {
    MemoryError::Unavailable(e.to_string())
}

/// Creates the file's directory (mode 700 when novapay creates it) and the file itself (mode 600), so
/// that no other local user can read the conversations. An existing file is narrowed to 600 too.
fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(dir)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SQLite creates the -wal and -shm files with the database file's mode.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) the file; conversations never expire until [`Self::with_ttl`] says so.
    pub fn open(path: &Path) -> Result<Self, MemoryError> {
        create_private(path)
            .map_err(|e| MemoryError::Unavailable(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA secure_delete=ON;
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
             CREATE INDEX IF NOT EXISTS turns_by_session ON turns(session_id, id);
             CREATE TABLE IF NOT EXISTS answers (
                 query_id TEXT PRIMARY KEY,
                 session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                 question TEXT NOT NULL,
                 answer TEXT NOT NULL,
                 sources TEXT NOT NULL DEFAULT '[]',
                 fallback INTEGER NOT NULL,
                 latency_ms INTEGER NOT NULL,
                 created_at_ms INTEGER NOT NULL,
                 rating TEXT,
                 comment TEXT,
                 feedback_at_ms INTEGER
             );
             CREATE INDEX IF NOT EXISTS answers_by_time ON answers(created_at_ms);
             CREATE INDEX IF NOT EXISTS answers_by_session ON answers(session_id);",
        )
        .map_err(unavailable)?;
        migrate(&conn).map_err(unavailable)?;
        Ok(Self {
            conn: Mutex::new(conn),
            ttl: None,
        })
    }

    /// Conversations idle for longer than `ttl` are gone (`None`: kept forever).
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl.filter(|t| !t.is_zero());
        self
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

    /// Sessions last active before this are expired (`i64::MIN`: none is).
    fn cutoff(&self) -> i64 {
        match self.ttl {
            Some(ttl) => now_ms().saturating_sub(ttl.as_millis().min(i64::MAX as u128) as i64),
            None => i64::MIN,
        }
    }

    /// Deletes the conversations idle for longer than the TTL; returns how many.
    pub fn purge_expired(&self) -> Result<usize, MemoryError> {
        if self.ttl.is_none() {
            return Ok(0);
        }
        let cutoff = self.cutoff();
        self.with(|c| {
            c.execute(
                "DELETE FROM turns WHERE session_id IN
                     (SELECT id FROM sessions WHERE last_active_ms < ?1)",
                params![cutoff],
            )?;
            c.execute(
                "DELETE FROM answers WHERE session_id IN
                     (SELECT id FROM sessions WHERE last_active_ms < ?1)",
                params![cutoff],
            )?;
            c.execute(
                "DELETE FROM sessions WHERE last_active_ms < ?1",
                params![cutoff],
            )
        })
    }
}

impl SqliteStore {
    /// The sessions of `customer` last active at or after `cutoff`, with their user ids.
    fn customer_rows(
        c: &Connection,
        customer: &Customer,
        cutoff: i64,
    ) -> rusqlite::Result<Vec<SessionInfo>> {
        let mut stmt = c.prepare(
            "SELECT id, owner, user_id, created_at_ms FROM sessions
             WHERE (user_id = ?1 OR id = ?2) AND last_active_ms >= ?3",
        )?;
        let rows = stmt.query_map(
            params![customer.id(), customer.private_dialog(), cutoff],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?;
        let mut found = Vec::new();
        for row in rows {
            let (id, owner, user_id, created_at_ms) = row?;
            let Ok(id) = SessionId::try_from(id) else {
                continue;
            };
            if customer.owns(&id, user_id.as_deref()) {
                found.push(SessionInfo {
                    id,
                    owner,
                    user_id,
                    created_at_ms,
                });
            }
        }
        Ok(found)
    }
}

const ANSWER_COLUMNS: &str = "SELECT a.query_id, a.session_id, a.question, a.answer, a.sources,
    a.fallback, a.latency_ms, a.created_at_ms, a.rating, a.comment, a.feedback_at_ms,
    a.outcome, a.language, a.suggestions, a.helped, a.operator
    FROM answers a JOIN sessions s ON s.id = a.session_id";

/// A row of [`ANSWER_COLUMNS`]; `None` for a session id this version cannot read.
fn answer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<AnswerRecord>> {
    let session: String = r.get(1)?;
    let Ok(session) = SessionId::try_from(session) else {
        return Ok(None);
    };
    let sources: String = r.get(4)?;
    let rating: Option<String> = r.get(8)?;
    let feedback = match rating.as_deref() {
        Some("up") => Some(Rating::Up),
        Some("down") => Some(Rating::Down),
        _ => None,
    }
    .map(|rating| -> rusqlite::Result<Feedback> {
        Ok(Feedback {
            rating,
            comment: r.get(9)?,
            created_at_ms: r.get::<_, Option<i64>>(10)?.unwrap_or(0),
            suggestion: r
                .get::<_, Option<i64>>(14)?
                .and_then(|n| usize::try_from(n).ok()),
            operator: r.get(15)?,
        })
    })
    .transpose()?;
    let outcome: Option<String> = r.get(11)?;
    let suggestions: String = r.get(13)?;
    Ok(Some(AnswerRecord {
        query_id: r.get(0)?,
        session,
        question: r.get(2)?,
        answer: r.get(3)?,
        sources: serde_json::from_str(&sources).unwrap_or_default(),
        fallback: r.get(5)?,
        latency_ms: r.get::<_, i64>(6)?.max(0) as u64,
        created_at_ms: r.get(7)?,
        feedback,
        outcome: outcome.as_deref().and_then(FiledOutcome::parse),
        language: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
        suggestions: serde_json::from_str(&suggestions).unwrap_or_default(),
    }))
}

/// Adds the columns later versions need to a file written by an earlier one.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA table_info(sessions)")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == "owner") {
        // Sessions from before owners were recorded stay ownerless: no API caller but an
        // administrator is served them.
        conn.execute_batch("ALTER TABLE sessions ADD COLUMN owner TEXT;")?;
    }
    if !columns.iter().any(|c| c == "last_active_ms") {
        conn.execute_batch(
            "ALTER TABLE sessions ADD COLUMN last_active_ms INTEGER NOT NULL DEFAULT 0;
             UPDATE sessions SET last_active_ms = MAX(created_at_ms,
                 COALESCE((SELECT MAX(created_at_ms) FROM turns WHERE session_id = sessions.id), 0));",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS sessions_by_activity ON sessions(last_active_ms);
         CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user_id);",
    )?;
    // Outcomes, suggestions and which suggestion helped. Records from before stay readable: their
    // outcome follows from `fallback`, they offered nothing and no suggestion helped.
    let mut stmt = conn.prepare("PRAGMA table_info(answers)")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    for (column, definition) in [
        ("outcome", "TEXT"),
        ("language", "TEXT"),
        ("suggestions", "TEXT NOT NULL DEFAULT '[]'"),
        ("helped", "INTEGER"),
        ("operator", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE answers ADD COLUMN {column} {definition};"
            ))?;
        }
    }
    Ok(())
}

/// Purges `store` every `every` until it is dropped.
pub fn purge_in_background(store: &Arc<SqliteStore>, every: Duration) {
    let weak: Weak<SqliteStore> = Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("novapay-memory-purge".into())
        .spawn(move || loop {
            match weak.upgrade() {
                Some(store) => match store.purge_expired() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired conversations deleted"),
                    Err(e) => tracing::warn!(error = %e, "cannot delete expired conversations"),
                },
                None => return,
            }
            std::thread::sleep(every);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the conversation purge thread");
    }
}

impl ConversationStore for SqliteStore {
    fn create_session(
        &self,
        id: &SessionId,
        owner: &SessionOwner,
    ) -> Result<SessionInfo, MemoryError> {
        let now = now_ms();
        let cutoff = self.cutoff();
        self.with(|c| {
            // An expired session is gone: its id starts afresh.
            c.execute(
                "DELETE FROM sessions WHERE id = ?1 AND last_active_ms < ?2",
                params![id.as_str(), cutoff],
            )?;
            c.execute(
                "INSERT OR IGNORE INTO sessions (id, owner, user_id, created_at_ms, last_active_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id.as_str(), owner.owner, owner.user_id, now],
            )
        })?;
        self.session(id)?
            .ok_or_else(|| MemoryError::Unavailable("session vanished after insert".into()))
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, MemoryError> {
        let cutoff = self.cutoff();
        self.with(|c| {
            c.query_row(
                "SELECT owner, user_id, created_at_ms FROM sessions
                 WHERE id = ?1 AND last_active_ms >= ?2",
                params![id.as_str(), cutoff],
                |r| {
                    Ok(SessionInfo {
                        id: id.clone(),
                        owner: r.get(0)?,
                        user_id: r.get(1)?,
                        created_at_ms: r.get(2)?,
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
        let cutoff = self.cutoff();
        let now = now_ms().max(turn.created_at_ms);
        self.with(|c| {
            c.execute(
                "DELETE FROM turns WHERE session_id = ?1 AND EXISTS
                     (SELECT 1 FROM sessions WHERE id = ?1 AND last_active_ms < ?2)",
                params![id.as_str(), cutoff],
            )?;
            c.execute(
                "DELETE FROM answers WHERE session_id = ?1 AND EXISTS
                     (SELECT 1 FROM sessions WHERE id = ?1 AND last_active_ms < ?2)",
                params![id.as_str(), cutoff],
            )?;
            c.execute(
                "DELETE FROM sessions WHERE id = ?1 AND last_active_ms < ?2",
                params![id.as_str(), cutoff],
            )?;
            c.execute(
                "INSERT OR IGNORE INTO sessions (id, owner, user_id, created_at_ms, last_active_ms)
                 VALUES (?1, NULL, NULL, ?2, ?3)",
                params![id.as_str(), turn.created_at_ms, now],
            )?;
            c.execute(
                "UPDATE sessions SET last_active_ms = ?2 WHERE id = ?1",
                params![id.as_str(), now],
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
        let cutoff = self.cutoff();
        let mut turns = self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT role, content, sources, created_at_ms FROM turns
                 WHERE session_id = ?1 AND EXISTS
                     (SELECT 1 FROM sessions WHERE id = ?1 AND last_active_ms >= ?3)
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id.as_str(), max_turns as i64, cutoff], |r| {
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
        let cutoff = self.cutoff();
        self.with(|c| {
            c.execute(
                "DELETE FROM turns WHERE session_id = ?1",
                params![id.as_str()],
            )?;
            c.execute(
                "DELETE FROM answers WHERE session_id = ?1",
                params![id.as_str()],
            )?;
            Ok(c.execute(
                "DELETE FROM sessions WHERE id = ?1 AND last_active_ms >= ?2",
                params![id.as_str(), cutoff],
            )? > 0)
        })
    }

    fn record_answer(&self, record: &AnswerRecord) -> Result<(), MemoryError> {
        let sources = serde_json::to_string(&record.sources).map_err(unavailable)?;
        let suggestions = serde_json::to_string(&record.suggestions).map_err(unavailable)?;
        let feedback = record.feedback.as_ref();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO answers (query_id, session_id, question, answer, sources,
                     fallback, latency_ms, created_at_ms, rating, comment, feedback_at_ms,
                     outcome, language, suggestions, helped, operator)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    record.query_id,
                    record.session.as_str(),
                    record.question,
                    record.answer,
                    sources,
                    record.fallback,
                    record.latency_ms.min(i64::MAX as u64) as i64,
                    record.created_at_ms,
                    feedback.map(|f| f.rating.as_str()),
                    feedback.and_then(|f| f.comment.clone()),
                    feedback.map(|f| f.created_at_ms),
                    record.outcome.map(FiledOutcome::as_str),
                    record.language,
                    suggestions,
                    feedback.and_then(|f| f.suggestion).map(|n| n as i64),
                    feedback.is_some_and(|f| f.operator),
                ],
            )?;
            Ok(())
        })
    }

    fn answer_record(&self, query_id: &str) -> Result<Option<AnswerRecord>, MemoryError> {
        let cutoff = self.cutoff();
        let mut found = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{ANSWER_COLUMNS} WHERE a.query_id = ?1 AND s.last_active_ms >= ?2"
            ))?;
            let rows = stmt.query_map(params![query_id, cutoff], answer_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(found.pop().flatten())
    }

    fn set_feedback(&self, query_id: &str, feedback: &Feedback) -> Result<bool, MemoryError> {
        let cutoff = self.cutoff();
        self.with(|c| {
            Ok(c.execute(
                "UPDATE answers SET rating = ?2, comment = ?3, feedback_at_ms = ?4, helped = ?6,
                     operator = ?7
                 WHERE query_id = ?1 AND EXISTS (SELECT 1 FROM sessions s
                     WHERE s.id = answers.session_id AND s.last_active_ms >= ?5)",
                params![
                    query_id,
                    feedback.rating.as_str(),
                    feedback.comment,
                    feedback.created_at_ms,
                    cutoff,
                    feedback.suggestion.map(|n| n as i64),
                    feedback.operator,
                ],
            )? > 0)
        })
    }

    fn last_answer(&self, session: &SessionId) -> Result<Option<AnswerRecord>, MemoryError> {
        let cutoff = self.cutoff();
        let mut found = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{ANSWER_COLUMNS} WHERE a.session_id = ?1 AND s.last_active_ms >= ?2
                 ORDER BY a.created_at_ms DESC, a.rowid DESC LIMIT 1"
            ))?;
            let rows = stmt.query_map(params![session.as_str(), cutoff], answer_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(found.pop().flatten())
    }

    fn customer_sessions(&self, customer: &Customer) -> Result<Vec<SessionInfo>, MemoryError> {
        let cutoff = self.cutoff();
        self.with(|c| Self::customer_rows(c, customer, cutoff))
    }

    fn session_answers(&self, id: &SessionId) -> Result<Vec<AnswerRecord>, MemoryError> {
        let cutoff = self.cutoff();
        let records = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{ANSWER_COLUMNS} WHERE a.session_id = ?1 AND s.last_active_ms >= ?2"
            ))?;
            let rows = stmt.query_map(params![id.as_str(), cutoff], answer_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(records.into_iter().flatten().collect())
    }

    fn erase_customer(&self, customer: &Customer) -> Result<(Vec<SessionId>, Erased), MemoryError> {
        // One transaction: a turn stored meanwhile is either counted and deleted or not yet there.
        // Expired sessions not yet purged go too (they are still on disk).
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let sessions = Self::customer_rows(&tx, customer, i64::MIN)?;
            let mut erased = Erased::default();
            for info in &sessions {
                let id = info.id.as_str();
                let (answers, ratings, comments): (i64, i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COUNT(rating), COALESCE(SUM(comment IS NOT NULL AND comment <> ''), 0)
                     FROM answers WHERE session_id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let turns = tx.execute("DELETE FROM turns WHERE session_id = ?1", params![id])?;
                tx.execute("DELETE FROM answers WHERE session_id = ?1", params![id])?;
                tx.execute("DELETE FROM sessions WHERE id = ?1", params![id])?;
                erased.sessions += 1;
                erased.turns += turns;
                erased.answer_records += answers as usize;
                erased.ratings += ratings as usize;
                erased.comments += comments as usize;
            }
            tx.commit()?;
            // secure_delete zeroed the deleted rows in the file; the write-ahead log still holds
            // their earlier pages until a checkpoint, so one runs now (best effort: a reader in
            // another process may hold it back, and the next checkpoint then finishes it).
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "the write-ahead log could not be checkpointed after an erase");
            }
            Ok((sessions.into_iter().map(|s| s.id).collect(), erased))
        })
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn answer_records(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AnswerRecord>, MemoryError> {
        let cutoff = self.cutoff();
        let records = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{ANSWER_COLUMNS} WHERE a.created_at_ms >= ?1 AND s.last_active_ms >= ?2
                 ORDER BY a.created_at_ms DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![since_ms, cutoff, limit.min(i64::MAX as usize) as i64],
                answer_row,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(records.into_iter().flatten().collect())
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
        assert!(SessionId::parse("chat-42.a_b").is_ok());
    }

    #[test]
    fn callers_cannot_name_an_internal_channels_session() {
        let internal = SessionId::internal("bitrix24", "chat936962").unwrap();
        assert_eq!(internal.as_str(), "bitrix24:chat936962");
        assert!(internal.is_internal());
        for name in ["bitrix24:chat936962", "bitrix24:27", "x:y", ":"] {
            assert!(SessionId::parse(name).is_err(), "{name}");
        }
        assert!(SessionId::internal("bitrix24", "27:x").is_err());
        // Stored ids of both kinds read back.
        let back: SessionId = serde_json::from_str("\"bitrix24:27\"").unwrap();
        assert!(back.is_internal());
    }

    #[test]
    fn idle_sessions_expire_and_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/memory.sqlite");
        let store = SqliteStore::open(&path)
            .unwrap()
            // Long enough that a slow host still reads the session back before it expires.
            .with_ttl(Some(Duration::from_millis(1000)));
        let id = SessionId::parse("short-lived").unwrap();
        let owner = SessionOwner {
            owner: Some("k1".into()),
            user_id: Some("u1".into()),
        };
        let info = store.create_session(&id, &owner).unwrap();
        assert_eq!(info.owner.as_deref(), Some("k1"));
        store
            .append(
                &id,
                &Turn {
                    role: Speaker::User,
                    content: "hello".into(),
                    sources: vec![],
                    created_at_ms: now_ms(),
                },
            )
            .unwrap();
        assert_eq!(store.history(&id, 10).unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(1200));
        assert!(store.session(&id).unwrap().is_none(), "expired is gone");
        assert!(store.history(&id, 10).unwrap().is_empty());
        assert_eq!(store.purge_expired().unwrap(), 1);
        let rows: i64 = store
            .with(|c| c.query_row("SELECT COUNT(*) FROM turns", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(rows, 0, "the purge deleted the turns too");
    }

    #[cfg(unix)]
    #[test]
    fn the_conversation_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/conversations.sqlite");
        let _store = SqliteStore::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_file_from_before_owners_opens_and_its_sessions_stay_ownerless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT, created_at_ms INTEGER NOT NULL);
                 CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL
                     REFERENCES sessions(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,
                     sources TEXT NOT NULL DEFAULT '[]', created_at_ms INTEGER NOT NULL);
                 INSERT INTO sessions VALUES ('old-1', 'u', 5);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let info = store
            .session(&SessionId::parse("old-1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(info.owner, None);
        assert_eq!(info.user_id.as_deref(), Some("u"));
    }

    #[test]
    fn answers_filed_before_outcomes_open_readable_and_take_feedback_on_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answers.sqlite");
        let now = now_ms();
        {
            // The answers table as it was before outcomes, suggestions and their feedback.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT, created_at_ms INTEGER NOT NULL,
                     owner TEXT, last_active_ms INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE answers (query_id TEXT PRIMARY KEY, session_id TEXT NOT NULL
                     REFERENCES sessions(id) ON DELETE CASCADE, question TEXT NOT NULL,
                     answer TEXT NOT NULL, sources TEXT NOT NULL DEFAULT '[]', fallback INTEGER NOT NULL,
                     latency_ms INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, rating TEXT,
                     comment TEXT, feedback_at_ms INTEGER);
                 INSERT INTO sessions VALUES ('s-1', NULL, {now}, 'k', {now});
                 INSERT INTO answers VALUES ('q-old', 's-1', 'Crypto?', 'Write to support', '[]', 1,
                     10, {now}, 'down', NULL, {now});"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.answer_record("q-old").unwrap().unwrap();
        assert_eq!(old.outcome, None);
        assert_eq!(old.outcome(), FiledOutcome::HandedOff);
        assert!(old.suggestions.is_empty());
        let feedback = old.feedback.clone().unwrap();
        assert_eq!(
            (feedback.rating, feedback.suggestion, feedback.operator),
            (Rating::Down, None, false)
        );

        let session = SessionId::parse("s-1").unwrap();
        let suggested = AnswerRecord {
            query_id: "q-new".into(),
            question: "A metal card?".into(),
            answer: "1. Cards".into(),
            fallback: true,
            created_at_ms: now + 1,
            feedback: None,
            outcome: Some(FiledOutcome::Suggested),
            language: "en".into(),
            suggestions: vec![super::super::FiledSuggestion {
                id: 1,
                source: "cards.md".into(),
                title: "Cards".into(),
                section: "Cards > Ordering".into(),
                text: "Order a card in the app.".into(),
            }],
            ..old
        };
        store.record_answer(&suggested).unwrap();
        assert_eq!(store.last_answer(&session).unwrap().unwrap(), suggested);
        let helped = Feedback {
            rating: Rating::Up,
            comment: None,
            created_at_ms: now + 2,
            suggestion: Some(1),
            operator: false,
        };
        assert!(store.set_feedback("q-new", &helped).unwrap());
        let read = store.answer_record("q-new").unwrap().unwrap();
        assert_eq!(read.feedback, Some(helped));
        assert_eq!(read.suggestions, suggested.suggestions);
        // Reopening a migrated file changes nothing.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.answer_records(0, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_customer_is_erased_with_every_row_and_leaves_no_text_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        let owned = |user: &str| SessionOwner {
            owner: Some("key:k".into()),
            user_id: Some(user.into()),
        };
        let alice = SessionId::parse("s-alice").unwrap();
        let bob = SessionId::parse("s-bob").unwrap();
        let dialog = SessionId::internal("bitrix24", "chat5").unwrap();
        store.create_session(&alice, &owned("alice")).unwrap();
        store.create_session(&bob, &owned("bob")).unwrap();
        // A channel conversation recorded with the portal user "alice" is not the API's alice.
        store
            .create_session(
                &dialog,
                &SessionOwner {
                    owner: None,
                    user_id: Some("alice".into()),
                },
            )
            .unwrap();
        for (id, text) in [
            (&alice, "zebra-secret"),
            (&bob, "bob-text"),
            (&dialog, "chat-text"),
        ] {
            store
                .append(
                    id,
                    &Turn {
                        role: Speaker::User,
                        content: text.into(),
                        sources: vec![],
                        created_at_ms: now_ms(),
                    },
                )
                .unwrap();
        }
        let record = AnswerRecord {
            query_id: "q-a".into(),
            session: alice.clone(),
            question: "zebra-secret".into(),
            answer: "a".into(),
            sources: vec![],
            fallback: false,
            latency_ms: 1,
            created_at_ms: now_ms(),
            feedback: None,
            outcome: None,
            language: "en".into(),
            suggestions: vec![],
        };
        store.record_answer(&record).unwrap();
        let feedback = Feedback {
            rating: Rating::Down,
            comment: Some("zebra-comment".into()),
            created_at_ms: now_ms(),
            suggestion: None,
            operator: false,
        };
        assert!(store.set_feedback("q-a", &feedback).unwrap());

        let customer = Customer::user("alice").unwrap();
        let exported = super::super::export_customer(&store, &customer).unwrap();
        assert_eq!(exported.len(), 1);
        assert_eq!(exported[0].info.id, alice);
        assert_eq!(exported[0].answers[0].feedback, Some(feedback));

        let (ids, erased) = store.erase_customer(&customer).unwrap();
        assert_eq!(ids, vec![alice.clone()]);
        assert_eq!(
            erased,
            Erased {
                sessions: 1,
                turns: 1,
                answer_records: 1,
                ratings: 1,
                comments: 1
            }
        );
        assert_eq!(
            store.erase_customer(&customer).unwrap().1,
            Erased::default()
        );
        assert!(store.session(&bob).unwrap().is_some());
        assert!(store.session(&dialog).unwrap().is_some());
        let portal_user = Customer::channel_user("bitrix24", "alice").unwrap();
        assert_eq!(store.erase_customer(&portal_user).unwrap().0, vec![dialog]);
        drop(store);
        let mut disk = std::fs::read(&path).unwrap();
        disk.extend(std::fs::read(dir.path().join("c.sqlite-wal")).unwrap_or_default());
        let disk = String::from_utf8_lossy(&disk);
        assert!(!disk.contains("zebra"), "erased text is still in the file");
        assert!(disk.contains("bob-text"));
    }
}
