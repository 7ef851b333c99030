//! A loaded LLM (model + tokenizer + chat template) and the generation loop: prefill in chunks, then one
//! token at a time until an end-of-turn token, the token budget or the context window, streaming text
//! that is always whole UTF-8 characters.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;

use serde::Serialize;

use crate::device::DeviceChoice;
use crate::engine::arch::Architecture;
use crate::engine::chat_template::{ChatMessage, ChatTemplate, TemplateChoice};
use crate::engine::gguf::GgufFile;
use crate::engine::llama::{LlamaConfig, LlamaModel, LoadOptions};
use crate::engine::load_phases::LoadPhases;
use crate::engine::sampling::{Sampler, SamplingParams};
use crate::engine::stream_decoder::{StopMatcher, StopOutcome, Utf8StreamDecoder};
use crate::engine::tokenizer::LlmTokenizer;
use crate::engine::EngineError;

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
    /// Keep the KV cache of the longest prefix a new prompt shares with the previous generation.
    pub reuse_prefix: bool,
    /// Run forward passes inside candle's CPU thread pool (see `Llm::forward`).
    pub pool_context: bool,
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
            reuse_prefix: true,
            pool_context: true,
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
    /// Prompt tokens whose keys and values were reused from the previous generation.
    pub cached_prompt_tokens: usize,
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
    /// Tokens whose keys and values the model's cache holds, in order.
    cached: Vec<u32>,
    reuse_prefix: bool,
    pool_context: bool,
    recompute_tail: usize,
    device: Device,
}

impl Llm {
    pub fn load(opts: &LlmOptions) -> Result<Self, EngineError> {
        let mut phases = LoadPhases::start(opts.gguf.display().to_string());
        let device = opts.device.open()?;
        let gguf = GgufFile::open(&opts.gguf)?;
        // An architecture we cannot run is refused first: its tokenizer or tensors would otherwise
        // fail with a less telling error (a BERT's vocabulary, a Mamba's missing attention).
        Architecture::of(&gguf)?;
        phases.phase("gguf header");
        // The tokenizer first and the weights after, on this thread: repacking keeps both cores busy
        // (a tokenizer thread beside it showed no gain in interleaved runs), and with the tile cache
        // the weights take ~20 ms, so the tokenizer (~0.1 s for Llama 3's vocabulary) is most of it.
        let tokenizer = match &opts.tokenizer_json {
            Some(path) => LlmTokenizer::from_file(path, Some(&gguf))?,
            None => LlmTokenizer::from_gguf(&gguf)?,
        };
        check_tokenizer_fits(&gguf, &tokenizer, opts.tokenizer_json.as_deref())?;
        phases.phase("tokenizer");
        let model = LlamaModel::load(&gguf, &device, &opts.load)?;
        // Where the kernels give a token the same bits however the prompt is split, a reused prefix
        // cannot change an answer and only the last token needs running again; elsewhere the last
        // `dense_prefill_min_rows` tokens run as one batch, so a repeated question at least runs
        // its final rows through the same kernel as the first time.
        let recompute_tail = if model.split_invariant() {
            1
        } else {
            opts.load.dense_prefill_min_rows
        };
        let template_src = gguf.get_str("tokenizer.chat_template").map(str::to_string);
        let template = ChatTemplate::select(&opts.template, template_src.as_deref(), &tokenizer)?;
        phases.phase("weights");
        phases.done();
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
            cached: Vec::new(),
            reuse_prefix: opts.reuse_prefix,
            pool_context: opts.pool_context,
            recompute_tail,
            device,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    /// Tokens whose keys and values the cache holds (the last prompt and the answer fed back so far).
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    pub fn weight_bytes_per_token(&self) -> u64 {
        self.model.weight_bytes_per_token()
    }

    /// Milliseconds of one decode step's matrix products alone (`LlamaModel::matvec_step`), median
    /// of `rounds`, run as `forward` runs them (inside candle's pool on CPU).
    pub fn time_matvec_step(&mut self, rounds: usize) -> Result<f64, EngineError> {
        let mut times = Vec::with_capacity(rounds.max(1));
        for _ in 0..rounds.max(1) {
            let t = Instant::now();
            if self.pool_context && self.device.is_cpu() {
                let model = &self.model;
                self.device.with_context(|| model.matvec_step())?;
            } else {
                self.model.matvec_step()?;
            }
            times.push(ms_since(t));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    pub fn context_length(&self) -> usize {
        self.model.config.context_length
    }

    /// Logits of every position of `tokens` run from an empty cache, one row per token.
    pub fn logits_all_positions(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.forget();
        let rows = self.model.forward_all(tokens)?;
        self.cached.extend_from_slice(tokens);
        Ok(rows.to_vec2::<f32>()?)
    }

    /// Keeps the first `keep` cached positions (at most what the cache holds), runs `tokens` after them
    /// in one forward pass and returns the logits of the last one: how a prompt split into a reused
    /// prefix and a tail is computed, for the determinism checks.
    pub fn logits_after(&mut self, keep: usize, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let keep = keep.min(self.cached.len());
        self.model.truncate(keep);
        self.cached.truncate(keep);
        let row = self.forward(tokens)?.to_vec1::<f32>()?;
        self.cached.extend_from_slice(tokens);
        Ok(row)
    }

    /// Logits after one more token on top of what the cache holds.
    pub fn logits_next(&mut self, token: u32) -> Result<Vec<f32>, EngineError> {
        let row = self.forward(&[token])?.to_vec1::<f32>()?;
        self.cached.push(token);
        Ok(row)
    }

    /// Empties the KV cache (the next prompt is computed in full) and frees its memory.
    pub fn forget(&mut self) {
        self.model.reset();
        self.cached.clear();
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
            cached_prompt_tokens: 0,
        };
        let mut timings = Timings::default();
        let finished = |reason, usage, timings| GenerationSummary {
            usage,
            timings,
            finish_reason: reason,
        };

        let start = Instant::now();
        // Positions shared with what the cache already holds (the system prompt, earlier turns) are
        // kept; at least the last `recompute_tail` prompt tokens are run (see `load`).
        let reused = if self.reuse_prefix {
            let tail = self.recompute_tail.clamp(1, prompt.len());
            common_prefix(&self.cached, prompt).min(prompt.len() - tail)
        } else {
            0
        };
        self.model.truncate(reused);
        self.cached.truncate(reused);
        usage.cached_prompt_tokens = reused;
        let mut logits = None;
        for chunk in prompt[reused..].chunks(self.prefill_chunk_len()) {
            if cancelled() {
                return Ok(finished(FinishReason::Cancelled, usage, timings));
            }
            logits = Some(self.forward(chunk)?);
            self.cached.extend_from_slice(chunk);
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
            logits = self.forward(&[next])?;
            self.cached.push(next);
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

    /// One forward pass. On CPU it runs inside candle's own thread pool (`Device::with_context`), which
    /// keeps its workers warm across the many short parallel sections of a forward pass instead of
    /// handing each to rayon's global pool.
    fn forward(&mut self, tokens: &[u32]) -> Result<candle_core::Tensor, EngineError> {
        if self.pool_context && self.device.is_cpu() {
            let model = &mut self.model;
            self.device.with_context(|| model.forward(tokens))
        } else {
            self.model.forward(tokens)
        }
    }

    fn prefill_chunk_len(&self) -> usize {
        self.prefill_chunk.max(1)
    }
}

/// A tokenizer whose ids the embedding has no rows for would fail mid-answer (or, with a different
/// vocabulary of the same size, answer nonsense): refuse it before the weights are read.
fn check_tokenizer_fits(
    gguf: &GgufFile,
    tokenizer: &LlmTokenizer,
    tokenizer_json: Option<&std::path::Path>,
) -> Result<(), EngineError> {
    let Some((dims, _)) = gguf.tensor_info("token_embd.weight") else {
        return Ok(()); // reported with the other missing tensors
    };
    let rows = dims.first().copied().unwrap_or(0);
    let n = tokenizer.vocab_size();
    let source = match tokenizer_json {
        Some(p) => format!("the tokenizer {}", p.display()),
        None => "the GGUF's tokenizer.ggml.tokens".to_string(),
    };
    // A tokenizer.json may have fewer entries than a padded embedding; the GGUF's own list may not.
    let fits = if tokenizer_json.is_some() {
        n <= rows
    } else {
        n == rows
    };
    let special_out_of_range = [tokenizer.bos, tokenizer.eos]
        .into_iter()
        .flatten()
        .find(|id| *id as usize >= rows);
    if !fits || special_out_of_range.is_some() {
        let detail = match special_out_of_range {
            Some(id) if fits => format!("its BOS/EOS id {id} is outside the embedding"),
            _ => format!("it has {n} tokens"),
        };
        return Err(EngineError::BadModel {
            path: gguf.path.clone(),
            reason: format!(
                "{source} does not match the model: {detail}, tensor `token_embd.weight` has {rows} \
                 rows; use the tokenizer that came with this model"
            ),
        });
    }
    Ok(())
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
