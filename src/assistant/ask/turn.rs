//! A turn after admission: the task that sends its events, streams a generation through the figure
//! check, and completes the turn (both turns stored, the answer cached, counted and logged).

use super::*;

/// What a turn needs after admission, moved into the task that drives it.
pub(super) struct Turning {
    pub(super) assistant: Arc<Assistant>,
    pub(super) door: Door,
    pub(super) query_id: String,
    pub(super) resolved: Resolved,
    pub(super) prepared: Arc<Prepared>,
    pub(super) started: Instant,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) tx: mpsc::UnboundedSender<AnswerEvent>,
}

/// What the worker reported about a generation whose text is served.
#[derive(Clone, Copy)]
pub(super) struct Generated {
    timings: Timings,
    finish_reason: Option<FinishReason>,
}

/// The next generation event, or `Err` once `deadline` (if any) has passed.
pub(super) async fn recv_until(
    rx: &mut mpsc::UnboundedReceiver<GenerationEvent>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<GenerationEvent>, tokio::time::error::Elapsed> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, rx.recv()).await,
        None => Ok(rx.recv().await),
    }
}

impl Turning {
    pub(super) fn answer_with(&self, text: String, mark: impl FnOnce(&mut Answer)) -> Answer {
        let mut answer = Answer {
            text,
            sources: self.prepared.sources.clone(),
            ..Answer::default()
        };
        mark(&mut answer);
        answer
    }

    pub(super) fn send(&self, event: AnswerEvent) -> bool {
        self.tx.send(event).is_ok()
    }

    /// An answer known at once (fallback, extract mode, cache).
    pub(super) async fn finish_now(self, answer: Answer) {
        if !self.send(AnswerEvent::Text(answer.text.clone())) {
            return;
        }
        self.complete(answer, None, true).await;
    }

    /// An extractive answer given because the queue was full (not cached).
    pub(super) async fn finish_uncached(self, answer: Answer) {
        if !self.send(AnswerEvent::Text(answer.text.clone())) {
            return;
        }
        self.complete(answer, None, false).await;
    }

    /// Streams a generation through the sentence check, then completes the turn.
    pub(super) async fn generate(
        self,
        mut rx: mpsc::UnboundedReceiver<GenerationEvent>,
        preview: bool,
        timeout: Option<Duration>,
    ) {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        if preview {
            // The quote is computed while the model reads the prompt (on the 3B model on CPU that
            // takes ~20 s; the quote well under a second).
            let (assistant, prepared) = (self.assistant.clone(), self.prepared.clone());
            if let Ok(text) = blocking(move || Ok(assistant.extractive_answer(&prepared)?)).await {
                if !self.send(AnswerEvent::Preview(text)) {
                    return;
                }
            }
        }
        let assistant = self.assistant.clone();
        let mut check = StreamingCheck::new(assistant.sentence_check(&self.prepared));
        let summary = loop {
            let event = tokio::select! {
                // The client went away: dropping `rx` stops the generation.
                _ = self.tx.closed() => return,
                e = recv_until(&mut rx, deadline) => e,
            };
            match event {
                Err(_) => {
                    return self.fail(AnswerError::Timeout(timeout.unwrap_or_default()));
                }
                Ok(None) => {
                    return self.fail(AnswerError::Internal(
                        "the model worker stopped mid-answer".into(),
                    ))
                }
                Ok(Some(GenerationEvent::Token(t))) => {
                    let shown = check.push(&t);
                    if !shown.is_empty() && !self.send(AnswerEvent::Text(shown)) {
                        return;
                    }
                }
                Ok(Some(GenerationEvent::Done(summary))) => break summary,
                Ok(Some(GenerationEvent::Error(e))) => return self.fail(e.into()),
            }
        };
        drop(rx);
        let rest = check.finish();
        if !rest.is_empty() && !self.send(AnswerEvent::Text(rest)) {
            return;
        }
        let m = &assistant.metrics;
        m.tokens_generated
            .inc_by(summary.usage.completion_tokens as u64);
        m.observe(
            "time_to_first_token",
            summary.timings.time_to_first_token_ms / 1000.0,
        );
        m.observe("generation", summary.timings.generation_ms / 1000.0);
        assistant.count_removed(check.verification.removed);
        let (shown, verification): (String, Verification) =
            (check.released().to_string(), check.verification.clone());
        let prepared = self.prepared.clone();
        let finished =
            match blocking(move || Ok(assistant.conclude(&prepared, shown, verification)?)).await {
                Ok(f) => f,
                Err(e) => return self.fail(e),
            };
        let replaced = finished.extractive || finished.suggestions.is_some();
        if replaced && !self.send(AnswerEvent::Replaced(finished.text.clone())) {
            return;
        }
        let kind = if finished.suggestions.is_some() {
            AnswerKind::Suggested
        } else if finished.extractive {
            AnswerKind::Quoted
        } else {
            AnswerKind::Generated
        };
        let suggested = finished.suggestions.is_some();
        let answer = Answer {
            text: finished.text,
            sources: if suggested {
                Vec::new()
            } else {
                self.prepared.sources.clone()
            },
            kind,
            suggestions: finished.suggestions.unwrap_or_default(),
            verification: finished.verification,
            usage: Some(summary.usage),
            ..Answer::default()
        };
        let generated = Generated {
            timings: summary.timings,
            // A quote that replaced the generated text was not cut by anything.
            finish_reason: (answer.kind == AnswerKind::Generated).then_some(summary.finish_reason),
        };
        self.complete(answer, Some(generated), true).await;
    }

    pub(super) fn fail(self, e: AnswerError) {
        self.assistant.count_failure(self.door, &e);
        let _ = self.tx.send(AnswerEvent::Error(e));
    }

    /// Stores both turns, offers the answer to the cache, counts and logs it, sends `Done`.
    pub(super) async fn complete(
        self,
        answer: Answer,
        generated: Option<Generated>,
        cacheable: bool,
    ) {
        let timings = generated.map(|g| g.timings);
        let stored = match &self.resolved.session {
            Some(session) => {
                let (assistant, session, create, prepared, text) = (
                    self.assistant.clone(),
                    session.clone(),
                    self.resolved.create.clone(),
                    self.prepared.clone(),
                    answer.text.clone(),
                );
                let (query_id, outcome) = (self.query_id.clone(), answer.outcome());
                let suggestions = answer.suggestions.clone();
                let latency_ms = self.started.elapsed().as_millis() as u64;
                let (started, user_id) = (self.started, self.resolved.user_id.clone());
                blocking(move || {
                    // Not stored when the customer was erased while the answer was in flight.
                    let store = || -> Result<(), AnswerError> {
                        if let Some(owner) = &create {
                            assistant.memory.create_session(&session, owner)?;
                        }
                        assistant.record(&session, &prepared.question, &text, &prepared.sources)?;
                        // Filed with the turns under the query id: for feedback and the report.
                        assistant.file_answer(&crate::assistant::feedback::AnsweredTurn {
                            query_id: &query_id,
                            session: &session,
                            question: &prepared.question,
                            answer: &text,
                            sources: &prepared.sources,
                            outcome,
                            language: prepared.retrieval.language,
                            suggestions: &suggestions,
                            latency_ms,
                        })
                    };
                    let stored = assistant.erasures.store_unless_erased(
                        started,
                        &session,
                        user_id.as_deref(),
                        store,
                    )?;
                    if !stored {
                        tracing::info!(%query_id, "the customer was erased while answering: not stored");
                    }
                    Ok(stored)
                })
                .await
            }
            None => Ok(true),
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => return self.fail(e),
        };
        let a = &self.assistant;
        if cacheable && !answer.cached && stored {
            a.remember(&self.prepared, &answer, self.resolved.session.clone());
        }
        let answered = Answered {
            query_id: self.query_id.clone(),
            session: self.resolved.session.clone(),
            question: self.prepared.question.clone(),
            answer,
            answer_mode: a.config.answer_mode,
            language: self.prepared.retrieval.language,
            timings,
            finish_reason: generated.and_then(|g| g.finish_reason),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        };
        let kind = answered.kind();
        a.metrics
            .answers
            .with_label_values(&[self.door.as_str(), kind])
            .inc();
        if answered.answer.kind == AnswerKind::HandedOff && !answered.answer.cached {
            a.metrics.fallbacks.inc();
        }
        a.metrics
            .observe("total", self.started.elapsed().as_secs_f64());
        let usage = answered.answer.usage.unwrap_or_default();
        tracing::info!(
            query_id = %answered.query_id,
            session_id = %answered.session.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            door = self.door.as_str(),
            kind,
            sources = answered.answer.sources.len(),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            ttft_ms = timings.map(|t| t.time_to_first_token_ms as u64).unwrap_or(0),
            total_ms = answered.elapsed_ms,
            "answered"
        );
        let _ = self.tx.send(AnswerEvent::Done(Box::new(answered)));
    }
}
