//! Answer records and their feedback: every answered question is filed under its `query_id` with the
//! session's turns, so that the customer can rate it (only the session's owner) and the support
//! report can count it.

use crate::memory::{now_ms, AnswerRecord, Feedback, FiledOutcome, FiledSuggestion, SessionInfo};
pub use crate::memory::{query_id_ok, Rating, SessionId};

use super::report::{support_report, SupportReport};
use super::{AnswerError, Assistant, Language, Outcome, Source, Suggestion};

/// Longest feedback comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// What a door knows about an answer it gave, for filing.
pub struct AnsweredTurn<'a> {
    pub query_id: &'a str,
    pub session: &'a SessionId,
    pub question: &'a str,
    pub answer: &'a str,
    pub sources: &'a [Source],
    pub outcome: Outcome,
    pub language: Language,
    /// The sections offered (a suggestion only).
    pub suggestions: &'a [Suggestion],
    pub latency_ms: u64,
}

/// A customer's feedback on one answer.
#[derive(Debug, Clone)]
pub struct Rate {
    pub query_id: String,
    pub rating: Rating,
    pub comment: Option<String>,
    /// The offered section (1-based) that helped; only for a suggestion.
    pub suggestion: Option<usize>,
    /// The customer asked for an operator after this answer.
    pub operator: bool,
    /// When given, the answer must have been given in this session.
    pub session: Option<SessionId>,
}

/// Why a rating was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum RateOutcome {
    Stored,
    /// No such answer, or one in a session the caller may not use (the same to the caller).
    NotFound,
    /// The answer was given in another of the caller's sessions than the one named.
    OtherSession,
    /// The answer offered no suggestion with this id (`offered`: how many it offered).
    NoSuchSuggestion {
        offered: usize,
    },
}

impl From<Outcome> for FiledOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Answered => FiledOutcome::Answered,
            Outcome::Suggested => FiledOutcome::Suggested,
            Outcome::HandedOff => FiledOutcome::HandedOff,
        }
    }
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
            fallback: turn.outcome != Outcome::Answered,
            latency_ms: turn.latency_ms,
            created_at_ms: now_ms(),
            feedback: None,
            outcome: Some(turn.outcome.into()),
            language: match turn.language {
                Language::En => "en",
                Language::Ru => "ru",
            }
            .to_string(),
            suggestions: turn
                .suggestions
                .iter()
                .map(|s| FiledSuggestion {
                    id: s.id,
                    source: s.source.clone(),
                    title: s.title.clone(),
                    section: s.section.clone(),
                    text: s.text.clone(),
                })
                .collect(),
        })?;
        Ok(())
    }

    /// The latest answer filed in `session` (a channel's own conversation: no ownership check).
    /// Blocking.
    pub fn last_answer(&self, session: &SessionId) -> Result<Option<AnswerRecord>, AnswerError> {
        Ok(self.memory.last_answer(session)?)
    }

    /// Stores feedback on the answer `rate.query_id` when `may_rate` allows the caller to use its
    /// session, the session is the one named (if any) and the suggestion named (if any) was offered.
    /// Nothing is stored otherwise. Blocking.
    pub fn rate_answer(
        &self,
        rate: Rate,
        may_rate: impl FnOnce(&SessionInfo) -> bool,
    ) -> Result<RateOutcome, AnswerError> {
        let Some(record) = self.memory.answer_record(&rate.query_id)? else {
            return Ok(RateOutcome::NotFound);
        };
        match self.memory.session(&record.session)? {
            Some(info) if may_rate(&info) => {}
            _ => return Ok(RateOutcome::NotFound),
        }
        if rate.session.as_ref().is_some_and(|s| *s != record.session) {
            return Ok(RateOutcome::OtherSession);
        }
        if let Some(id) = rate.suggestion {
            if !record.suggestions.iter().any(|s| s.id == id) {
                return Ok(RateOutcome::NoSuchSuggestion {
                    offered: record.suggestions.len(),
                });
            }
        }
        let feedback = Feedback {
            rating: rate.rating,
            comment: rate.comment,
            created_at_ms: now_ms(),
            suggestion: rate.suggestion,
            operator: rate.operator,
        };
        if !self.memory.set_feedback(&rate.query_id, &feedback)? {
            return Ok(RateOutcome::NotFound);
        }
        self.metrics
            .feedback
            .with_label_values(&[rate.rating.as_str()])
            .inc();
        Ok(RateOutcome::Stored)
    }

    /// The support report over answers since `since_ms`. Blocking.
    pub fn support_report(&self, since_ms: i64) -> Result<SupportReport, AnswerError> {
        Ok(support_report(self.memory.as_ref(), since_ms)?)
    }
}
