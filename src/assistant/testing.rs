//! Test support: answering with a scripted generation. Everything [`Assistant::ask`] does (admission,
//! retrieval, the plan, the streaming figure check, the extractive replacement, storing, caching,
//! metrics) runs as for a real question; only the model's token stream is given: `text` cut into
//! the pieces the real model's tokenizer and stream decoder would send. What a model generates
//! differs between CPUs; with a given text a test can check what the server does with it on any
//! host. Not a mock model: the assistant keeps its real LLM handle (whose tokenizer cuts the text),
//! which is simply not asked.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::ask::Submit;
use super::{AnswerError, AnswerEvent, AnswerStream, Answered, Ask, Assistant};
use crate::engine::stream_decoder::{StopMatcher, StopOutcome, Utf8StreamDecoder};
use crate::engine::tokenizer::LlmTokenizer;
use crate::engine::{
    EngineError, FinishReason, GenerateRequest, GenerationEvent, GenerationSummary, Timings, Usage,
};

/// The events the model worker would send if the model generated `text` for `request`: `text`
/// encoded by `tokenizer`, each token's bytes through the stream decoder and the request's stop
/// strings, cut at its `max_new_tokens` (finish reason `length`), else ended as the model ending
/// its turn (`stop`).
pub fn scripted_events(
    tokenizer: &LlmTokenizer,
    request: &GenerateRequest,
    text: &str,
) -> Result<Vec<GenerationEvent>, EngineError> {
    request.params.validate()?;
    let ids = tokenizer.encode(text, false)?;
    let mut events = Vec::new();
    let mut decoder = Utf8StreamDecoder::new();
    let mut stops = StopMatcher::new(&request.params.stop);
    let mut completion_tokens = 0;
    let mut reason = FinishReason::Stop;
    let mut hit_stop_string = false;
    for id in ids {
        completion_tokens += 1;
        let piece = decoder.push(tokenizer.output_bytes(id));
        let (piece, stopped) = match stops.push(&piece) {
            StopOutcome::Continue(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if !piece.is_empty() {
            events.push(GenerationEvent::Token(piece));
        }
        if stopped {
            hit_stop_string = true;
            break;
        }
        if completion_tokens >= request.params.max_new_tokens {
            reason = FinishReason::Length;
            break;
        }
    }
    // As the worker does: what the stop matcher and the decoder held back, unless a stop string
    // ended the text.
    let rest = stops.finish() + &decoder.finish();
    if !rest.is_empty() && !hit_stop_string {
        events.push(GenerationEvent::Token(rest));
    }
    events.push(GenerationEvent::Done(GenerationSummary {
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens,
            cached_prompt_tokens: 0,
        },
        timings: Timings::default(),
        finish_reason: reason,
    }));
    Ok(events)
}

/// Submits to a scripted generation of `text` instead of the model worker.
fn scripted(assistant: &Arc<Assistant>, text: &str) -> Submit {
    scripted_in_turn(assistant, &[text])
}

/// Submits to scripted generations: the first request gets `texts[0]`, the next `texts[1]`, and so
/// on (the last one again once they run out).
fn scripted_in_turn(assistant: &Arc<Assistant>, texts: &[&str]) -> Submit {
    let tokenizer = assistant.llm().tokenizer().clone();
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let mut next = 0;
    Box::new(move |request| {
        let text = texts
            .get(next)
            .or(texts.last())
            .cloned()
            .unwrap_or_default();
        next += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        for event in scripted_events(&tokenizer, &request, &text)? {
            // The receiver is returned below: sending cannot fail.
            let _ = tx.send(event);
        }
        Ok(rx)
    })
}

/// [`Assistant::ask`], with `text` as what the model generates.
pub async fn ask_with_generation(
    assistant: &Arc<Assistant>,
    ask: Ask,
    text: &str,
) -> Result<AnswerStream, AnswerError> {
    assistant
        .ask_submitting(ask, scripted(assistant, text))
        .await
}

/// [`Assistant::ask`], with `texts` as what the model generates for each request in turn (the
/// judge's reply, then the answer).
pub async fn ask_with_generations(
    assistant: &Arc<Assistant>,
    ask: Ask,
    texts: &[&str],
) -> Result<AnswerStream, AnswerError> {
    assistant
        .ask_submitting(ask, scripted_in_turn(assistant, texts))
        .await
}

/// [`Assistant::ask_blocking`], with `text` as what the model generates.
pub fn ask_blocking_with_generation(
    assistant: &Arc<Assistant>,
    ask: Ask,
    text: &str,
    on_event: &mut dyn FnMut(&AnswerEvent),
) -> Result<Answered, AnswerError> {
    assistant.ask_blocking_submitting(ask, scripted(assistant, text), on_event)
}

/// The pieces `text` streams in when generated: the `Token` events of [`scripted_events`].
pub fn token_pieces(tokenizer: &LlmTokenizer, text: &str) -> Result<Vec<String>, EngineError> {
    let request = GenerateRequest {
        prompt: crate::engine::Prompt::Tokens(Vec::new()),
        params: crate::engine::SamplingParams {
            max_new_tokens: usize::MAX / 2,
            ..Default::default()
        },
    };
    Ok(scripted_events(tokenizer, &request, text)?
        .into_iter()
        .filter_map(|e| match e {
            GenerationEvent::Token(t) => Some(t),
            _ => None,
        })
        .collect())
}

/// The plan for `question` (history, retrieval, the gate, the prompt) as the assistant makes it,
/// without answering: what a test of the plan itself looks at.
pub fn prepare(
    assistant: &Assistant,
    session: &super::SessionId,
    question: &str,
) -> Result<super::Prepared, super::RagError> {
    assistant.prepare(session, question)
}

/// What the assistant serves for `generated` after `prepared` (the figure check, the extractive
/// replacement, the claim check), without streaming.
pub fn finish(
    assistant: &Assistant,
    prepared: &super::Prepared,
    generated: &str,
) -> Result<super::Finished, super::RagError> {
    assistant.finish(prepared, generated)
}

/// Releases a gated scripted generation ([`ask_with_gated_generation`]).
pub struct GenerationGate {
    pending: Arc<std::sync::Mutex<Vec<PendingGeneration>>>,
}

type PendingGeneration = (
    mpsc::UnboundedSender<GenerationEvent>,
    Result<Vec<GenerationEvent>, EngineError>,
);

impl GenerationGate {
    /// Lets the generations asked for so far deliver their text.
    pub fn release(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (tx, events) in pending {
            match events {
                Ok(events) => {
                    for event in events {
                        let _ = tx.send(event);
                    }
                }
                Err(e) => {
                    let _ = tx.send(GenerationEvent::Error(e));
                }
            }
        }
    }
}

/// [`Assistant::ask`], with `text` as what the model generates, held back until the gate is
/// released: an answer kept in flight for as long as a test needs (an erase meanwhile, ...).
pub async fn ask_with_gated_generation(
    assistant: &Arc<Assistant>,
    ask: Ask,
    text: &str,
) -> Result<(AnswerStream, GenerationGate), AnswerError> {
    let tokenizer = assistant.llm().tokenizer().clone();
    let text = text.to_string();
    let pending: Arc<std::sync::Mutex<Vec<PendingGeneration>>> = Arc::default();
    let held = pending.clone();
    let submit: Submit = Box::new(move |request| {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = scripted_events(&tokenizer, &request, &text);
        held.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tx, events));
        Ok(rx)
    });
    let stream = assistant.ask_submitting(ask, submit).await?;
    Ok((stream, GenerationGate { pending }))
}
