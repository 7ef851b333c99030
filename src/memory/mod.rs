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
    #[error("invalid user id: {0}")]
    InvalidUserId(String),
    #[error("conversation storage is unavailable: {0}")]
    Unavailable(String),
}

/// A session id. Callers (the HTTP API, the CLI) name sessions with [`SessionId::parse`]: 1-64 letters,
/// digits, `-`, `_` or `.`. Internal channels (the Bitrix24 bot) keep their conversations under
/// `<channel>:<id>` ([`SessionId::internal`]): the `:` can never come out of `parse`, so no API caller
/// can name, read or append to a channel's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

const MAX_SESSION_ID: usize = 64;

fn id_chars_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SessionId {
    /// A session id given by a caller. Refuses the internal channels' namespace.
    pub fn parse(s: &str) -> Result<Self, MemoryError> {
        if id_chars_ok(s, MAX_SESSION_ID) {
            Ok(Self(s.to_string()))
        } else {
            Err(MemoryError::InvalidSessionId(format!(
                "{:?}: use 1-{MAX_SESSION_ID} letters, digits, '-', '_' or '.'",
                crate::logsafe::truncate_chars(s, 80)
            )))
        }
    }

    /// The conversation of an internal channel (`bitrix24`, ...) with the channel's own id for it.
    pub fn internal(channel: &str, id: &str) -> Result<Self, MemoryError> {
        let channel_ok = !channel.is_empty()
            && channel.len() <= 16
            && channel
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if channel_ok && id_chars_ok(id, MAX_SESSION_ID) {
            Ok(Self(format!("{channel}:{id}")))
        } else {
            Err(MemoryError::InvalidSessionId(format!(
                "{channel}:{:?}: not a usable channel conversation id",
                crate::logsafe::truncate_chars(id, 80)
            )))
        }
    }

    /// A stored id of either kind (read back from storage, never from a caller).
    fn from_stored(s: &str) -> Result<Self, MemoryError> {
        match s.split_once(':') {
            Some((channel, id)) => Self::internal(channel, id),
            None => Self::parse(s),
        }
    }

    /// Belongs to an internal channel: the HTTP API never serves it.
    pub fn is_internal(&self) -> bool {
        self.0.contains(':')
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
        Self::from_stored(&s)
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
    /// Who may use the session: a fingerprint of the API key that created it (never the key itself),
    /// `anonymous` when the server has no keys, `None` for internal channels and sessions from before
    /// owners were recorded (served to no API caller but an administrator).
    #[serde(default)]
    pub owner: Option<String>,
    pub user_id: Option<String>,
    pub created_at_ms: i64,
}

/// Who a new session belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOwner {
    /// The creating caller's key fingerprint (see [`SessionInfo::owner`]).
    pub owner: Option<String>,
    /// The integrator's end-user id, when given.
    pub user_id: Option<String>,
}

/// A customer's rating of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub rating: Rating,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub created_at_ms: i64,
    /// The offered section (1-based id) that answered the question, when the answer was a
    /// suggestion and one helped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<usize>,
    /// The customer asked for an operator after this answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator: bool,
}

/// What the customer was given, as filed (the assistant's `Outcome`, kept here so that storage does
/// not depend on the answering code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FiledOutcome {
    Answered,
    Suggested,
    HandedOff,
}

impl FiledOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Suggested => "suggested",
            Self::HandedOff => "handed_off",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "answered" => Some(Self::Answered),
            "suggested" => Some(Self::Suggested),
            "handed_off" => Some(Self::HandedOff),
            _ => None,
        }
    }
}

/// A section offered instead of an answer, as filed: what a customer who picks it later is shown
/// (a Bitrix24 customer answers "2"), and what feedback may name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiledSuggestion {
    /// 1-based.
    pub id: usize,
    pub source: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub section: String,
    #[serde(default)]
    pub text: String,
}

/// One answered question, filed with the session's turns (and deleted with them) so that the
/// customer can rate it and the support team can see what the knowledge base does not answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// The `query_id` the answer was given under.
    pub query_id: String,
    pub session: SessionId,
    pub question: String,
    pub answer: String,
    /// Documents cited.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The customer got no answer (sections were suggested, or the hand-off text replied).
    pub fallback: bool,
    /// From the question's arrival to the answer's end.
    pub latency_ms: u64,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// Absent in records filed before outcomes were: see [`AnswerRecord::outcome`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FiledOutcome>,
    /// `en` or `ru`; empty in records filed before languages were.
    #[serde(default)]
    pub language: String,
    /// The sections offered (a suggestion only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<FiledSuggestion>,
}

impl AnswerRecord {
    /// What the customer was given; a record from before outcomes were filed was answered unless
    /// the fallback replied.
    pub fn outcome(&self) -> FiledOutcome {
        self.outcome.unwrap_or(if self.fallback {
            FiledOutcome::HandedOff
        } else {
            FiledOutcome::Answered
        })
    }
}

/// Longest integrator `user_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// Whose data an erase or an export is about: a customer as the stores know them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Customer {
    /// The integrator's `user_id`, on API sessions (never on an internal channel's).
    User(String),
    /// A user of an internal channel (a Bitrix24 portal user id): the channel's conversations
    /// (`<channel>:<dialog>`) recorded with that user, and their private dialog `<channel>:<user>`.
    Channel { channel: String, user: String },
}

impl Customer {
    /// An integrator's `user_id`: 1-128 characters without control characters (the rule of
    /// `POST /api/v1/query`).
    pub fn user(id: &str) -> Result<Self, MemoryError> {
        if id.is_empty()
            || id.chars().count() > MAX_USER_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(MemoryError::InvalidUserId(format!(
                "a user id is 1-{MAX_USER_ID_CHARS} characters without control characters"
            )));
        }
        Ok(Self::User(id.to_string()))
    }

    /// A channel's user id (`bitrix24`, the portal's numeric user id): 1-64 letters, digits, '-',
    /// '_' or '.'.
    pub fn channel_user(channel: &str, id: &str) -> Result<Self, MemoryError> {
        if SessionId::internal(channel, id).is_err() {
            return Err(MemoryError::InvalidUserId(format!(
                "a {channel} user id is 1-{MAX_SESSION_ID} letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Self::Channel {
            channel: channel.to_string(),
            user: id.to_string(),
        })
    }

    /// The user id as given (without the channel).
    pub fn id(&self) -> &str {
        match self {
            Self::User(u) => u,
            Self::Channel { user, .. } => user,
        }
    }

    /// The channel (`None`: the API's `user_id`).
    pub fn channel(&self) -> Option<&str> {
        match self {
            Self::User(_) => None,
            Self::Channel { channel, .. } => Some(channel),
        }
    }

    /// Whether the session `id`, recorded with `user_id`, is this customer's.
    pub fn owns(&self, id: &SessionId, user_id: Option<&str>) -> bool {
        match self {
            Self::User(u) => !id.is_internal() && user_id == Some(u.as_str()),
            Self::Channel { channel, user } => match id.as_str().split_once(':') {
                Some((c, dialog)) if c == channel => {
                    user_id == Some(user.as_str()) || dialog == user
                }
                _ => false,
            },
        }
    }

    /// The private dialog of a channel user (`bitrix24:<user>`), which may predate recorded users.
    fn private_dialog(&self) -> Option<String> {
        match self {
            Self::User(_) => None,
            Self::Channel { channel, user } => Some(format!("{channel}:{user}")),
        }
    }
}

/// What an erase removed from the conversation store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub sessions: usize,
    pub turns: usize,
    pub answer_records: usize,
    pub ratings: usize,
    pub comments: usize,
}

impl Erased {
    fn add_session(&mut self, turns: usize, answers: &[AnswerRecord]) {
        self.sessions += 1;
        self.turns += turns;
        self.answer_records += answers.len();
        self.ratings += answers.iter().filter(|a| a.feedback.is_some()).count();
        self.comments += answers
            .iter()
            .filter(|a| {
                a.feedback
                    .as_ref()
                    .is_some_and(|f| f.comment.as_deref().is_some_and(|c| !c.is_empty()))
            })
            .count();
    }
}

/// One of a customer's conversations, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSession {
    pub info: SessionInfo,
    /// Oldest first.
    pub turns: Vec<Turn>,
    /// Oldest first, with their feedback.
    pub answers: Vec<AnswerRecord>,
}

/// Everything the store serves of `customer` (live conversations only), oldest conversation first.
/// Blocking.
pub fn export_customer(
    store: &dyn ConversationStore,
    customer: &Customer,
) -> Result<Vec<CustomerSession>, MemoryError> {
    let mut sessions = Vec::new();
    for info in store.customer_sessions(customer)? {
        let turns = store.history(&info.id, usize::MAX)?;
        let mut answers = store.session_answers(&info.id)?;
        answers.sort_by_key(|a| a.created_at_ms);
        sessions.push(CustomerSession {
            info,
            turns,
            answers,
        });
    }
    sessions.sort_by(|a, b| {
        (a.info.created_at_ms, a.info.id.as_str()).cmp(&(b.info.created_at_ms, b.info.id.as_str()))
    });
    Ok(sessions)
}

/// The erase of a store without a faster way: each of the customer's sessions counted, then deleted
/// with [`ConversationStore::delete_session`].
fn erase_one_by_one(
    store: &dyn ConversationStore,
    customer: &Customer,
) -> Result<(Vec<SessionId>, Erased), MemoryError> {
    let mut erased = Erased::default();
    let mut ids = Vec::new();
    for info in store.customer_sessions(customer)? {
        let turns = store.history(&info.id, usize::MAX)?.len();
        let answers = store.session_answers(&info.id)?;
        store.delete_session(&info.id)?;
        erased.add_session(turns, &answers);
        ids.push(info.id);
    }
    Ok((ids, erased))
}

/// Longest `query_id` accepted from a caller (a UUID is 36).
pub const MAX_QUERY_ID: usize = 64;

/// Whether `query_id` can name an answer record (the characters of a session id).
pub fn query_id_ok(query_id: &str) -> bool {
    id_chars_ok(query_id, MAX_QUERY_ID)
}

pub trait ConversationStore: Send + Sync {
    /// Creates the session unless it exists; an existing session keeps its owner and start time.
    fn create_session(
        &self,
        id: &SessionId,
        owner: &SessionOwner,
    ) -> Result<SessionInfo, MemoryError>;
    fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, MemoryError>;
    /// Appends a turn, creating the session if it does not exist yet.
    fn append(&self, id: &SessionId, turn: &Turn) -> Result<(), MemoryError>;
    /// The last `max_turns` turns, oldest first.
    fn history(&self, id: &SessionId, max_turns: usize) -> Result<Vec<Turn>, MemoryError>;
    /// Returns whether the session existed. Its answer records and their feedback go with it.
    fn delete_session(&self, id: &SessionId) -> Result<bool, MemoryError>;
    /// Files the record of an answer given in a session (after its turns were appended).
    fn record_answer(&self, record: &AnswerRecord) -> Result<(), MemoryError>;
    /// The record filed under `query_id`, while its session lives.
    fn answer_record(&self, query_id: &str) -> Result<Option<AnswerRecord>, MemoryError>;
    /// Sets (or replaces) the feedback on an answer; returns whether the record exists.
    fn set_feedback(&self, query_id: &str, feedback: &Feedback) -> Result<bool, MemoryError>;
    /// Records filed since `since_ms`, newest first, at most `limit`.
    fn answer_records(&self, since_ms: i64, limit: usize)
        -> Result<Vec<AnswerRecord>, MemoryError>;
    /// The session's latest record (what a customer's "2" or "operator" refers to).
    fn last_answer(&self, session: &SessionId) -> Result<Option<AnswerRecord>, MemoryError>;
    /// The live sessions of `customer` (see [`Customer::owns`]).
    fn customer_sessions(&self, customer: &Customer) -> Result<Vec<SessionInfo>, MemoryError>;
    /// Every answer record filed in the session, in no particular order.
    fn session_answers(&self, id: &SessionId) -> Result<Vec<AnswerRecord>, MemoryError>;
    /// Deletes every session of `customer` with its turns, answer records and feedback (expired
    /// ones not yet purged included); returns the sessions deleted and the counts. Idempotent.
    fn erase_customer(&self, customer: &Customer) -> Result<(Vec<SessionId>, Erased), MemoryError>;
    /// `sqlite` or `redis`, for reports of what was erased where.
    fn backend(&self) -> &'static str;
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

/// Opens the configured store. `default_sqlite` is the state directory's file; `ttl` is how long an
/// idle conversation is kept, in SQLite as in Redis (`None`: forever). SQLite purges expired
/// conversations in the background. Redis must answer now: a replica that cannot reach the shared
/// history should not start.
pub fn open(
    spec: &MemorySpec,
    default_sqlite: &Path,
    ttl: Option<Duration>,
) -> Result<Arc<dyn ConversationStore>, MemoryError> {
    Ok(match spec {
        MemorySpec::Sqlite(path) => {
            let store = Arc::new(
                SqliteStore::open(path.as_deref().unwrap_or(default_sqlite))?.with_ttl(ttl),
            );
            if ttl.is_some() {
                sqlite::purge_in_background(&store, sqlite::PURGE_EVERY);
            }
            store
        }
        MemorySpec::Redis(url) => Arc::new(RedisStore::open(url, ttl)?),
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
