//! Answer records and their feedback: every answered question is filed under its `query_id` with the
//! session's turns, so that the customer can rate it (only the session's owner) and the support
//! report can count it.

use crate::memory::{now_ms, AnswerRecord, Feedback, SessionId, SessionInfo};
pub use crate::memory::{query_id_ok, Rating};

use super::report::{support_report, SupportReport};
use super::{AnswerError, Assistant, Source};

/// Longest feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// What a door knows about an answer it gave, for filing.
pub struct AnsweredTurn<'a> {
    pub query_id: &'a str,
    pub session: &'a SessionId,
    pub question: &'a str,
    pub answer: &'a str,
    pub sources: &'a [Source],
    pub fallback: bool,
    pub latency_ms: u64,
}

/// Why a rating was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum RateOutcome {
    Stored,
    /// No such answer, or one in a session the caller may not use (the same to the caller).
    NotFound,
}

impl Assistant {
    /// Files the record of an answer (after [`Assistant::record`] stored its turns). Blocking.
    pub fn file_answer(&self, turn: &AnsweredTurn) -> Result<(), AnswerError> {
        let mut sources: Vec<String> = turn.sources.iter().map(|s| s.source.clone()).collect();
        sources.dedup();
        self.memory.record_answer(&AnswerRecord {
            query_id: turn.query_id.to_string(),
            session: turn.session.clone(),
            question: turn.question.to_string(),
            answer: turn.answer.to_string(),
            sources,
            fallback: turn.fallback,
            latency_ms: turn.latency_ms,
            created_at_ms: now_ms(),
            feedback: None,
        })?;
        Ok(())
    }

    /// Stores a rating on the answer `query_id` when `may_rate` allows the caller to use its session.
    /// Blocking.
    pub fn rate_answer(
        &self,
        query_id: &str,
        rating: Rating,
        comment: Option<String>,
        may_rate: impl FnOnce(&SessionInfo) -> bool,
    ) -> Result<RateOutcome, AnswerError> {
        let feedback = Feedback {
            rating,
            comment,
            created_at_ms: now_ms(),
        };
        let Some(record) = self.memory.answer_record(query_id)? else {
            return Ok(RateOutcome::NotFound);
        };
        match self.memory.session(&record.session)? {
            Some(info) if may_rate(&info) => {}
            _ => return Ok(RateOutcome::NotFound),
        }
        if !self.memory.set_feedback(query_id, &feedback)? {
            return Ok(RateOutcome::NotFound);
        }
        self.metrics
            .feedback
            .with_label_values(&[rating.as_str()])
            .inc();
        Ok(RateOutcome::Stored)
    }

    /// The support report over answers since `since_ms`. Blocking.
    pub fn support_report(&self, since_ms: i64) -> Result<SupportReport, AnswerError> {
        Ok(support_report(self.memory.as_ref(), since_ms)?)
    }
}
