//! Conversation history in Redis, so that several `novapay serve` replicas behind a load balancer share
//! sessions. Keys expire after a configurable TTL that every write refreshes; an outage is reported as
//! `Unavailable` within a bounded time and the store reconnects by itself when Redis is back.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};
use serde::{Deserialize, Serialize};

use super::{
    now_ms, AnswerRecord, ConversationStore, Customer, Erased, Feedback, MemoryError, SessionId,
    SessionInfo, SessionOwner, Turn,
};

/// Bound on connecting and on each reply, so that a dead or unreachable Redis turns into a 503 in
/// seconds rather than a hung request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept for reuse; more concurrent calls open more and close the surplus.
const MAX_IDLE: usize = 8;

/// The session record stored as JSON under `novapay:session:<id>`.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    /// Absent in records written before owners were kept: such sessions stay ownerless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    user_id: Option<String>,
    created_at_ms: i64,
}

pub struct RedisStore {
    client: ::redis::Client,
    /// Scheme, host, port and database, never the password: for errors and logs.
    address: String,
    ttl: Option<Duration>,
    idle: Mutex<Vec<::redis::Connection>>,
}

/// A Redis URL with its password left out.
pub(super) fn describe(info: &ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        other => other.to_string(),
    }
}

/// Parses a `redis://`, `rediss://` or `redis+unix://` URL; the error never repeats the password.
pub(super) fn connection_info(url: &str) -> Result<ConnectionInfo, String> {
    url.into_connection_info()
        .map_err(|e| format!("not a usable Redis URL: {e}"))
}

fn session_key(id: &SessionId) -> String {
    format!("novapay:session:{id}")
}

fn turns_key(id: &SessionId) -> String {
    format!("novapay:turns:{id}")
}

fn answer_key(query_id: &str) -> String {
    format!("novapay:answer:{query_id}")
}

/// The query ids of a session's answer records, deleted with the session.
fn session_answers_key(id: &SessionId) -> String {
    format!("novapay:session_answers:{id}")
}

/// Every answer record by time (score: created at, ms), for the support report.
const ANSWERS_BY_TIME: &str = "novapay:answers";
/// Records kept in [`ANSWERS_BY_TIME`] at most (the oldest go first).
const MAX_INDEXED_ANSWERS: i64 = 100_000;

impl RedisStore {
    /// Connects once, so that a wrong address or password fails start-up instead of the first request.
    /// `ttl`: how long an idle conversation is kept (`None`: forever).
    pub fn open(url: &str, ttl: Option<Duration>) -> Result<Self, MemoryError> {
        let info = connection_info(url).map_err(MemoryError::Unavailable)?;
        let address = describe(&info);
        let client = ::redis::Client::open(info)
            .map_err(|e| MemoryError::Unavailable(format!("Redis at {address}: {e}")))?;
        let store = Self {
            client,
            address,
            ttl,
            idle: Mutex::new(Vec::new()),
        };
        let conn = store
            .connect()
            .and_then(|mut c| ::redis::cmd("PING").query::<()>(&mut c).map(|()| c))
            .map_err(|e| {
                MemoryError::Unavailable(format!(
                "cannot reach Redis at {}: {e} (check that Redis is running and NOVAPAY_MEMORY)",
                store.address
            ))
            })?;
        store.idle().push(conn);
        Ok(store)
    }

    /// Where the store connects, without the password.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn idle(&self) -> MutexGuard<'_, Vec<::redis::Connection>> {
        // The vector stays valid whatever a panicking holder was doing.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<::redis::Connection, RedisError> {
        let conn = self.client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }

    /// An idle connection that still answers, or a new one. Idle connections die silently when Redis
    /// restarts; checking before use keeps a write from being sent into a dead socket, where it would
    /// be unclear whether it landed.
    fn checkout(&self) -> Result<::redis::Connection, RedisError> {
        let pooled = self.idle().pop();
        if let Some(mut conn) = pooled {
            if ::redis::cmd("PING").query::<()>(&mut conn).is_ok() {
                return Ok(conn);
            }
            // The others were opened to the same server and are just as dead.
            self.idle().clear();
        }
        self.connect()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut ::redis::Connection) -> Result<T, RedisError>,
    ) -> Result<T, MemoryError> {
        let result = self.checkout().and_then(|mut conn| {
            let value = f(&mut conn)?;
            let mut idle = self.idle();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
            Ok(value)
        });
        result.map_err(|e| self.unavailable(e))
    }

    fn unavailable(&self, e: RedisError) -> MemoryError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            self.idle().clear();
        }
        MemoryError::Unavailable(format!("Redis at {}: {e}", self.address))
    }

    /// Adds the TTL refresh of `keys` to a transaction, so that data and expiry land together.
    fn refresh(&self, pipe: &mut ::redis::Pipeline, keys: &[&str]) {
        for key in keys {
            match self.ttl {
                Some(ttl) => pipe
                    .cmd("EXPIRE")
                    .arg(*key)
                    .arg(ttl.as_secs().max(1))
                    .ignore(),
                // 0 means keep forever, also for keys written while a TTL was configured.
                None => pipe.cmd("PERSIST").arg(*key).ignore(),
            };
        }
    }

    fn decode_session(&self, id: &SessionId, json: &str) -> Result<SessionInfo, MemoryError> {
        let stored: StoredSession = serde_json::from_str(json).map_err(|e| {
            MemoryError::Unavailable(format!(
                "Redis at {}: {} does not hold a novapay session: {e}",
                self.address,
                session_key(id)
            ))
        })?;
        Ok(SessionInfo {
            id: id.clone(),
            owner: stored.owner,
            user_id: stored.user_id,
            created_at_ms: stored.created_at_ms,
        })
    }
}

impl RedisStore {
    fn decode_answer(&self, json: &str) -> Result<AnswerRecord, MemoryError> {
        serde_json::from_str(json).map_err(|e| {
            MemoryError::Unavailable(format!(
                "Redis at {}: an answer record novapay cannot read: {e}",
                self.address
            ))
        })
    }
}

/// A transaction that first creates the session record unless it exists (SET NX: an existing session
/// keeps its owner and start time, as in SQLite).
fn create_if_missing(
    key: &str,
    owner: &SessionOwner,
    created_at_ms: i64,
) -> Result<::redis::Pipeline, MemoryError> {
    let record = to_json(&StoredSession {
        owner: owner.owner.clone(),
        user_id: owner.user_id.clone(),
        created_at_ms,
    })?;
    let mut pipe = ::redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(key)
        .arg(record)
        .arg("NX")
        .ignore();
    Ok(pipe)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, MemoryError> {
    serde_json::to_string(value).map_err(|e| MemoryError::Unavailable(e.to_string()))
}

impl ConversationStore for RedisStore {
    fn create_session(
        &self,
        id: &SessionId,
        owner: &SessionOwner,
    ) -> Result<SessionInfo, MemoryError> {
        let (skey, tkey) = (session_key(id), turns_key(id));
        let mut pipe = create_if_missing(&skey, owner, now_ms())?;
        self.refresh(&mut pipe, &[&skey, &tkey]);
        pipe.cmd("GET").arg(&skey);
        let (stored,): (Option<String>,) = self.with(|c| pipe.query(c))?;
        let stored = stored.ok_or_else(|| {
            MemoryError::Unavailable(format!(
                "Redis at {}: session vanished after insert",
                self.address
            ))
        })?;
        self.decode_session(id, &stored)
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, MemoryError> {
        let stored: Option<String> =
            self.with(|c| ::redis::cmd("GET").arg(session_key(id)).query(c))?;
        stored.map(|s| self.decode_session(id, &s)).transpose()
    }

    fn append(&self, id: &SessionId, turn: &Turn) -> Result<(), MemoryError> {
        let (skey, tkey) = (session_key(id), turns_key(id));
        let mut pipe = create_if_missing(&skey, &SessionOwner::default(), turn.created_at_ms)?;
        pipe.cmd("RPUSH").arg(&tkey).arg(to_json(turn)?).ignore();
        self.refresh(&mut pipe, &[&skey, &tkey]);
        self.with(|c| pipe.query::<()>(c))
    }

    fn history(&self, id: &SessionId, max_turns: usize) -> Result<Vec<Turn>, MemoryError> {
        if max_turns == 0 {
            // LRANGE -0 -1 would be the whole list.
            return Ok(Vec::new());
        }
        let from = -i64::try_from(max_turns).unwrap_or(i64::MAX);
        let raw: Vec<String> = self.with(|c| {
            ::redis::cmd("LRANGE")
                .arg(turns_key(id))
                .arg(from)
                .arg(-1)
                .query(c)
        })?;
        raw.iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    MemoryError::Unavailable(format!(
                        "Redis at {}: {} holds a turn novapay cannot read: {e}",
                        self.address,
                        turns_key(id)
                    ))
                })
            })
            .collect()
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool, MemoryError> {
        let answers: Vec<String> = self.with(|c| {
            ::redis::cmd("SMEMBERS")
                .arg(session_answers_key(id))
                .query(c)
        })?;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for query_id in &answers {
            pipe.cmd("DEL").arg(answer_key(query_id)).ignore();
            pipe.cmd("ZREM").arg(ANSWERS_BY_TIME).arg(query_id).ignore();
        }
        pipe.cmd("DEL").arg(session_answers_key(id)).ignore();
        pipe.cmd("DEL").arg(session_key(id)).arg(turns_key(id));
        let (removed,): (i64,) = self.with(|c| pipe.query(c))?;
        Ok(removed > 0)
    }

    fn record_answer(&self, record: &AnswerRecord) -> Result<(), MemoryError> {
        let key = answer_key(&record.query_id);
        let list = session_answers_key(&record.session);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(to_json(record)?)
            .ignore()
            .cmd("SADD")
            .arg(&list)
            .arg(&record.query_id)
            .ignore()
            .cmd("ZADD")
            .arg(ANSWERS_BY_TIME)
            .arg(record.created_at_ms)
            .arg(&record.query_id)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(ANSWERS_BY_TIME)
            .arg(0)
            .arg(-MAX_INDEXED_ANSWERS - 1)
            .ignore();
        self.refresh(&mut pipe, &[&key, &list]);
        self.with(|c| pipe.query::<()>(c))
    }

    fn answer_record(&self, query_id: &str) -> Result<Option<AnswerRecord>, MemoryError> {
        let stored: Option<String> =
            self.with(|c| ::redis::cmd("GET").arg(answer_key(query_id)).query(c))?;
        stored.map(|json| self.decode_answer(&json)).transpose()
    }

    fn set_feedback(&self, query_id: &str, feedback: &Feedback) -> Result<bool, MemoryError> {
        let Some(mut record) = self.answer_record(query_id)? else {
            return Ok(false);
        };
        record.feedback = Some(feedback.clone());
        // XX: only while the record lives; KEEPTTL: it expires when it would have.
        let set: Option<String> = self.with(|c| {
            ::redis::cmd("SET")
                .arg(answer_key(query_id))
                .arg(to_json(&record).map_err(|e| {
                    RedisError::from((::redis::ErrorKind::Client, "json", e.to_string()))
                })?)
                .arg("XX")
                .arg("KEEPTTL")
                .query(c)
        })?;
        Ok(set.is_some())
    }

    fn last_answer(&self, session: &SessionId) -> Result<Option<AnswerRecord>, MemoryError> {
        let ids: Vec<String> = self.with(|c| {
            ::redis::cmd("SMEMBERS")
                .arg(session_answers_key(session))
                .query(c)
        })?;
        if ids.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = ids.iter().map(|q| answer_key(q)).collect();
        let stored: Vec<Option<String>> =
            self.with(|c| ::redis::cmd("MGET").arg(&keys).query(c))?;
        let mut last: Option<AnswerRecord> = None;
        for json in stored.into_iter().flatten() {
            let record = self.decode_answer(&json)?;
            if last
                .as_ref()
                .is_none_or(|l| record.created_at_ms >= l.created_at_ms)
            {
                last = Some(record);
            }
        }
        Ok(last)
    }

    fn customer_sessions(&self, customer: &Customer) -> Result<Vec<SessionInfo>, MemoryError> {
        // No index by user: a scan over the session records (an erase or an export is rare; this
        // also finds sessions written before user ids were looked up).
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self.with(|c| {
                ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("novapay:session:*")
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !keys.is_empty() {
                let stored: Vec<Option<String>> =
                    self.with(|c| ::redis::cmd("MGET").arg(&keys).query(c))?;
                for (key, json) in keys.iter().zip(stored) {
                    let (Some(json), Some(raw)) = (json, key.strip_prefix("novapay:session:"))
                    else {
                        continue;
                    };
                    let Ok(id) = SessionId::try_from(raw.to_string()) else {
                        continue;
                    };
                    let info = self.decode_session(&id, &json)?;
                    if customer.owns(&id, info.user_id.as_deref()) {
                        found.push(info);
                    }
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    fn session_answers(&self, id: &SessionId) -> Result<Vec<AnswerRecord>, MemoryError> {
        let ids: Vec<String> = self.with(|c| {
            ::redis::cmd("SMEMBERS")
                .arg(session_answers_key(id))
                .query(c)
        })?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|q| answer_key(q)).collect();
        let stored: Vec<Option<String>> =
            self.with(|c| ::redis::cmd("MGET").arg(&keys).query(c))?;
        stored
            .into_iter()
            .flatten()
            .map(|json| self.decode_answer(&json))
            .collect()
    }

    fn erase_customer(&self, customer: &Customer) -> Result<(Vec<SessionId>, Erased), MemoryError> {
        super::erase_one_by_one(self, customer)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn answer_records(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AnswerRecord>, MemoryError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = self.with(|c| {
            ::redis::cmd("ZREVRANGEBYSCORE")
                .arg(ANSWERS_BY_TIME)
                .arg("+inf")
                .arg(since_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(limit.min(i64::MAX as usize) as i64)
                .query(c)
        })?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|q| answer_key(q)).collect();
        let stored: Vec<Option<String>> =
            self.with(|c| ::redis::cmd("MGET").arg(&keys).query(c))?;
        let mut records = Vec::new();
        let mut expired = Vec::new();
        for (id, json) in ids.iter().zip(stored) {
            match json {
                Some(json) => records.push(self.decode_answer(&json)?),
                None => expired.push(id.clone()),
            }
        }
        if !expired.is_empty() {
            // Records expire with their TTL; their place in the time index goes now.
            self.with(|c| {
                ::redis::cmd("ZREM")
                    .arg(ANSWERS_BY_TIME)
                    .arg(&expired)
                    .query::<()>(c)
            })?;
        }
        Ok(records)
    }
}
