//! One named thread owns the model (candle's KV cache lives inside it and needs `&mut`); everyone else
//! holds a cloneable `LlmHandle`. Admission is a bounded queue: when it is full the caller gets
//! `Overloaded` at once instead of waiting. Each job carries its own event channel; when the receiver is
//! dropped (the client went away) the job is skipped or its generation stops at the next token.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::chat_template::ChatMessage;
use crate::engine::generation::{FinishReason, GenerationSummary, Llm, LlmOptions};
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
}

/// Counters of what the worker has done (for metrics and tests).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub jobs_finished: AtomicUsize,
    pub jobs_cancelled: AtomicUsize,
    /// Jobs whose caller had gone before the worker reached them.
    pub jobs_skipped: AtomicUsize,
    pub tokens_generated: AtomicUsize,
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
                let mut llm = match Llm::load(&opts) {
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
                };
                if ready_tx.send(Ok((llm.tokenizer.clone(), info))).is_err() {
                    return;
                }
                while let Ok(job) = jobs_rx.recv() {
                    worker_waiting.fetch_sub(1, Ordering::SeqCst);
                    run_job(&mut llm, job, &worker_stats);
                }
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

fn run_job(llm: &mut Llm, job: Job, stats: &WorkerStats) {
    let Job {
        request,
        events,
        enqueued,
    } = job;
    if events.is_closed() {
        stats.jobs_skipped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let queue_ms = enqueued.elapsed().as_secs_f64() * 1000.0;
    let prompt = match request.prompt {
        Prompt::Tokens(ids) => Ok(ids),
        Prompt::Chat(messages) => llm.encode_chat(&messages),
    };
    let result = prompt.and_then(|prompt| {
        let cancelled = || events.is_closed();
        let mut on_text = |text: &str| {
            if events
                .send(GenerationEvent::Token(text.to_string()))
                .is_err()
            {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        llm.generate(&prompt, &request.params, &cancelled, &mut on_text)
    });
    let _ = events.send(match result {
        Ok(mut summary) => {
            summary.timings.queue_ms = queue_ms;
            stats
                .tokens_generated
                .fetch_add(summary.usage.completion_tokens, Ordering::SeqCst);
            let counter = if summary.finish_reason == FinishReason::Cancelled {
                &stats.jobs_cancelled
            } else {
                &stats.jobs_finished
            };
            counter.fetch_add(1, Ordering::SeqCst);
            GenerationEvent::Done(summary)
        }
        Err(e) => GenerationEvent::Error(e),
    });
}
