//! Flag groups shared by several subcommands (models, knowledge base, memory, answering).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use novapay::assistant::answerability::GateConfig;
use novapay::assistant::answerability::MeaningConfig;
use novapay::assistant::cache::CacheConfig;
use novapay::assistant::{AnswerMode, RagConfig};
use novapay::device::DeviceChoice;
use novapay::embed::{EmbedderOptions, ModelFamily};
use novapay::engine::llama::{LoadOptions, PrefillKernel, Requantize};
use novapay::engine::tile_cache::TileCacheMode;
use novapay::engine::{LlmOptions, SamplingParams, TemplateChoice};
use novapay::index::chunk::ChunkSettings;
use novapay::memory::{self, ConversationStore, MemoryError, MemorySpec};
use novapay::models::{self, HubSettings};

/// Everything that builds the assistant: models, knowledge base, answering and generation settings.
#[derive(Args, Debug, Clone)]
pub struct AssistantArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub embed: EmbedArgs,
    #[command(flatten)]
    pub kb: KbArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub rag: RagArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub pin: PinArgs,
}

/// How the model files are checked against the models lock before they are loaded.
#[derive(Args, Debug, Clone)]
pub struct PinArgs {
    /// Check of the model files against the models lock before loading: sampled (size and a sha256 of
    /// fixed regions, milliseconds; catches a swapped, truncated or corrupted file) or full (the
    /// sha256 of every byte, seconds for a 2 GB GGUF; also an edit between the sampled regions).
    #[arg(long, env = "NOVAPAY_MODELS_CHECK", default_value = "sampled")]
    pub models_check: ModelsCheck,
    /// Refuse to load models when there is no models lock. Without it, a missing lock at the default
    /// place means a loud warning and /health's models_pinned: false; a lock named by
    /// --models-lock / NOVAPAY_MODELS_LOCK is always required, and a lock that exists is always
    /// enforced.
    #[arg(long, env = "NOVAPAY_REQUIRE_PINNED_MODELS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub require_pinned_models: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsCheck {
    Sampled,
    Full,
}

impl ModelsCheck {
    pub fn depth(self) -> models::pin::Depth {
        match self {
            ModelsCheck::Sampled => models::pin::Depth::Sampled,
            ModelsCheck::Full => models::pin::Depth::Full,
        }
    }
}

/// Where conversation history is kept.
#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// sqlite (the file in the state directory), sqlite://PATH, or redis://[:PASSWORD@]HOST[:PORT][/DB]
    /// (rediss:// for TLS) to share conversations between several replicas.
    #[arg(
        long,
        env = "NOVAPAY_MEMORY",
        default_value = "sqlite",
        hide_env_values = true,
        value_parser = MemorySpecParser
    )]
    pub memory: MemorySpec,
    /// Seconds a conversation is kept after its last message (SQLite and Redis); 0 = forever.
    /// Default: 30 days. SQLite deletes expired conversations in the background.
    #[arg(long, env = "NOVAPAY_MEMORY_TTL", default_value_t = 30 * 24 * 3600)]
    pub memory_ttl: u64,
}

impl MemoryArgs {
    pub fn open(&self, kb: &KbArgs) -> Result<Arc<dyn ConversationStore>, MemoryError> {
        let ttl = (self.memory_ttl > 0).then(|| Duration::from_secs(self.memory_ttl));
        memory::open(&self.memory, &kb.memory_path(), ttl)
    }
}

/// Where administrators' reads of customer data and erasures are recorded.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// The audit log: one JSON line per administrator read of a session, of /api/v1/stats or of an
    /// export, and per erase (who, when, what; never customer text). Mode 600, append only.
    /// Default: <state-dir>/audit.jsonl.
    #[arg(long, env = "NOVAPAY_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
}

impl AuditArgs {
    pub fn open(
        &self,
        kb: &KbArgs,
    ) -> Result<novapay::audit::AuditLog, novapay::audit::AuditError> {
        let path = self
            .audit_log
            .clone()
            .unwrap_or_else(|| kb.state_dir.join("audit.jsonl"));
        novapay::audit::AuditLog::open(&path)
    }
}

/// Which customer `forget` and `export` are about: exactly one of the two.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct CustomerArgs {
    /// The customer's `user_id`, as the integrator sent it to /api/v1/query or /api/v1/session.
    #[arg(long)]
    pub user_id: Option<String>,
    /// A Bitrix24 portal user id (FROM_USER_ID of the bot's events): their dialogs with the bot.
    #[arg(long)]
    pub bitrix24_user: Option<String>,
}

impl CustomerArgs {
    /// The customer named, or what to type instead.
    pub fn customer(&self) -> anyhow::Result<novapay::memory::Customer> {
        use anyhow::Context;
        use novapay::memory::Customer;
        match (&self.user_id, &self.bitrix24_user) {
            (Some(u), None) => Customer::user(u)
                .context("--user-id: give the user_id exactly as the integrator sent it"),
            (None, Some(b)) => Customer::channel_user("bitrix24", b)
                .context("--bitrix24-user: give the portal's numeric user id (FROM_USER_ID)"),
            _ => anyhow::bail!("give exactly one of --user-id or --bitrix24-user"),
        }
    }
}

/// Parses `--memory` without echoing the raw value, which may hold a Redis password (clap's own
/// "invalid value '...'" message would print it).
#[derive(Clone)]
struct MemorySpecParser;

impl clap::builder::TypedValueParser for MemorySpecParser {
    type Value = MemorySpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<MemorySpec, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--memory / NOVAPAY_MEMORY: {message}\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| invalid("not valid UTF-8".into()))?
            .parse()
            .map_err(|e: memory::InvalidMemorySpec| invalid(e.to_string()))
    }
}

/// Where the models run and the models' source: the device flags and the Hub.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub hub: HubArgs,
}

/// The device the models run on, and its CPU threads.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// CPU threads for inference (default: all cores; leave one free on a shared machine). Ignored on
    /// a GPU.
    #[arg(long, env = "NOVAPAY_THREADS")]
    pub threads: Option<usize>,
    /// Where the models run: cpu, cuda (GPU 0), cuda:N, or auto (GPU 0 when this binary has CUDA
    /// support and the machine a GPU, else the CPU).
    #[arg(long, env = "NOVAPAY_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(Args, Debug, Clone)]
pub struct KbArgs {
    /// Knowledge-base folder to index.
    #[arg(long = "data", env = "NOVAPAY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Where novapay keeps its index and conversation history.
    #[arg(long, env = "NOVAPAY_STATE_DIR", default_value = ".novapay")]
    pub state_dir: PathBuf,
    /// Index folder (default: <state-dir>/index).
    #[arg(long, env = "NOVAPAY_INDEX_DIR")]
    pub index_dir: Option<PathBuf>,
    /// Largest chunk in embedder tokens (default: 200, or less to fit the embedder).
    #[arg(long, env = "NOVAPAY_CHUNK_TOKENS")]
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by neighbouring chunks.
    #[arg(long, env = "NOVAPAY_CHUNK_OVERLAP", default_value_t = 30)]
    pub chunk_overlap: usize,
}

impl KbArgs {
    pub fn index_dir(&self) -> PathBuf {
        self.index_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("index"))
    }

    pub fn memory_path(&self) -> PathBuf {
        self.state_dir.join("conversations.sqlite")
    }

    /// Chunks leave room for the heading line and the passage prefix within the embedder's window.
    pub fn chunk_settings(&self, embedder_max_length: usize) -> ChunkSettings {
        ChunkSettings::fitted(self.chunk_tokens, self.chunk_overlap, embedder_max_length)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RagArgs {
    /// Cosine similarity the best match must reach at least, else the fallback answers without the
    /// LLM (default: 0.80 for e5 embedders, 0.20 otherwise; calibrate with `ask --retrieve-only`).
    #[arg(long, env = "NOVAPAY_MIN_SCORE")]
    pub min_score: Option<f32>,
    /// Share of the question's words, weighted by their rarity in the knowledge base, that the top
    /// excerpts must contain (see `novapay eval answerability` for the curve).
    #[arg(long, env = "NOVAPAY_MIN_COVERAGE")]
    pub min_coverage: Option<f32>,
    /// Cosine similarity between the question and one sentence of the top excerpts that lets a
    /// question through when a rare word of it is not the knowledge base's (and the sentence
    /// accounts for that word; see `novapay eval answerability`). Default: none (the word rules
    /// alone: at 0.50, all-MiniLM-L6-v2's tuned point, it let 3 of 27 off-topic held-out questions
    /// through); calibrate with `novapay eval answerability` before setting it.
    #[arg(long, env = "NOVAPAY_MIN_SENTENCE_SIMILARITY")]
    pub min_sentence_similarity: Option<f32>,
    /// Ask the LLM whether the excerpts answer a question the answerability gate is unsure of
    /// (between its two thresholds) before offering sections: yes generates a (checked) answer.
    /// Costs a few tokens (the answer reuses the judge's prompt) but only pays with a model that
    /// judges well: measure it with `novapay eval answers` on your model first (docs: trusted answers).
    #[arg(long, env = "NOVAPAY_GATE_JUDGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub gate_judge: bool,
    /// Excerpts given to the model at most.
    #[arg(long, env = "NOVAPAY_TOP_K", default_value_t = 4)]
    pub top_k: usize,
    /// generate (the model's answer as is), extract (sentences quoted from the knowledge base, no
    /// LLM) or verified (generated, then every figure checked against the sources).
    #[arg(long, env = "NOVAPAY_ANSWER_MODE", default_value = "verified")]
    pub answer_mode: AnswerMode,
    /// Answers kept for repeated questions (no history, same knowledge base); 0 = no cache.
    #[arg(long, env = "NOVAPAY_ANSWER_CACHE_SIZE", default_value_t = 1024)]
    pub answer_cache_size: usize,
    /// Reuse a cached answer for a question whose embedding is at least this similar (same
    /// language), e.g. 0.97; unset = identical (normalised) text only.
    #[arg(long, env = "NOVAPAY_ANSWER_CACHE_SIMILARITY")]
    pub answer_cache_similarity: Option<f32>,
    /// Fallback reply in English when the knowledge base has no answer.
    #[arg(long, env = "NOVAPAY_FALLBACK_EN")]
    pub fallback_en: Option<String>,
    /// Fallback reply in Russian.
    #[arg(long, env = "NOVAPAY_FALLBACK_RU")]
    pub fallback_ru: Option<String>,
}

impl RagArgs {
    pub fn config(&self, embedder: &str, sampling: SamplingParams) -> RagConfig {
        let defaults = RagConfig::default();
        let family = ModelFamily::detect(embedder);
        RagConfig {
            top_k: self.top_k.max(1),
            gate: GateConfig {
                min_similarity: self
                    .min_score
                    .or(family.similarity_floor())
                    .unwrap_or(defaults.gate.min_similarity),
                min_weighted_coverage: self
                    .min_coverage
                    .unwrap_or(defaults.gate.min_weighted_coverage),
                meaning: {
                    let m = MeaningConfig::for_family(family);
                    MeaningConfig {
                        min_sentence_similarity: self
                            .min_sentence_similarity
                            .or(m.min_sentence_similarity),
                        ..m
                    }
                },
                judge: self.gate_judge,
                family,
                ..defaults.gate
            },
            answer_mode: self.answer_mode,
            cache: CacheConfig {
                capacity: self.answer_cache_size,
                near_duplicate: self.answer_cache_similarity,
                // Set from the conversation TTL where the assistant is assembled.
                max_age: None,
            },
            fallback_en: self
                .fallback_en
                .clone()
                .unwrap_or(defaults.fallback_en.clone()),
            fallback_ru: self
                .fallback_ru
                .clone()
                .unwrap_or(defaults.fallback_ru.clone()),
            sampling,
            ..defaults
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// Download into this directory (Hub cache layout) instead of the standard Hugging Face cache.
    #[arg(long, env = "NOVAPAY_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Never open a network connection; models must already be on disk.
    #[arg(
        long,
        env = "HF_HUB_OFFLINE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub offline: bool,
    /// The models lock: size and sha256 of every model file (default:
    /// <models-dir>/novapay-models.lock). Written by `download` and `verify-models --pin`, checked
    /// before models are loaded. Keep it where only the account that installs models can write.
    #[arg(long, env = "NOVAPAY_MODELS_LOCK")]
    pub models_lock: Option<PathBuf>,
    #[arg(long, env = "HF_HOME", hide = true)]
    pub hf_home: Option<PathBuf>,
    #[arg(long, env = "HF_ENDPOINT", hide = true)]
    pub hf_endpoint: Option<String>,
    #[arg(long, env = "HF_TOKEN", hide_env_values = true, hide = true)]
    pub hf_token: Option<String>,
}

impl HubArgs {
    /// The models lock's path: `--models-lock`, else in the models directory.
    pub fn lock_path(&self) -> PathBuf {
        self.models_lock
            .clone()
            .unwrap_or_else(|| models::pin::default_lock_path(&self.settings(false).cache_dir))
    }

    pub fn settings(&self, progress: bool) -> HubSettings {
        HubSettings {
            cache_dir: self
                .models_dir
                .clone()
                .unwrap_or_else(|| HubSettings::default_cache_dir(self.hf_home.as_deref())),
            offline: self.offline,
            endpoint: self.hf_endpoint.clone(),
            token: self.hf_token.clone(),
            progress,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LlmArgs {
    /// The LLM: a local .gguf path, owner/repo:file.gguf[@revision] on the Hub, or a recommended
    /// model by its Hub id (e.g. Qwen/Qwen2.5-3B-Instruct, google/gemma-3-4b-it: docs/models.md).
    #[arg(long, env = "NOVAPAY_LLM", default_value = models::DEFAULT_LLM)]
    pub llm: String,
    /// A tokenizer.json to use instead of the vocabulary inside the GGUF.
    #[arg(long, env = "NOVAPAY_LLM_TOKENIZER")]
    pub llm_tokenizer: Option<PathBuf>,
    /// Chat template: auto (the GGUF's own), llama3, chatml or gemma.
    #[arg(long, env = "NOVAPAY_CHAT_TEMPLATE", default_value = "auto")]
    pub chat_template: TemplateChoice,
    /// Context window in tokens (capped by the model's own).
    #[arg(long, env = "NOVAPAY_CTX_SIZE", default_value_t = 4096)]
    pub ctx_size: usize,
    /// auto: requantize weight types candle multiplies slowly (Q4_1, Q5_x) to Q8_0 at load; off.
    #[arg(long, env = "NOVAPAY_REQUANTIZE", default_value = "auto")]
    pub requantize: Requantize,
    /// Prompt matmuls on CPU: auto (the packed int8 kernels where the CPU has AVX-512 VNNI: a token gets
    /// the same logits however its prompt is split; else dense f32 for small models, quantized for
    /// large), dense (faster on small models, not split-invariant), quantized.
    #[arg(long, env = "NOVAPAY_PREFILL_KERNEL", default_value = "auto")]
    pub prefill_kernel: PrefillKernel,
    /// Reuse the KV cache of the longest prefix a prompt shares with the previous one (system prompt,
    /// a follow-up's earlier turns). false closes a timing side channel between callers (SECURITY.md).
    #[arg(long, env = "NOVAPAY_PROMPT_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prompt_cache: bool,
    /// Keep the weights repacked for this CPU's kernels in a file that later starts map instead of
    /// repacking (about the model's size on disk): auto (`<model>.novapay-tiles` next to the model, or
    /// in the models directory's `novapay-tiles` folder when the model's folder is read-only), off, or
    /// a directory to keep it in.
    #[arg(long, env = "NOVAPAY_LLM_TILE_CACHE", default_value = "auto")]
    pub llm_tile_cache: String,
    /// Conversations the model advances together in one step (continuous batching): each weight is
    /// read once per step for all of them. 1 answers one request at a time.
    #[arg(long, env = "NOVAPAY_MAX_BATCH", default_value_t = 4)]
    pub max_batch: usize,
    /// MiB of KV cache all live conversations (and the ones kept for follow-ups) may take; a request
    /// waits for room, and one whose prompt and answer alone do not fit is refused. 0: no limit.
    #[arg(long, env = "NOVAPAY_KV_BUDGET_MB", default_value_t = 1024)]
    pub kv_budget_mb: usize,
}

impl LlmArgs {
    /// The tile cache setting; `fallback_dir` is where `auto` writes when the model's folder is
    /// read-only.
    pub fn tile_cache(&self, fallback_dir: PathBuf) -> TileCacheMode {
        match self.llm_tile_cache.as_str() {
            "auto" => TileCacheMode::Auto {
                fallback_dir: Some(fallback_dir),
            },
            "off" | "none" | "" => TileCacheMode::Off,
            dir => TileCacheMode::Dir(PathBuf::from(dir)),
        }
    }

    pub fn options(&self, gguf: PathBuf) -> LlmOptions {
        LlmOptions {
            tokenizer_json: self.llm_tokenizer.clone(),
            template: self.chat_template.clone(),
            load: LoadOptions {
                requantize: self.requantize,
                max_context: self.ctx_size,
                prefill: self.prefill_kernel,
                ..LoadOptions::default()
            },
            reuse_prefix: self.prompt_cache,
            max_batch: self.max_batch.max(1),
            kv_budget_bytes: (self.kv_budget_mb > 0).then_some(self.kv_budget_mb << 20),
            ..LlmOptions::new(gguf)
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    /// The sentence embedder: a local sentence-transformers folder or owner/repo[@revision].
    #[arg(long, env = "NOVAPAY_EMBEDDER", default_value = models::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Put before search queries (default: "query: " for e5 models, else nothing).
    #[arg(long, env = "NOVAPAY_EMBED_QUERY_PREFIX")]
    pub query_prefix: Option<String>,
    /// Put before indexed passages (default: "passage: " for e5 models, else nothing).
    #[arg(long, env = "NOVAPAY_EMBED_PASSAGE_PREFIX")]
    pub passage_prefix: Option<String>,
}

impl EmbedArgs {
    pub fn options(&self, dir: PathBuf, batch_size: usize) -> EmbedderOptions {
        let family = ModelFamily::detect(&self.embedder);
        EmbedderOptions {
            query_prefix: self
                .query_prefix
                .clone()
                .unwrap_or_else(|| family.query_prefix().to_string()),
            passage_prefix: self
                .passage_prefix
                .clone()
                .unwrap_or_else(|| family.passage_prefix().to_string()),
            batch_size,
            ..EmbedderOptions::new(dir)
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Tokens a generated answer may have at most.
    #[arg(long, env = "NOVAPAY_MAX_NEW_TOKENS", default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, env = "NOVAPAY_TEMPERATURE", default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: sample only from the most likely tokens whose probabilities add up to this.
    #[arg(long, env = "NOVAPAY_TOP_P")]
    pub top_p: Option<f64>,
    /// Sample only from this many most likely tokens. (Not `--top-k`: that is how many excerpts an
    /// answer is given.)
    #[arg(
        id = "sampling_top_k",
        long = "sampling-top-k",
        value_name = "TOP_K",
        env = "NOVAPAY_SAMPLING_TOP_K"
    )]
    pub top_k: Option<usize>,
    /// Seed of the sampler (a fixed seed gives the same answer to the same prompt).
    #[arg(long, env = "NOVAPAY_SEED", default_value_t = 299_792_458)]
    pub seed: u64,
    /// Penalty on tokens the answer already used (1 = none).
    #[arg(long, env = "NOVAPAY_REPEAT_PENALTY", default_value_t = 1.1)]
    pub repeat_penalty: f32,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            repeat_penalty: self.repeat_penalty,
            max_new_tokens: self.max_new_tokens,
            ..SamplingParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    /// `--top-k` (excerpts per answer) and `--sampling-top-k` (the sampler) are two settings: once
    /// they shared one flag and one variable, and the sampler took the excerpt count.
    #[test]
    fn excerpts_and_sampling_have_their_own_top_k() {
        let cli =
            Cli::try_parse_from(["novapay", "serve", "--top-k", "2", "--sampling-top-k", "40"])
                .unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.assistant.rag.top_k, 2);
        assert_eq!(serve.assistant.sampling.params().top_k, Some(40));
        let cli = Cli::try_parse_from(["novapay", "serve", "--top-k", "3"]).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.assistant.sampling.params().top_k, None);
    }
}
