//! A customer's data on request (152-FZ art. 14 and 21, GDPR art. 15 and 17): everything stored of
//! one customer exported, or erased from every place the assistant keeps it — the conversation store
//! (SQLite or Redis: sessions, turns, answer records, ratings and comments), the answer cache, and
//! answers still being generated. No HTTP here: `DELETE /api/v1/users/{id}`, `novapay forget` and
//! their export counterparts are thin shells over these functions.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::memory::{self, ConversationStore, FiledSuggestion, MemoryError, Speaker};
pub use crate::memory::{Customer, CustomerSession, Erased, MAX_USER_ID_CHARS};

use super::{AnswerError, Assistant, SessionId};

/// How long an erasure is remembered for answers in flight: longer than any answer can take
/// (generation timeout plus queue wait).
const REMEMBER_ERASURES: Duration = Duration::from_secs(3600);
/// Erasures remembered at most (the oldest go first).
const MAX_ERASURES: usize = 10_000;

/// Recent erasures, so that an answer in flight for an erased customer is not stored afterwards.
///
/// A turn stores its answer under the read lock after checking that no erasure of its customer
/// began after the turn did; an erasure is noted under the write lock before the stores are
/// erased. So a turn that checked before the note has stored before it (and the erase removes
/// what it stored), and a turn that checks after it stores nothing.
#[derive(Default)]
pub(crate) struct Erasures {
    recent: RwLock<Vec<(Instant, Customer)>>,
}

impl Erasures {
    fn note(&self, customer: &Customer) {
        let mut recent = self.recent.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        recent.retain(|(at, _)| now.duration_since(*at) < REMEMBER_ERASURES);
        if recent.len() >= MAX_ERASURES {
            recent.remove(0);
        }
        recent.push((now, customer.clone()));
    }

    /// Runs `store` unless the customer of `session` (recorded with `user_id`) was erased after
    /// `since`; returns whether it ran.
    pub(crate) fn store_unless_erased<E>(
        &self,
        since: Instant,
        session: &SessionId,
        user_id: Option<&str>,
        store: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        let recent = self.recent.read().unwrap_or_else(|p| p.into_inner());
        let erased = recent
            .iter()
            .any(|(at, c)| *at >= since && c.owns(session, user_id));
        if erased {
            return Ok(false);
        }
        store()?;
        Ok(true)
    }
}

/// What an erase removed, per store.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerErased {
    pub user_id: String,
    /// `bitrix24` for a portal user; absent for the API's `user_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `false` when nothing of the customer was found (a repeated erase, an unknown id).
    pub removed_anything: bool,
    pub removed: Removed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// The conversation store: sessions, turns, answer records, ratings, comments.
    pub conversations: StoreErased,
    /// Cached answers built from the customer's questions (`None` when the cache is in another
    /// process: a running server drops them at their next use, as their conversation is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_cache: Option<CacheErased>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreErased {
    /// `sqlite` or `redis`.
    pub store: &'static str,
    #[serde(flatten)]
    pub counts: Erased,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CacheErased {
    pub entries: usize,
}

impl CustomerErased {
    fn new(
        customer: &Customer,
        store: &dyn ConversationStore,
        counts: Erased,
        cache: Option<usize>,
    ) -> Self {
        Self {
            user_id: customer.id().to_string(),
            channel: customer.channel().map(str::to_string),
            removed_anything: counts != Erased::default() || cache.is_some_and(|n| n > 0),
            removed: Removed {
                conversations: StoreErased {
                    store: store.backend(),
                    counts,
                },
                answer_cache: cache.map(|entries| CacheErased { entries }),
            },
        }
    }
}

/// Erases `customer` from a conversation store alone (`novapay forget`, no server in this process).
/// Blocking.
pub fn erase_from_store(
    store: &dyn ConversationStore,
    customer: &Customer,
) -> Result<CustomerErased, MemoryError> {
    let (_, counts) = store.erase_customer(customer)?;
    Ok(CustomerErased::new(customer, store, counts, None))
}

/// A customer's stored data, as the API can show it: the conversations (messages as
/// `GET /api/v1/session/{id}` shows them) with each answer's record and rating.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerExport {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub exported_at: String,
    pub sessions: Vec<ExportedSession>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedSession {
    pub session_id: String,
    pub user_id: Option<String>,
    pub created_at: String,
    pub messages: Vec<ExportedMessage>,
    pub answers: Vec<ExportedAnswer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedMessage {
    pub role: &'static str,
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedAnswer {
    pub query_id: String,
    pub question: String,
    pub answer: String,
    pub sources: Vec<String>,
    /// `answered`, `suggested` or `handed_off`.
    pub outcome: &'static str,
    pub answered_at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<FiledSuggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<ExportedRating>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportedRating {
    /// `up` or `down`.
    pub rating: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<usize>,
    pub operator: bool,
    pub rated_at: String,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Everything `store` serves of `customer`. Blocking.
pub fn export_from_store(
    store: &dyn ConversationStore,
    customer: &Customer,
) -> Result<CustomerExport, MemoryError> {
    let sessions = memory::export_customer(store, customer)?;
    Ok(CustomerExport {
        user_id: customer.id().to_string(),
        channel: customer.channel().map(str::to_string),
        exported_at: rfc3339(memory::now_ms()),
        sessions: sessions.into_iter().map(exported).collect(),
    })
}

fn exported(s: CustomerSession) -> ExportedSession {
    ExportedSession {
        session_id: s.info.id.to_string(),
        user_id: s.info.user_id,
        created_at: rfc3339(s.info.created_at_ms),
        messages: s
            .turns
            .into_iter()
            .map(|t| ExportedMessage {
                role: match t.role {
                    Speaker::User => "user",
                    Speaker::Assistant => "assistant",
                },
                content: t.content,
                sources: t.sources,
                timestamp: rfc3339(t.created_at_ms),
            })
            .collect(),
        answers: s
            .answers
            .into_iter()
            .map(|a| ExportedAnswer {
                outcome: a.outcome().as_str(),
                query_id: a.query_id,
                question: a.question,
                answer: a.answer,
                sources: a.sources,
                answered_at: rfc3339(a.created_at_ms),
                suggestions: a.suggestions,
                rating: a.feedback.map(|f| ExportedRating {
                    rating: f.rating.as_str(),
                    comment: f.comment,
                    suggestion: f.suggestion,
                    operator: f.operator,
                    rated_at: rfc3339(f.created_at_ms),
                }),
            })
            .collect(),
    }
}

impl Assistant {
    /// Erases everything stored of `customer`: its conversations with their answer records and
    /// feedback, the cached answers built from its questions, and any answer of it still in
    /// flight (it will not be stored). Idempotent: a second call finds nothing. Blocking.
    pub fn erase_customer(&self, customer: &Customer) -> Result<CustomerErased, AnswerError> {
        self.erasures.note(customer);
        let (sessions, counts) = self.memory.erase_customer(customer)?;
        let cached = self
            .cache
            .forget(|origin| sessions.contains(origin) || customer.owns(origin, None));
        tracing::info!(
            sessions = counts.sessions,
            turns = counts.turns,
            answer_records = counts.answer_records,
            cached,
            "customer erased"
        );
        Ok(CustomerErased::new(
            customer,
            self.memory.as_ref(),
            counts,
            Some(cached),
        ))
    }

    /// Everything stored of `customer`, as the API can show it. Blocking.
    pub fn export_customer(&self, customer: &Customer) -> Result<CustomerExport, AnswerError> {
        Ok(export_from_store(self.memory.as_ref(), customer)?)
    }

    /// Records that the channel conversation `session` is `user`'s (a Bitrix24 portal user id), so
    /// that an erase of that user finds it; an existing conversation keeps its first user. Blocking.
    pub fn claim_channel_session(
        &self,
        session: &SessionId,
        user: &str,
    ) -> Result<(), AnswerError> {
        self.memory.create_session(
            session,
            &memory::SessionOwner {
                owner: None,
                user_id: Some(user.to_string()),
            },
        )?;
        Ok(())
    }
}
