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
use crate::engine::llama::{KvState, LlamaConfig, LlamaModel, LoadOptions};
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
    /// Sequences the worker advances together in one forward pass.
    pub max_batch: usize,
    /// Bytes of KV cache the worker's live and kept conversations may take (`None`: no limit).
    pub kv_budget_bytes: Option<usize>,
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
            max_batch: 4,
            kv_budget_bytes: None,
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
    /// The conversation `generate` continues (single-stream callers: the CLI, benchmarks, tests).
    conv: Conversation,
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
        let conv = Conversation::new(&model);
        Ok(Self {
            model,
            tokenizer: std::sync::Arc::new(tokenizer),
            template,
            name,
            prefill_chunk: opts.prefill_chunk,
            conv,
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
        &self.conv.tokens
    }

    /// An empty conversation (no memory until its first prompt runs).
    pub fn new_conversation(&self) -> Conversation {
        Conversation::new(&self.model)
    }

    /// Bytes of f16 keys and values one position takes in every layer (`NOVAPAY_KV_BUDGET_MB`).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.model.kv_bytes_per_token()
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
        let rows = self.run_in_pool(|model, conv| model.forward_all(&mut conv.kv, tokens))?;
        self.conv.tokens.extend_from_slice(tokens);
        Ok(rows.to_vec2::<f32>()?)
    }

    /// Keeps the first `keep` cached positions (at most what the cache holds), runs `tokens` after them
    /// in one forward pass and returns the logits of the last one: how a prompt split into a reused
    /// prefix and a tail is computed, for the determinism checks.
    pub fn logits_after(&mut self, keep: usize, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let keep = keep.min(self.conv.tokens.len());
        self.conv.truncate(keep);
        let row = self.forward(tokens)?.to_vec1::<f32>()?;
        self.conv.tokens.extend_from_slice(tokens);
        Ok(row)
    }

    /// Logits after one more token on top of what the cache holds.
    pub fn logits_next(&mut self, token: u32) -> Result<Vec<f32>, EngineError> {
        let row = self.forward(&[token])?.to_vec1::<f32>()?;
        self.conv.tokens.push(token);
        Ok(row)
    }

    /// Empties the KV cache (the next prompt is computed in full) and frees its memory.
    pub fn forget(&mut self) {
        self.conv.kv.reset();
        self.conv.tokens.clear();
    }

    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.template.encode(&self.tokenizer, messages, true)
    }

    /// Generates after `prompt`, continuing this `Llm`'s own conversation (its cached prefix is
    /// reused). `on_text` gets each piece of text as it is complete; returning `Break` (the caller
    /// went away) stops generation. `cancelled` is also polled between prefill chunks. Prompts that
    /// leave no room to answer are refused with `ContextOverflow`. The worker runs the same steps
    /// (`start`, `prefill`, `Sequence::accept`, `decode`) for many sequences at once.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        cancelled: &dyn Fn() -> bool,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationSummary, EngineError> {
        self.check_prompt(prompt, params)?;
        let conv = std::mem::replace(&mut self.conv, Conversation::new(&self.model));
        let mut seq = self.start(conv, prompt.to_vec(), params);
        match self.drive(&mut seq, cancelled, on_text) {
            Ok(reason) => {
                let (summary, conv) = seq.finish(reason, on_text);
                self.conv = conv;
                Ok(summary)
            }
            Err(e) => {
                self.conv = seq.into_conversation();
                Err(e)
            }
        }
    }

    fn drive(
        &mut self,
        seq: &mut Sequence,
        cancelled: &dyn Fn() -> bool,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<FinishReason, EngineError> {
        let mut logits = loop {
            if cancelled() {
                return Ok(FinishReason::Cancelled);
            }
            if let Some(logits) = self.prefill(seq, self.prefill_chunk_len())? {
                break logits;
            }
        };
        loop {
            if let Some(reason) = seq.accept(&logits, &self.tokenizer, on_text)? {
                return Ok(reason);
            }
            logits = self
                .decode(&mut [&mut *seq])?
                .pop()
                .ok_or_else(|| EngineError::Internal("no decode output".into()))?;
        }
    }

    /// Refuses what `start` cannot run: bad parameters, an empty prompt, one that leaves no room to
    /// answer, token ids outside the vocabulary.
    pub fn check_prompt(&self, prompt: &[u32], params: &SamplingParams) -> Result<(), EngineError> {
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
        Ok(())
    }

    /// Starts generating after `prompt` (checked by `check_prompt`) in `conv`: the positions it
    /// shares with what `conv` holds (the system prompt, earlier turns) are kept, and at least the
    /// last `recompute_tail` prompt tokens are run (see `load`).
    pub fn start(
        &self,
        mut conv: Conversation,
        prompt: Vec<u32>,
        params: &SamplingParams,
    ) -> Sequence {
        let reused = if self.reuse_prefix && !prompt.is_empty() {
            let tail = self.recompute_tail.clamp(1, prompt.len());
            conv.shared_prefix(&prompt).min(prompt.len() - tail)
        } else {
            0
        };
        conv.truncate(reused);
        let now = Instant::now();
        Sequence {
            usage: Usage {
                prompt_tokens: prompt.len(),
                completion_tokens: 0,
                cached_prompt_tokens: reused,
            },
            conv,
            prefilled: reused,
            prompt,
            limit: self.context_length(),
            sampler: Sampler::new(params),
            history: Vec::with_capacity(params.max_new_tokens.min(4096)),
            decoder: Utf8StreamDecoder::new(),
            stops: StopMatcher::new(&params.stop),
            params: params.clone(),
            hit_stop_string: false,
            timings: Timings::default(),
            start: now,
            gen_start: now,
            next: None,
        }
    }

    /// Runs up to `max_tokens` more of `seq`'s prompt; returns the last prompt token's logits once
    /// the whole prompt is in its cache.
    pub fn prefill(
        &mut self,
        seq: &mut Sequence,
        max_tokens: usize,
    ) -> Result<Option<candle_core::Tensor>, EngineError> {
        if seq.prefilled() {
            return Err(EngineError::Internal(
                "prefill of a prefilled sequence".into(),
            ));
        }
        Ok(self.advance(&mut [seq], max_tokens)?.pop().flatten())
    }

    /// One decode step of every sequence in `seqs` (each prefilled, with a token from
    /// `Sequence::accept` to run). Returns each one's logits, in order.
    pub fn decode(
        &mut self,
        seqs: &mut [&mut Sequence],
    ) -> Result<Vec<candle_core::Tensor>, EngineError> {
        if seqs.iter().any(|s| !s.prefilled()) {
            return Err(EngineError::Internal(
                "decode of a sequence in its prompt".into(),
            ));
        }
        self.advance(seqs, 1)?
            .into_iter()
            .map(|l| l.ok_or_else(|| EngineError::Internal("no decode output".into())))
            .collect()
    }

    /// One step of every sequence in `seqs`, in one forward pass where the kernels allow it (the
    /// weights are read once for all of them): a prefilled sequence runs the token
    /// `Sequence::accept` chose, one still in its prompt runs up to `prompt_tokens` more of it.
    /// Returns, for each, the logits its next token is to be chosen from, or `None` while its
    /// prompt is not finished. On failure no sequence has moved.
    pub fn advance(
        &mut self,
        seqs: &mut [&mut Sequence],
        prompt_tokens: usize,
    ) -> Result<Vec<Option<candle_core::Tensor>>, EngineError> {
        let mut pieces: Vec<Vec<u32>> = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            pieces.push(if s.prefilled() {
                vec![s
                    .next
                    .ok_or_else(|| EngineError::Internal("decode without a token".into()))?]
            } else {
                let end = s.prompt.len().min(s.prefilled + prompt_tokens.max(1));
                s.prompt[s.prefilled..end].to_vec()
            });
        }
        #[cfg(test)]
        if seqs
            .iter()
            .any(|s| s.prefilled() && s.params.fail_at_token == Some(s.usage.completion_tokens))
        {
            return Err(EngineError::Internal("injected engine fault".into()));
        }
        let logits = self.forward_pieces(seqs, &pieces)?;
        let mut out = Vec::with_capacity(seqs.len());
        for ((s, piece), logits) in seqs.iter_mut().zip(pieces).zip(logits) {
            s.conv.tokens.extend_from_slice(&piece);
            if s.prefilled() {
                s.next = None;
                out.push(Some(logits));
            } else {
                s.prefilled += piece.len();
                if s.prefilled() {
                    s.timings.prompt_ms = ms_since(s.start);
                    out.push(Some(logits));
                } else {
                    out.push(None);
                }
            }
        }
        Ok(out)
    }

    /// The last-token logits of each sequence after its piece: one sequence as the single-stream
    /// forward pass, several as one batch (prompt pieces run on their own where the model cannot mix
    /// them into a batch).
    fn forward_pieces(
        &mut self,
        seqs: &mut [&mut Sequence],
        pieces: &[Vec<u32>],
    ) -> Result<Vec<candle_core::Tensor>, EngineError> {
        if let [seq] = seqs {
            let piece = &pieces[0];
            return Ok(vec![
                self.run_in_pool(|model, _| model.forward(&mut seq.conv.kv, piece))?
            ]);
        }
        let mixed = self.model.mixed_batches();
        let batched: Vec<usize> = (0..pieces.len())
            .filter(|&i| mixed || pieces[i].len() == 1)
            .collect();
        let mut out: Vec<Option<candle_core::Tensor>> = vec![None; pieces.len()];
        if !batched.is_empty() {
            let mut kvs: Vec<&mut KvState> = seqs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| batched.contains(i))
                .map(|(_, s)| &mut s.conv.kv)
                .collect();
            let toks: Vec<&[u32]> = batched.iter().map(|&i| pieces[i].as_slice()).collect();
            let all = self.run_in_pool(|model, _| model.forward_batch(&mut kvs, &toks))?;
            for (row, &i) in batched.iter().enumerate() {
                out[i] = Some(all.get(row)?);
            }
        }
        for (i, seq) in seqs.iter_mut().enumerate() {
            if out[i].is_none() {
                let piece = &pieces[i];
                out[i] = Some(self.run_in_pool(|model, _| model.forward(&mut seq.conv.kv, piece))?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// One forward pass of this `Llm`'s own conversation.
    fn forward(&mut self, tokens: &[u32]) -> Result<candle_core::Tensor, EngineError> {
        self.run_in_pool(|model, conv| model.forward(&mut conv.kv, tokens))
    }

    /// Runs `f` on the model. On CPU it runs inside candle's own thread pool
    /// (`Device::with_context`), which keeps its workers warm across the many short parallel
    /// sections of a forward pass instead of handing each to rayon's global pool.
    fn run_in_pool<R: Send>(
        &mut self,
        f: impl FnOnce(&LlamaModel, &mut Conversation) -> R + Send,
    ) -> R {
        let (model, conv) = (&self.model, &mut self.conv);
        if self.pool_context && self.device.is_cpu() {
            self.device.with_context(|| f(model, conv))
        } else {
            f(model, conv)
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

/// A conversation's keys and values and the tokens they are of, kept between its turns so a
/// follow-up runs only what is new.
pub struct Conversation {
    kv: KvState,
    tokens: Vec<u32>,
}

impl Conversation {
    fn new(model: &LlamaModel) -> Self {
        Self {
            kv: model.new_state(),
            tokens: Vec::new(),
        }
    }

    /// Tokens whose keys and values are cached, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many leading tokens of `prompt` are cached.
    pub fn shared_prefix(&self, prompt: &[u32]) -> usize {
        common_prefix(&self.tokens, prompt)
    }

    /// Bytes its cache buffers take.
    pub fn kv_bytes(&self) -> usize {
        self.kv.allocated_bytes()
    }

    fn truncate(&mut self, len: usize) {
        self.kv.truncate(len);
        self.tokens.truncate(self.kv.position());
    }
}

/// One generation in progress: its conversation's cache, the prompt still to run, and the sampling
/// and text state of its answer. `Llm::generate` runs one to the end; the worker interleaves many.
pub struct Sequence {
    conv: Conversation,
    prompt: Vec<u32>,
    /// Prompt tokens in the cache.
    prefilled: usize,
    limit: usize,
    params: SamplingParams,
    sampler: Sampler,
    /// Generated tokens (the repeat penalty looks at these only: penalizing the prompt would
    /// discourage quoting the very figures the answer must copy from the context).
    history: Vec<u32>,
    decoder: Utf8StreamDecoder,
    stops: StopMatcher,
    hit_stop_string: bool,
    usage: Usage,
    timings: Timings,
    start: Instant,
    gen_start: Instant,
    /// The token `accept` chose, for the next decode step to run.
    next: Option<u32>,
}

impl Sequence {
    /// True once the whole prompt is in the cache.
    pub fn prefilled(&self) -> bool {
        self.prefilled >= self.prompt.len()
    }

    /// Prompt tokens still to run.
    pub fn prompt_remaining(&self) -> usize {
        self.prompt.len() - self.prefilled.min(self.prompt.len())
    }

    /// Positions its cache holds.
    pub fn position(&self) -> usize {
        self.conv.kv.position()
    }

    /// Positions it can still come to hold: the rest of the prompt and of its token budget, within
    /// the context window (what the worker's KV budget reserves for it).
    pub fn max_positions(&self) -> usize {
        (self.prompt.len() + self.params.max_new_tokens).min(self.limit)
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Tokens generated so far (end-of-turn excluded).
    pub fn generated(&self) -> &[u32] {
        &self.history
    }

    /// Bytes its cache buffers take now.
    pub fn kv_bytes(&self) -> usize {
        self.conv.kv_bytes()
    }

    /// Chooses the next token from `logits` and streams its text. Returns why generation ends, or
    /// `None` when the token is to be run by the next decode step.
    pub fn accept(
        &mut self,
        logits: &candle_core::Tensor,
        tokenizer: &LlmTokenizer,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Option<FinishReason>, EngineError> {
        let next = self.sampler.next(logits, &self.history)?;
        self.usage.completion_tokens += 1;
        if self.usage.completion_tokens == 1 {
            self.timings.time_to_first_token_ms = ms_since(self.start);
            self.gen_start = Instant::now();
        }
        if !self.params.ignore_eos && tokenizer.stop_ids.contains(&next) {
            return Ok(Some(FinishReason::Stop));
        }
        self.history.push(next);
        let text = self.decoder.push(tokenizer.output_bytes(next));
        let (text, stopped) = match self.stops.push(&text) {
            StopOutcome::Continue(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if !text.is_empty() && on_text(&text).is_break() {
            return Ok(Some(FinishReason::Cancelled));
        }
        if stopped {
            self.hit_stop_string = true;
            return Ok(Some(FinishReason::Stop));
        }
        if self.usage.completion_tokens >= self.params.max_new_tokens {
            return Ok(Some(FinishReason::Length));
        }
        if self.position() + 1 > self.limit {
            return Ok(Some(FinishReason::ContextFull));
        }
        self.next = Some(next);
        Ok(None)
    }

    /// Ends the generation: the text held back (an incomplete character, a possible stop string's
    /// start) goes to `on_text` unless it was cancelled; returns the summary and the conversation,
    /// whose cache a follow-up can reuse.
    pub fn finish(
        mut self,
        reason: FinishReason,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> (GenerationSummary, Conversation) {
        let tail = if self.hit_stop_string {
            String::new()
        } else {
            let mut tail = self.stops.finish();
            tail.push_str(&self.decoder.finish());
            tail
        };
        if !tail.is_empty() && reason != FinishReason::Cancelled {
            let _ = on_text(&tail);
        }
        self.timings.generation_ms = ms_since(self.gen_start);
        let summary = GenerationSummary {
            usage: self.usage,
            timings: self.timings,
            finish_reason: reason,
        };
        (summary, self.into_conversation())
    }

    /// The conversation, for reuse, after a failure or cancellation: only complete positions are
    /// kept.
    pub fn into_conversation(mut self) -> Conversation {
        let pos = self.conv.kv.position();
        self.conv.truncate(pos);
        self.conv
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
