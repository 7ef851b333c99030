//! Knowledge-base regression questions: every question of a JSONL file goes through the assistant
//! exactly as an API request would (a session of its own, earlier turns as history, retrieval, the
//! gate, the configured answer mode), and each answer is checked: the expected source among the
//! first three, an expected figure present, no forbidden string, an unanswerable question refused,
//! and no figure that the answer's sources do not state.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{read_jsonl, EvalError};
use crate::assistant::checks::figures::FigurePool;
use crate::assistant::{Assistant, Outcome};
use crate::memory::{SessionId, Speaker, Turn};

/// One line of the questions file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbQuestion {
    pub id: String,
    /// The customer's messages in order; the last one is checked, the earlier ones are its history.
    pub turns: Vec<String>,
    /// A source file (or several acceptable ones) expected among the first three sources.
    #[serde(default)]
    pub expect_source: Option<OneOrMany>,
    /// At least one of these strings must be in the answer.
    #[serde(default)]
    pub expect_any: Vec<String>,
    /// None of these strings may be in the answer (case-insensitive).
    #[serde(default)]
    pub expect_none: Vec<String>,
    /// The knowledge base does not answer it: the fallback must reply.
    #[serde(default)]
    pub unanswerable: bool,
    /// Free label, e.g. "tune" or "heldout"; totals are also given per split.
    #[serde(default)]
    pub split: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn contains(&self, source: &str) -> bool {
        match self {
            OneOrMany::One(s) => s == source,
            OneOrMany::Many(v) => v.iter().any(|s| s == source),
        }
    }
}

pub fn read_questions(path: &Path) -> Result<Vec<KbQuestion>, EvalError> {
    let questions: Vec<KbQuestion> = read_jsonl(path)?;
    for q in &questions {
        if q.turns.is_empty() || q.turns.iter().any(|t| t.trim().is_empty()) {
            return Err(EvalError::Data {
                path: path.display().to_string(),
                reason: format!(
                    "question {}: `turns` must hold at least one non-empty message",
                    q.id
                ),
            });
        }
    }
    Ok(questions)
}

#[derive(Debug, Clone, Serialize)]
pub struct QuestionResult {
    pub id: String,
    pub split: Option<String>,
    pub question: String,
    pub answer: String,
    pub unanswerable: bool,
    /// Not answered (suggested or handed off).
    pub refused: bool,
    /// `answered`, `suggested` or `handed_off`.
    pub outcome: Outcome,
    /// The expected source was in front of the customer: among the cited sources of an answer, or
    /// among the suggestions. None when the question names no expected source.
    pub source_in_front: Option<bool>,
    pub extractive: bool,
    pub cached: bool,
    /// The first three sources retrieval found.
    pub top_sources: Vec<String>,
    /// None when the question names no expected source.
    pub source_in_top3: Option<bool>,
    /// The rank (1-based) of the first expected source among the distinct articles retrieval
    /// ranked, whatever the gate decided: how far the right article is from the customer. None
    /// when the question names no expected source or retrieval did not find it.
    pub source_rank: Option<usize>,
    pub expected_present: Option<bool>,
    pub forbidden_found: Vec<String>,
    pub sentences_removed: usize,
    /// Figures of the served answer that its excerpts, the question and the support contacts do not
    /// state.
    pub unsupported_figures: Vec<String>,
    pub elapsed_ms: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub questions: usize,
    pub answerable: usize,
    pub unanswerable: usize,
    pub with_expected_source: usize,
    pub source_in_top3: usize,
    /// Questions whose expected source is the first article retrieval ranked.
    pub source_ranked_first: usize,
    pub with_expected_figure: usize,
    pub expected_present: usize,
    pub forbidden_found: usize,
    pub unanswerable_refused: usize,
    pub answerable_refused: usize,
    /// Answerable questions per outcome.
    pub answerable_answered: usize,
    pub answerable_suggested: usize,
    pub answerable_handed_off: usize,
    /// Off-topic questions per outcome (answered must be 0).
    pub unanswerable_answered: usize,
    pub unanswerable_suggested: usize,
    pub unanswerable_handed_off: usize,
    /// Answerable questions with an expected source that had it in front of the customer.
    pub source_in_front: usize,
    pub answers_with_unsupported_figures: usize,
    pub sentences_removed: usize,
    pub extractive: usize,
    pub cached: usize,
    pub passed: usize,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswersReport {
    pub answer_mode: String,
    pub results: Vec<QuestionResult>,
    pub totals: Totals,
    /// Totals per `split` label.
    pub splits: Vec<(String, Totals)>,
}

/// Runs the questions. Blocking (it generates answers).
pub fn evaluate(
    assistant: &std::sync::Arc<Assistant>,
    questions: &[KbQuestion],
    progress: &dyn Fn(&str, usize, usize),
) -> Result<AnswersReport, EvalError> {
    let failed = |e: crate::assistant::AnswerError| EvalError::Failed(e.to_string());
    let mut results = Vec::new();
    for (n, q) in questions.iter().enumerate() {
        let session = SessionId::new_random();
        let started = Instant::now();
        let mut answer = None;
        for turn in &q.turns {
            answer = Some(
                assistant
                    .answer_blocking(&session, turn, &mut |_| {})
                    .map_err(failed)?,
            );
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let answer = answer.expect("at least one turn");
        let last = q.turns.last().expect("at least one turn");
        // What retrieval found for the last turn with the same history the answer had.
        let history: Vec<Turn> = q.turns[..q.turns.len() - 1]
            .iter()
            .map(|t| Turn {
                role: Speaker::User,
                content: t.clone(),
                sources: Vec::new(),
                created_at_ms: 0,
            })
            .collect();
        let retrieval = assistant
            .retrieve(last, &history)
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        let top_sources: Vec<String> = retrieval
            .hits
            .iter()
            .take(3)
            .map(|h| h.chunk.source.clone())
            .collect();
        // An answer draws on the top excerpts; a suggestion quotes the sections it offers.
        let pool_texts: Vec<String> = retrieval
            .hits
            .iter()
            .take(assistant.config.top_k)
            .map(|h| format!("{}\n{}", h.chunk.heading, h.chunk.text))
            .chain(
                answer
                    .suggestions
                    .iter()
                    .map(|s| format!("{}\n{}\n{}", s.title, s.section, s.text)),
            )
            .collect();
        let mut pool = FigurePool::new(&pool_texts);
        // The customer's words and the support contacts may be repeated; a zero cost must come
        // from the excerpts.
        for t in q
            .turns
            .iter()
            .chain([&assistant.config.fallback_en, &assistant.config.fallback_ru])
        {
            pool.add_non_source(t);
        }
        let unsupported: Vec<String> = pool
            .unsupported(&answer.text)
            .iter()
            .map(ToString::to_string)
            .collect();
        let lower = answer.text.to_lowercase();
        let forbidden_found: Vec<String> = q
            .expect_none
            .iter()
            .filter(|s| lower.contains(&s.to_lowercase()))
            .cloned()
            .collect();
        let source_in_top3 = q
            .expect_source
            .as_ref()
            .map(|e| top_sources.iter().any(|s| e.contains(s)));
        let source_rank = q.expect_source.as_ref().and_then(|e| {
            let mut articles: Vec<&str> = Vec::new();
            for h in &retrieval.hits {
                if !articles.contains(&h.chunk.source.as_str()) {
                    articles.push(&h.chunk.source);
                }
            }
            articles.iter().position(|a| e.contains(a)).map(|p| p + 1)
        });
        let expected_present = (!q.expect_any.is_empty()).then(|| {
            q.expect_any
                .iter()
                .any(|s| answer.text.contains(s.as_str()))
        });
        let refused = answer.fallback();
        let outcome = answer.outcome();
        let source_in_front = q.expect_source.as_ref().map(|e| match outcome {
            Outcome::Answered => answer.sources.iter().any(|s| e.contains(&s.source)),
            Outcome::Suggested => answer.suggestions.iter().any(|s| e.contains(&s.source)),
            Outcome::HandedOff => false,
        });
        let passed = source_in_top3 != Some(false)
            && expected_present != Some(false)
            && forbidden_found.is_empty()
            && unsupported.is_empty()
            && refused == q.unanswerable;
        results.push(QuestionResult {
            id: q.id.clone(),
            split: q.split.clone(),
            question: q.turns.join(" → "),
            answer: answer.text.clone(),
            unanswerable: q.unanswerable,
            refused,
            outcome,
            source_in_front,
            extractive: answer.extractive(),
            cached: answer.cached,
            top_sources,
            source_in_top3,
            source_rank,
            expected_present,
            forbidden_found,
            sentences_removed: answer.verification.as_ref().map_or(0, |v| v.removed),
            unsupported_figures: unsupported,
            elapsed_ms,
            passed,
        });
        progress("questions", n + 1, questions.len());
    }
    let all = totals(results.iter());
    let mut labels: Vec<String> = results.iter().filter_map(|r| r.split.clone()).collect();
    labels.sort();
    labels.dedup();
    let splits = labels
        .into_iter()
        .map(|l| {
            let t = totals(results.iter().filter(|r| r.split.as_deref() == Some(&l)));
            (l, t)
        })
        .collect();
    Ok(AnswersReport {
        answer_mode: assistant.answer_mode().to_string(),
        results,
        totals: all,
        splits,
    })
}

fn totals<'a>(results: impl Iterator<Item = &'a QuestionResult>) -> Totals {
    let mut t = Totals::default();
    let mut ms = 0u64;
    for r in results {
        t.questions += 1;
        ms += r.elapsed_ms;
        let (answered, suggested, handed_off) = (
            (r.outcome == Outcome::Answered) as usize,
            (r.outcome == Outcome::Suggested) as usize,
            (r.outcome == Outcome::HandedOff) as usize,
        );
        if r.unanswerable {
            t.unanswerable += 1;
            t.unanswerable_refused += r.refused as usize;
            t.unanswerable_answered += answered;
            t.unanswerable_suggested += suggested;
            t.unanswerable_handed_off += handed_off;
        } else {
            t.answerable += 1;
            t.answerable_refused += r.refused as usize;
            t.answerable_answered += answered;
            t.answerable_suggested += suggested;
            t.answerable_handed_off += handed_off;
            t.source_in_front += (r.source_in_front == Some(true)) as usize;
        }
        if let Some(ok) = r.source_in_top3 {
            t.with_expected_source += 1;
            t.source_in_top3 += ok as usize;
            t.source_ranked_first += (r.source_rank == Some(1)) as usize;
        }
        if let Some(ok) = r.expected_present {
            t.with_expected_figure += 1;
            t.expected_present += ok as usize;
        }
        t.forbidden_found += !r.forbidden_found.is_empty() as usize;
        t.answers_with_unsupported_figures += !r.unsupported_figures.is_empty() as usize;
        t.sentences_removed += r.sentences_removed;
        t.extractive += r.extractive as usize;
        t.cached += r.cached as usize;
        t.passed += r.passed as usize;
    }
    t.mean_ms = if t.questions > 0 {
        ms as f64 / t.questions as f64
    } else {
        0.0
    };
    t
}
