//! What the support team needs to see, from the answer records in conversation memory: how many
//! questions were answered, the questions the knowledge base could not answer (most frequent first:
//! what to write next), the answers customers rated down with their question and sources, and
//! latency percentiles. Read by `GET /api/v1/stats` (administrators) and `novapay report`.
//!
//! The report contains customers' question text: it is for administrators only (see SECURITY.md).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::memory::{AnswerRecord, ConversationStore, FiledOutcome, MemoryError, Rating};

/// Records read at most for one report (the newest).
pub const MAX_RECORDS: usize = 100_000;
/// Entries per list in a report.
pub const MAX_LISTED: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct SupportReport {
    /// Unix ms; records from this time on are counted.
    pub since_ms: i64,
    pub questions_answered: usize,
    /// Not answered: sections suggested, or handed off (the seed's count).
    pub fallback_answers: usize,
    /// What customers were given, over all languages.
    pub outcomes: OutcomeCounts,
    /// The same per language (`en`, `ru`; `unknown` for records filed before languages were).
    pub outcomes_by_language: BTreeMap<String, OutcomeCounts>,
    /// Fallback questions grouped by their text (case and spacing ignored), most frequent first.
    pub unanswered_questions: Vec<UnansweredQuestion>,
    pub feedback: FeedbackCounts,
    /// Answers rated down, newest first.
    pub thumbs_down: Vec<RatedAnswer>,
    pub latency_ms: Latency,
    /// True when more than [`MAX_RECORDS`] records fell in the period (the newest were counted).
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnansweredQuestion {
    /// The most recent wording.
    pub question: String,
    pub count: usize,
    pub last_asked_ms: i64,
}

/// Answered / suggested (and what followed) / handed off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// A checked generated or quoted answer.
    pub answered: usize,
    /// Sections offered instead of an answer (all of them, whatever followed).
    pub suggested: usize,
    /// Of those, the customer said an offered section answered the question.
    pub suggested_and_helped: usize,
    /// Of those, the customer asked for an operator.
    pub suggested_then_operator: usize,
    /// Nothing relevant: the hand-off text.
    pub handed_off: usize,
}

impl OutcomeCounts {
    fn count(&mut self, r: &AnswerRecord) {
        match r.outcome() {
            FiledOutcome::Answered => self.answered += 1,
            FiledOutcome::HandedOff => self.handed_off += 1,
            FiledOutcome::Suggested => {
                self.suggested += 1;
                match &r.feedback {
                    Some(f) if f.operator => self.suggested_then_operator += 1,
                    Some(f) if f.suggestion.is_some() && f.rating == Rating::Up => {
                        self.suggested_and_helped += 1
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedbackCounts {
    pub up: usize,
    pub down: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatedAnswer {
    pub query_id: String,
    pub question: String,
    pub answer: String,
    pub sources: Vec<String>,
    pub comment: Option<String>,
    pub fallback: bool,
    pub answered_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

/// The report over the records filed since `since_ms`. Blocking.
pub fn support_report(
    store: &dyn ConversationStore,
    since_ms: i64,
) -> Result<SupportReport, MemoryError> {
    let records = store.answer_records(since_ms, MAX_RECORDS + 1)?;
    let truncated = records.len() > MAX_RECORDS;
    Ok(build(
        &records[..records.len().min(MAX_RECORDS)],
        since_ms,
        truncated,
    ))
}

/// Case, spacing and closing punctuation do not make a different question.
fn normalized(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['?', '!', '.', '？'])
        .trim()
        .to_string()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `records` newest first (as the store returns them).
pub fn build(records: &[AnswerRecord], since_ms: i64, truncated: bool) -> SupportReport {
    let mut unanswered: HashMap<String, UnansweredQuestion> = HashMap::new();
    let mut feedback = FeedbackCounts::default();
    let mut thumbs_down = Vec::new();
    let mut latencies: Vec<u64> = Vec::with_capacity(records.len());
    let mut outcomes = OutcomeCounts::default();
    let mut by_language: BTreeMap<String, OutcomeCounts> = BTreeMap::new();
    for r in records {
        latencies.push(r.latency_ms);
        outcomes.count(r);
        let language = if r.language.is_empty() {
            "unknown"
        } else {
            r.language.as_str()
        };
        by_language
            .entry(language.to_string())
            .or_default()
            .count(r);
        if r.fallback {
            let entry = unanswered
                .entry(normalized(&r.question))
                .or_insert_with(|| UnansweredQuestion {
                    question: r.question.clone(),
                    count: 0,
                    last_asked_ms: r.created_at_ms,
                });
            entry.count += 1;
            if r.created_at_ms > entry.last_asked_ms {
                entry.last_asked_ms = r.created_at_ms;
                entry.question = r.question.clone();
            }
        }
        match r.feedback.as_ref().map(|f| f.rating) {
            Some(Rating::Up) => feedback.up += 1,
            Some(Rating::Down) => {
                feedback.down += 1;
                thumbs_down.push(RatedAnswer {
                    query_id: r.query_id.clone(),
                    question: r.question.clone(),
                    answer: r.answer.clone(),
                    sources: r.sources.clone(),
                    comment: r.feedback.as_ref().and_then(|f| f.comment.clone()),
                    fallback: r.fallback,
                    answered_at_ms: r.created_at_ms,
                });
            }
            None => {}
        }
    }
    let mut unanswered: Vec<UnansweredQuestion> = unanswered.into_values().collect();
    unanswered.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.last_asked_ms.cmp(&a.last_asked_ms))
            .then_with(|| a.question.cmp(&b.question))
    });
    unanswered.truncate(MAX_LISTED);
    thumbs_down.sort_by_key(|d| std::cmp::Reverse(d.answered_at_ms));
    thumbs_down.truncate(MAX_LISTED);
    latencies.sort_unstable();
    SupportReport {
        since_ms,
        questions_answered: records.len(),
        fallback_answers: records.iter().filter(|r| r.fallback).count(),
        outcomes,
        outcomes_by_language: by_language,
        unanswered_questions: unanswered,
        feedback,
        thumbs_down,
        latency_ms: Latency {
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
        },
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Feedback, SessionId};

    fn record(n: i64, question: &str, fallback: bool, latency_ms: u64) -> AnswerRecord {
        AnswerRecord {
            query_id: format!("q{n}"),
            session: SessionId::parse("s1").unwrap(),
            question: question.into(),
            answer: format!("answer {n}"),
            sources: if fallback {
                vec![]
            } else {
                vec!["fees.md".into()]
            },
            fallback,
            latency_ms,
            created_at_ms: n,
            feedback: None,
            outcome: None,
            language: String::new(),
            suggestions: Vec::new(),
        }
    }

    fn feedback(rating: Rating, suggestion: Option<usize>, operator: bool) -> Feedback {
        Feedback {
            rating,
            comment: None,
            created_at_ms: 0,
            suggestion,
            operator,
        }
    }

    #[test]
    fn outcomes_are_counted_per_language_with_what_followed_a_suggestion() {
        let filed =
            |n: i64, language: &str, outcome: Option<FiledOutcome>, fb: Option<Feedback>| {
                let mut r = record(n, "q", outcome != Some(FiledOutcome::Answered), 10);
                r.outcome = outcome;
                r.language = language.into();
                r.feedback = fb;
                r
            };
        let mut records = vec![
            filed(1, "en", Some(FiledOutcome::Answered), None),
            filed(
                2,
                "en",
                Some(FiledOutcome::Suggested),
                Some(feedback(Rating::Up, Some(2), false)),
            ),
            filed(
                3,
                "ru",
                Some(FiledOutcome::Suggested),
                Some(feedback(Rating::Down, None, true)),
            ),
            filed(4, "ru", Some(FiledOutcome::Suggested), None),
            filed(5, "ru", Some(FiledOutcome::HandedOff), None),
            // Filed before outcomes and languages were: the fallback flag decides.
            filed(6, "", None, None),
        ];
        records[5].fallback = false;
        let report = build(&records, 0, false);
        let en = &report.outcomes_by_language["en"];
        assert_eq!(
            (en.answered, en.suggested, en.suggested_and_helped),
            (1, 1, 1)
        );
        let ru = &report.outcomes_by_language["ru"];
        assert_eq!(
            (
                ru.suggested,
                ru.suggested_then_operator,
                ru.suggested_and_helped,
                ru.handed_off
            ),
            (2, 1, 0, 1)
        );
        assert_eq!(report.outcomes_by_language["unknown"].answered, 1);
        assert_eq!(report.outcomes.answered, 2);
        assert_eq!(report.outcomes.suggested, 3);
        assert_eq!(report.outcomes.handed_off, 1);
    }

    #[test]
    fn fallbacks_group_by_wording_most_frequent_first_and_percentiles_are_nearest_rank() {
        let mut records = vec![
            record(1, "Do you support crypto?", true, 10),
            record(2, "do you  support CRYPTO", true, 20),
            record(3, "What is the fee?", false, 30),
            record(4, "Can I get a loan?", true, 40),
            record(5, "Do you support crypto?!", true, 50),
        ];
        records[2].feedback = Some(Feedback {
            comment: Some("wrong fee".into()),
            created_at_ms: 6,
            ..feedback(Rating::Down, None, false)
        });
        records[3].feedback = Some(feedback(Rating::Up, None, false));
        records.reverse();
        let report = build(&records, 0, false);
        assert_eq!(report.questions_answered, 5);
        assert_eq!(report.fallback_answers, 4);
        assert_eq!(report.unanswered_questions.len(), 2);
        assert_eq!(report.unanswered_questions[0].count, 3);
        assert_eq!(
            report.unanswered_questions[0].question,
            "Do you support crypto?!"
        );
        assert_eq!(report.unanswered_questions[1].question, "Can I get a loan?");
        assert_eq!((report.feedback.up, report.feedback.down), (1, 1));
        assert_eq!(report.thumbs_down[0].question, "What is the fee?");
        assert_eq!(report.thumbs_down[0].sources, ["fees.md"]);
        assert_eq!(report.thumbs_down[0].comment.as_deref(), Some("wrong fee"));
        assert_eq!(report.latency_ms.p50, Some(30));
        assert_eq!(report.latency_ms.p95, Some(50));
        assert_eq!(build(&[], 0, false).latency_ms.p50, None);
    }
}
