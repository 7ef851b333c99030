//! After generation: the served text from what the model said (the figure check, the extractive
//! replacement, a claim about a word no article uses), and the turn remembered and recorded.

use super::answer::{suggestion_text, Answer, Source, Suggestion};
use super::checks::{self, FigureCheck, Verification};
use super::plan::{suggestions_of, Prepared};
use super::retrieval::Retrieval;
use super::{AnswerMode, Assistant, RagError, SessionId, Speaker, Turn};
use crate::memory::now_ms;

/// How a finished generation becomes the served answer.
pub struct Finished {
    pub text: String,
    pub verification: Option<Verification>,
    /// True when the extractive answer replaced a generation with nothing of substance left.
    pub extractive: bool,
    /// A generated sentence claimed something about a word of the question no article uses ("Yes,
    /// you can buy bitcoin in the app"): the closest sections are offered instead.
    pub suggestions: Option<Vec<Suggestion>>,
}

impl Assistant {
    /// What a generated sentence is checked against: the excerpts, the question and the support
    /// contacts of the fallback texts. Figures are checked in `verified` mode only; an echo of the
    /// system prompt is dropped in every mode.
    pub(crate) fn sentence_check(&self, prepared: &Prepared) -> FigureCheck {
        FigureCheck::new(
            &prepared.excerpts,
            &[
                prepared.question.as_str(),
                self.config.fallback_en.as_str(),
                self.config.fallback_ru.as_str(),
            ],
        )
        .figures(self.config.answer_mode == AnswerMode::Verified)
    }

    /// Turns a finished generation into the served answer: sentences with unsupported figures (in
    /// `verified` mode) and echoes of the system prompt go; when nothing of substance is left, the
    /// extractive answer replaces it. Blocking.
    pub(crate) fn finish(
        &self,
        prepared: &Prepared,
        generated: &str,
    ) -> Result<Finished, RagError> {
        let check = self.sentence_check(prepared);
        let (text, verification) = check.filter(generated);
        self.metrics
            .sentences_removed
            .inc_by(verification.removed as u64);
        self.conclude(prepared, text, verification)
    }

    /// The end of a streamed, already checked answer: `shown` is what was released.
    pub(crate) fn conclude(
        &self,
        prepared: &Prepared,
        shown: String,
        verification: Verification,
    ) -> Result<Finished, RagError> {
        let verified = self.config.answer_mode == AnswerMode::Verified;
        if let Some(word) = claims_unknown_word(&prepared.retrieval, &shown) {
            tracing::info!(
                "the generated answer speaks of {word:?}, which no article uses: suggested"
            );
            let suggestions = suggestions_of(&prepared.retrieval.hits);
            if !suggestions.is_empty() {
                return Ok(Finished {
                    text: suggestion_text(prepared.retrieval.language, &suggestions),
                    verification: verified.then_some(verification),
                    extractive: false,
                    suggestions: Some(suggestions),
                });
            }
        }
        // Something was cut, and what is left says nothing, or no longer states any figure (the
        // model tried to give one and it was wrong): the quotes from the excerpts answer instead.
        let emptied = !checks::has_substance(&shown)
            || (verified && checks::figures::extract(&shown).is_empty());
        if verification.removed > 0 && emptied {
            return Ok(Finished {
                text: self.extractive_answer(prepared)?,
                verification: verified.then_some(verification),
                extractive: true,
                suggestions: None,
            });
        }
        Ok(Finished {
            text: shown.trim().to_string(),
            verification: verified.then_some(verification),
            extractive: false,
            suggestions: None,
        })
    }

    /// Counts sentences a streaming check removed (the non-streaming path counts in `finish`).
    pub(crate) fn count_removed(&self, removed: usize) {
        self.metrics.sentences_removed.inc_by(removed as u64);
    }

    /// Keeps a finished answer for later identical questions (when `prepared` allows it); `origin`
    /// is the session the question was asked in.
    pub(crate) fn remember(&self, prepared: &Prepared, answer: &Answer, origin: Option<SessionId>) {
        if !prepared.cacheable || answer.cached {
            return;
        }
        let vector = self
            .cache
            .wants_vectors()
            .then(|| prepared.retrieval.question_vector.clone());
        self.cache.put(
            &prepared.generation,
            self.config.answer_mode,
            super::cache::NewEntry {
                question: &prepared.question,
                language: prepared.retrieval.language,
                vector,
                answer,
                origin,
            },
        );
    }

    /// Stores the question and the answer in the session's history. Blocking.
    pub fn record(
        &self,
        session: &SessionId,
        question: &str,
        answer: &str,
        sources: &[Source],
    ) -> Result<(), RagError> {
        let now = now_ms();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::User,
                content: question.to_string(),
                sources: Vec::new(),
                created_at_ms: now,
            },
        )?;
        let mut cited: Vec<String> = sources.iter().map(|s| s.source.clone()).collect();
        cited.dedup();
        self.memory.append(
            session,
            &Turn {
                role: Speaker::Assistant,
                content: answer.to_string(),
                sources: cited,
                created_at_ms: now,
            },
        )?;
        Ok(())
    }
}

/// A question word no chunk of the knowledge base uses, when the generated `text` uses it too: the
/// model then says something the articles do not.
fn claims_unknown_word(retrieval: &Retrieval, text: &str) -> Option<String> {
    let unknown: Vec<&str> = retrieval
        .gate
        .words
        .iter()
        .filter(|w| w.document_frequency == 0 && !w.covered)
        .map(|w| w.term.as_str())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let said = crate::text::content_terms(
        text,
        crate::index::bm25::Bm25Config::KNOWLEDGE_BASE.languages,
    );
    unknown
        .into_iter()
        .find(|t| said.contains(*t))
        .map(str::to_string)
}
