//! One named thread owns the model and every conversation's KV cache; everyone else holds a
//! cloneable `LlmHandle`. The thread advances all live sequences together (continuous batching, as
//! llama.cpp's server slots do): each step is one forward pass in which every sequence that is
//! answering runs its next token and at most one sequence still in its prompt runs a chunk of it,
//! so the weights are read once for all of them and a long prompt does not freeze the others'
//! streams. New requests join between steps, oldest first; a finished or cancelled sequence
//! leaves at once. Admission is a bounded queue (when full the caller gets `Overloaded` at once)
//! and a KV memory budget (a request waits until its prompt and answer fit; one that can never fit
//! is refused). A finished conversation's cache is kept while the budget allows, so its follow-up
//! runs only what is new. Each job carries its own event channel; when the receiver is dropped (the
//! client went away) the job is skipped or its sequence leaves at the next step.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::chat_template::ChatMessage;
use crate::engine::generation::GenerationSummary;
use crate::engine::generation::{Conversation, FinishReason, Llm, LlmOptions, Sequence};
use crate::engine::llama::LlamaConfig;
use crate::engine::sampling::SamplingParams;
use crate::engine::tokenizer::LlmTokenizer;
use crate::engine::EngineError;

/// What to generate after.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template plus the assistant's turn header.
    Chat(Vec<ChatMessage>),
    /// Token ids as they are (benchmarks, tests).
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub params: SamplingParams,
}

#[derive(Debug, Clone)]
pub enum GenerationEvent {
    /// Complete UTF-8 text, in order.
    Token(String),
    Done(GenerationSummary),
    Error(EngineError),
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub template: String,
    pub config: LlamaConfig,
    pub queue_depth: usize,
    /// Sequences advanced together at most.
    pub max_batch: usize,
    /// Bytes of f16 keys and values one position takes.
    pub kv_bytes_per_token: usize,
    pub kv_budget_bytes: Option<usize>,
}

/// Largest batch size the step histogram tells apart (larger ones count there too).
pub const BATCH_HISTOGRAM_MAX: usize = 16;

/// Counters of what the worker has done (for metrics and tests).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub jobs_finished: AtomicUsize,
    pub jobs_cancelled: AtomicUsize,
    /// Jobs whose caller had gone before the worker reached them.
    pub jobs_skipped: AtomicUsize,
    pub jobs_failed: AtomicUsize,
    pub tokens_generated: AtomicUsize,
    /// Sequences being prefilled or answered now.
    pub live_sequences: AtomicUsize,
    /// Bytes of KV cache held now (live sequences and conversations kept for follow-ups).
    pub kv_bytes: AtomicUsize,
    /// Forward passes by how many sequences they advanced (index = size, the last counts larger).
    pub batch_steps: [AtomicUsize; BATCH_HISTOGRAM_MAX + 1],
    /// Sum of the milliseconds jobs waited before their sequence started, and their count.
    pub queue_wait_ms_total: AtomicUsize,
    pub jobs_started: AtomicUsize,
}

impl WorkerStats {
    /// Forward passes that advanced two sequences or more.
    pub fn batched_steps(&self) -> usize {
        self.batch_steps[2..]
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum()
    }
}

struct Job {
    request: GenerateRequest,
    events: UnboundedSender<GenerationEvent>,
    enqueued: Instant,
}

#[derive(Clone)]
pub struct LlmHandle {
    jobs: SyncSender<Job>,
    tokenizer: Arc<LlmTokenizer>,
    info: Arc<ModelInfo>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<WorkerStats>,
}

impl LlmHandle {
    /// Starts the worker thread and waits until the model has loaded, so a bad model file fails here.
    /// `queue_depth` is how many jobs may wait while one runs.
    pub fn spawn(opts: LlmOptions, queue_depth: usize) -> Result<Self, EngineError> {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(queue_depth);
        let (ready_tx, ready_rx) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let worker_waiting = waiting.clone();
        let stats = Arc::new(WorkerStats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name("novapay-llm".into())
            .spawn(move || {
                let llm = match Llm::load(&opts) {
                    Ok(llm) => llm,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = ModelInfo {
                    name: llm.name.clone(),
                    template: llm.template.name.to_string(),
                    config: llm.config().clone(),
                    queue_depth,
                    max_batch: opts.max_batch.max(1),
                    kv_bytes_per_token: llm.kv_bytes_per_token(),
                    kv_budget_bytes: opts.kv_budget_bytes,
                };
                if ready_tx.send(Ok((llm.tokenizer.clone(), info))).is_err() {
                    return;
                }
                Scheduler {
                    max_batch: opts.max_batch.max(1),
                    budget: opts.kv_budget_bytes,
                    prefill_chunk: opts.prefill_chunk.max(1),
                    prefill_chunk_busy: opts.prefill_chunk.clamp(1, PREFILL_CHUNK_BUSY),
                    kv_per_token: llm.kv_bytes_per_token(),
                    llm,
                    jobs: jobs_rx,
                    waiting: worker_waiting,
                    stats: worker_stats,
                    pending: None,
                    live: Vec::new(),
                    kept: VecDeque::new(),
                }
                .run();
            })
            .map_err(|e| EngineError::Unavailable(format!("cannot start the model thread: {e}")))?;
        let (tokenizer, info) = ready_rx.recv().map_err(|_| {
            EngineError::Unavailable("the model thread died while loading".into())
        })??;
        Ok(Self {
            jobs: jobs_tx,
            tokenizer,
            info: Arc::new(info),
            waiting,
            stats,
        })
    }

    /// Queues a generation. Returns its event stream, or `Overloaded` at once when the queue is full.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<GenerationEvent>, EngineError> {
        request.params.validate()?;
        let (events, rx) = unbounded_channel();
        let job = Job {
            request,
            events,
            enqueued: Instant::now(),
        };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(EngineError::Overloaded {
                    queue_depth: self.info.queue_depth,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(EngineError::Unavailable(
                    "the model thread has stopped".into(),
                ))
            }
        }
    }

    /// Jobs waiting for the worker (not counting the one running).
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn tokenizer(&self) -> &Arc<LlmTokenizer> {
        &self.tokenizer
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// Prompt tokens a sequence runs per step while others are answering: bounds how long their next
/// token waits for a new prompt (a 500-token prompt of the 3B model runs in 2 steps).
const PREFILL_CHUNK_BUSY: usize = 256;

/// Positions a KV cache grows by (`kv_cache.rs`): what a sequence's memory is rounded up to.
const KV_BLOCK: usize = 256;

/// A request being answered.
struct Live {
    seq: Sequence,
    events: UnboundedSender<GenerationEvent>,
    queue_ms: f64,
    /// Bytes of KV cache set aside for it: its prompt and answer at most.
    reserved: usize,
}

impl Live {
    fn send_text(events: &UnboundedSender<GenerationEvent>, text: &str) -> ControlFlow<()> {
        if events
            .send(GenerationEvent::Token(text.to_string()))
            .is_err()
        {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// The model thread's state between steps.
struct Scheduler {
    llm: Llm,
    jobs: Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<WorkerStats>,
    max_batch: usize,
    budget: Option<usize>,
    prefill_chunk: usize,
    prefill_chunk_busy: usize,
    kv_per_token: usize,
    /// Taken from the queue, waiting for room in the batch or the budget (oldest first).
    pending: Option<(Job, Vec<u32>)>,
    /// In order of admission.
    live: Vec<Live>,
    /// Finished conversations kept for their follow-ups, least recently used first.
    kept: VecDeque<Conversation>,
}

impl Scheduler {
    fn run(mut self) {
        loop {
            if !self.admit() {
                return;
            }
            self.drop_cancelled();
            if !self.live.is_empty() {
                self.step();
            }
            self.publish();
        }
    }

    /// Starts waiting requests while the batch and the budget have room; blocks when nothing is
    /// live. Returns false when the handle is gone and nothing is left to do.
    fn admit(&mut self) -> bool {
        while self.live.len() < self.max_batch {
            let (job, prompt) = match self.pending.take() {
                Some(p) => p,
                None => {
                    let job = if self.live.is_empty() {
                        match self.jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return false,
                        }
                    } else {
                        match self.jobs.try_recv() {
                            Ok(job) => job,
                            Err(TryRecvError::Empty) => return true,
                            Err(TryRecvError::Disconnected) => return true,
                        }
                    };
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    if job.events.is_closed() {
                        self.stats.jobs_skipped.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    match self.checked_prompt(&job) {
                        Ok(prompt) => (job, prompt),
                        Err(e) => {
                            self.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                            let _ = job.events.send(GenerationEvent::Error(e));
                            continue;
                        }
                    }
                }
            };
            let reserved = self.reservation(prompt.len() + job.request.params.max_new_tokens);
            if !self.make_room(reserved) {
                self.pending = Some((job, prompt));
                return true;
            }
            let conv = self.conversation_for(&prompt);
            let mut params = job.request.params.clone();
            if let Some(budget) = self.budget {
                // An answer that would outgrow the budget is cut short (finish reason `length`).
                let fits = budget / self.kv_per_token / KV_BLOCK * KV_BLOCK;
                params.max_new_tokens = params
                    .max_new_tokens
                    .min(fits.saturating_sub(prompt.len()).max(1));
            }
            let queue_ms = job.enqueued.elapsed().as_secs_f64() * 1000.0;
            self.stats
                .queue_wait_ms_total
                .fetch_add(queue_ms as usize, Ordering::SeqCst);
            self.stats.jobs_started.fetch_add(1, Ordering::SeqCst);
            let seq = self.llm.start(conv, prompt, &params);
            self.live.push(Live {
                seq,
                events: job.events,
                queue_ms,
                reserved,
            });
        }
        true
    }

    /// The prompt's tokens, refused when it cannot run or can never fit the budget.
    fn checked_prompt(&self, job: &Job) -> Result<Vec<u32>, EngineError> {
        let prompt = match &job.request.prompt {
            Prompt::Tokens(ids) => ids.clone(),
            Prompt::Chat(messages) => self.llm.encode_chat(messages)?,
        };
        self.llm.check_prompt(&prompt, &job.request.params)?;
        if let Some(budget) = self.budget {
            // The prompt and the first token must fit; the answer is cut short to what fits.
            let needed = self.bytes_for(prompt.len() + 1);
            if needed > budget {
                return Err(EngineError::OverBudget {
                    needed_mb: needed.div_ceil(1 << 20),
                    budget_mb: budget >> 20,
                });
            }
        }
        Ok(prompt)
    }

    /// Bytes a sequence of `positions` can come to hold (capped by the context window), rounded up
    /// to the cache's blocks; within the budget whenever its prompt is.
    fn reservation(&self, positions: usize) -> usize {
        let bytes = self.bytes_for(positions);
        match self.budget {
            Some(budget) => bytes.min(budget.max(self.kv_per_token * KV_BLOCK)),
            None => bytes,
        }
    }

    /// Bytes the cache of `positions` (capped by the context window) takes, in whole blocks.
    fn bytes_for(&self, positions: usize) -> usize {
        let positions = positions.min(self.llm.context_length());
        positions.div_ceil(KV_BLOCK) * KV_BLOCK * self.kv_per_token
    }

    fn kept_bytes(&self) -> usize {
        self.kept.iter().map(Conversation::kv_bytes).sum()
    }

    fn reserved_bytes(&self) -> usize {
        self.live
            .iter()
            .map(|l| l.reserved.max(l.seq.kv_bytes()))
            .sum()
    }

    /// Frees kept conversations (least recently used first) until `bytes` more fit the budget;
    /// false when live sequences hold too much for it (the request waits for one to finish).
    fn make_room(&mut self, bytes: usize) -> bool {
        let Some(budget) = self.budget else {
            return true;
        };
        let live = self.reserved_bytes();
        if live + bytes > budget && !self.live.is_empty() {
            return false;
        }
        while live + bytes + self.kept_bytes() > budget {
            if self.kept.pop_front().is_none() {
                break;
            }
        }
        true
    }

    /// The kept conversation sharing the longest prefix with `prompt` (taken out of the pool), else
    /// a new one.
    fn conversation_for(&mut self, prompt: &[u32]) -> Conversation {
        let best = self
            .kept
            .iter()
            .enumerate()
            .map(|(i, c)| (c.shared_prefix(prompt), i))
            .max();
        match best {
            Some((shared, i)) if shared > 0 => self.kept.remove(i).expect("index in range"),
            _ => self.llm.new_conversation(),
        }
    }

    /// Sequences whose caller went away leave before the next step.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].events.is_closed() {
                let live = self.live.remove(i);
                self.finish(live, Ok(FinishReason::Cancelled));
            } else {
                i += 1;
            }
        }
    }

    /// One forward pass: every sequence that is answering, and the oldest one still in its prompt.
    fn step(&mut self) {
        let prefilling = self.live.iter().position(|l| !l.seq.prefilled());
        let answering = self.live.iter().filter(|l| l.seq.prefilled()).count();
        let chunk = if answering > 0 {
            self.prefill_chunk_busy
        } else {
            self.prefill_chunk
        };
        let chosen: Vec<usize> = (0..self.live.len())
            .filter(|&i| self.live[i].seq.prefilled() || Some(i) == prefilling)
            .collect();
        let size = chosen.len().min(BATCH_HISTOGRAM_MAX);
        self.stats.batch_steps[size].fetch_add(1, Ordering::SeqCst);
        let results = {
            let mut seqs: Vec<&mut Sequence> = self
                .live
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| chosen.contains(i))
                .map(|(_, l)| &mut l.seq)
                .collect();
            match self.llm.advance(&mut seqs, chunk) {
                Ok(r) => r.into_iter().map(Ok).collect(),
                // One sequence's failure must not fail the others: run each alone.
                Err(_) if seqs.len() > 1 => seqs
                    .iter_mut()
                    .map(|s| {
                        self.llm
                            .advance(&mut [&mut **s], chunk)
                            .map(|mut r| r.pop().flatten())
                    })
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        };
        let tokenizer = self.llm.tokenizer.clone();
        let mut ended = Vec::new();
        for (&i, result) in chosen.iter().zip(results) {
            let live = &mut self.live[i];
            let outcome = match result {
                Ok(None) => continue,
                Ok(Some(logits)) => {
                    let events = &live.events;
                    live.seq
                        .accept(&logits, &tokenizer, &mut |t| Live::send_text(events, t))
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(reason)) => ended.push((i, Ok(reason))),
                Err(e) => ended.push((i, Err(e))),
            }
        }
        for (i, outcome) in ended.into_iter().rev() {
            let live = self.live.remove(i);
            self.finish(live, outcome);
        }
    }

    /// Sends the final event; the conversation's cache is kept for a follow-up.
    fn finish(&mut self, live: Live, outcome: Result<FinishReason, EngineError>) {
        let Live {
            seq,
            events,
            queue_ms,
            ..
        } = live;
        let conv = match outcome {
            Ok(reason) => {
                let (mut summary, conv) = seq.finish(reason, &mut |t| Live::send_text(&events, t));
                summary.timings.queue_ms = queue_ms;
                self.stats
                    .tokens_generated
                    .fetch_add(summary.usage.completion_tokens, Ordering::SeqCst);
                let counter = if reason == FinishReason::Cancelled {
                    &self.stats.jobs_cancelled
                } else {
                    &self.stats.jobs_finished
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = events.send(GenerationEvent::Done(summary));
                conv
            }
            Err(e) => {
                self.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                let _ = events.send(GenerationEvent::Error(e));
                seq.into_conversation()
            }
        };
        if !conv.tokens().is_empty() {
            self.kept.push_back(conv);
        }
        // Kept conversations give way to live ones' budget at admission; bound their number too.
        while self.kept.len() > self.max_batch * 4 {
            self.kept.pop_front();
        }
        if let Some(budget) = self.budget {
            while self.reserved_bytes() + self.kept_bytes() > budget
                && self.kept.pop_front().is_some()
            {}
        }
    }

    fn publish(&self) {
        self.stats
            .live_sequences
            .store(self.live.len(), Ordering::SeqCst);
        let held: usize =
            self.live.iter().map(|l| l.seq.kv_bytes()).sum::<usize>() + self.kept_bytes();
        self.stats.kv_bytes.store(held, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ChatMessage, Prompt, Role, SamplingParams};

    /// Runs `rx` to its end: (texts, summary) or the error.
    fn collect(
        rx: &mut UnboundedReceiver<GenerationEvent>,
    ) -> Result<(Vec<String>, GenerationSummary), EngineError> {
        let mut texts = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                GenerationEvent::Token(t) => texts.push(t),
                GenerationEvent::Done(s) => return Ok((texts, s)),
                GenerationEvent::Error(e) => return Err(e),
            }
        }
        Err(EngineError::Internal("stream ended without Done".into()))
    }

    fn request(question: &str, tokens: usize, fail_at_token: Option<usize>) -> GenerateRequest {
        GenerateRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, question)]),
            params: SamplingParams {
                max_new_tokens: tokens,
                ignore_eos: true,
                fail_at_token,
                ..SamplingParams::default()
            },
        }
    }

    #[test]
    fn an_engine_error_mid_batch_fails_only_its_request() {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let mut opts = LlmOptions::new(model);
        opts.max_batch = 4;
        let handle = LlmHandle::spawn(opts, 8).expect("SmolLM2 (scripts/fetch-test-models.sh)");
        let good_question = "How do I block my card?";
        let alone = collect(&mut handle.submit(request(good_question, 12, None)).unwrap()).unwrap();
        let steps_before = handle.stats().batched_steps();
        // Submitted together, so they are advanced in the same steps until the fault.
        let mut good = handle.submit(request(good_question, 12, None)).unwrap();
        let mut bad = handle
            .submit(request("What is the fee for a transfer?", 12, Some(3)))
            .unwrap();
        let err = collect(&mut bad).unwrap_err();
        assert!(
            matches!(&err, EngineError::Internal(m) if m.contains("injected")),
            "{err:?}"
        );
        let (texts, summary) = collect(&mut good).expect("the other request goes on");
        assert_eq!(summary.usage.completion_tokens, 12);
        assert_eq!(
            texts.concat(),
            alone.0.concat(),
            "its answer is its single-stream one"
        );
        let batched: usize = handle.stats().batch_steps[2..]
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum();
        assert!(
            batched > steps_before,
            "the two requests never shared a step"
        );
        // The worker still serves.
        let after = collect(&mut handle.submit(request(good_question, 4, None)).unwrap()).unwrap();
        assert_eq!(after.1.usage.completion_tokens, 4);
    }
}
