//! A loaded LLM (model + tokenizer + chat template) and the generation loop: prefill in chunks, then one
//! token at a time until an end-of-turn token, the token budget or the context window, streaming text
//! that is always whole UTF-8 characters.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::chat_template::{ChatMessage, ChatTemplate, TemplateChoice};
use super::gguf::GgufFile;
use super::llama::{LlamaConfig, LlamaModel, LoadOptions};
use super::sampling::{Sampler, SamplingParams};
use super::stream_decoder::{StopMatcher, StopOutcome, Utf8StreamDecoder};
use super::tokenizer::LlmTokenizer;
use super::EngineError;
use crate::device::DeviceChoice;

#[derive(Debug, Clone)]
pub struct LlmOptions {
    pub gguf: PathBuf,
    /// A `tokenizer.json` to use instead of the GGUF's own vocabulary.
    pub tokenizer_json: Option<PathBuf>,
    pub template: TemplateChoice,
    pub load: LoadOptions,
    /// Prompt tokens per forward pass during prefill (bounds the attention matrix's memory).
    pub prefill_chunk: usize,
    /// CPU or a CUDA GPU; the CPU-only weight tricks in `llama` are skipped on a GPU.
    pub device: DeviceChoice,
}

impl LlmOptions {
    pub fn new(gguf: PathBuf) -> Self {
        Self {
            gguf,
            tokenizer_json: None,
            template: TemplateChoice::Auto,
            load: LoadOptions::default(),
            prefill_chunk: 512,
            device: DeviceChoice::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller went away.
    Cancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Waiting in the queue before the worker took the job.
    pub queue_ms: f64,
    pub prompt_ms: f64,
    /// From the start of prefill to the first generated token.
    pub time_to_first_token_ms: f64,
    pub generation_ms: f64,
}

impl Timings {
    pub fn prompt_tokens_per_s(&self, usage: &Usage) -> f64 {
        per_second(usage.prompt_tokens, self.prompt_ms)
    }
    /// Tokens after the first, over the time after the first (the first comes out of prefill).
    pub fn generation_tokens_per_s(&self, usage: &Usage) -> f64 {
        per_second(
            usage.completion_tokens.saturating_sub(1),
            self.generation_ms,
        )
    }
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationSummary {
    pub usage: Usage,
    pub timings: Timings,
    pub finish_reason: FinishReason,
}

pub struct Llm {
    model: LlamaModel,
    pub tokenizer: std::sync::Arc<LlmTokenizer>,
    pub template: ChatTemplate,
    pub name: String,
    prefill_chunk: usize,
}

impl Llm {
    pub fn load(opts: &LlmOptions) -> Result<Self, EngineError> {
        let device = opts.device.open()?;
        let mut gguf = GgufFile::open(&opts.gguf)?;
        let tokenizer = match &opts.tokenizer_json {
            Some(path) => LlmTokenizer::from_file(path, Some(&gguf))?,
            None => LlmTokenizer::from_gguf(&gguf)?,
        };
        let template_src = gguf.get_str("tokenizer.chat_template").map(str::to_string);
        let template = ChatTemplate::select(&opts.template, template_src.as_deref(), &tokenizer)?;
        let model = LlamaModel::load(&mut gguf, &device, &opts.load)?;
        let name = opts
            .gguf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            model,
            tokenizer: std::sync::Arc::new(tokenizer),
            template,
            name,
            prefill_chunk: opts.prefill_chunk,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    pub fn context_length(&self) -> usize {
        self.model.config.context_length
    }

    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.template.encode(&self.tokenizer, messages, true)
    }

    /// Generates after `prompt`. `on_text` gets each piece of text as it is complete; returning
    /// `Break` (the caller went away) stops generation. `cancelled` is also polled between prefill
    /// chunks. Prompts that leave no room to answer are refused with `ContextOverflow`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        cancelled: &dyn Fn() -> bool,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationSummary, EngineError> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::InvalidInput("empty prompt".into()));
        }
        let limit = self.context_length();
        if prompt.len() >= limit {
            return Err(EngineError::ContextOverflow {
                tokens: prompt.len() + 1,
                limit,
            });
        }
        let vocab = self.model.config.vocab as u32;
        if let Some(bad) = prompt.iter().find(|id| **id >= vocab) {
            return Err(EngineError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let mut usage = Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: 0,
        };
        let mut timings = Timings::default();
        let finished = |reason, usage, timings| GenerationSummary {
            usage,
            timings,
            finish_reason: reason,
        };

        self.model.reset();
        let start = Instant::now();
        let mut logits = None;
        for chunk in prompt.chunks(self.prefill_chunk_len()) {
            if cancelled() {
                self.model.reset();
                return Ok(finished(FinishReason::Cancelled, usage, timings));
            }
            logits = Some(self.model.forward(chunk)?);
        }
        let mut logits = logits.ok_or_else(|| EngineError::Internal("no prefill output".into()))?;
        timings.prompt_ms = ms_since(start);

        let mut sampler = Sampler::new(params);
        // The repeat penalty looks at generated tokens only: penalizing the prompt would discourage
        // quoting the very figures the answer must copy from the context.
        let mut history: Vec<u32> = Vec::with_capacity(params.max_new_tokens.min(4096));
        let mut decoder = Utf8StreamDecoder::new();
        let mut stops = StopMatcher::new(&params.stop);
        let mut hit_stop_string = false;
        let mut gen_start = Instant::now();
        let reason = loop {
            let next = sampler.next(&logits, &history)?;
            usage.completion_tokens += 1;
            if usage.completion_tokens == 1 {
                timings.time_to_first_token_ms = ms_since(start);
                gen_start = Instant::now();
            }
            if !params.ignore_eos && self.tokenizer.stop_ids.contains(&next) {
                break FinishReason::Stop;
            }
            history.push(next);
            let text = decoder.push(self.tokenizer.output_bytes(next));
            let (text, stopped) = match stops.push(&text) {
                StopOutcome::Continue(t) => (t, false),
                StopOutcome::Stopped(t) => (t, true),
            };
            if !text.is_empty() && on_text(&text).is_break() {
                break FinishReason::Cancelled;
            }
            if stopped {
                hit_stop_string = true;
                break FinishReason::Stop;
            }
            if usage.completion_tokens >= params.max_new_tokens {
                break FinishReason::Length;
            }
            if self.model.position() + 1 > limit {
                break FinishReason::ContextFull;
            }
            logits = self.model.forward(&[next])?;
        };
        let tail = if hit_stop_string {
            String::new()
        } else {
            let mut tail = stops.finish();
            tail.push_str(&decoder.finish());
            tail
        };
        if !tail.is_empty() && reason != FinishReason::Cancelled {
            let _ = on_text(&tail);
        }
        timings.generation_ms = ms_since(gen_start);
        Ok(finished(reason, usage, timings))
    }

    fn prefill_chunk_len(&self) -> usize {
        self.prefill_chunk.max(1)
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
