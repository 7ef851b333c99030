//! Command-line flags. Every flag has an environment fallback (documented in `.env.example`); this is
//! the only place that reads the environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use novapay::device::DeviceChoice;
use novapay::embed::EmbedderOptions;
use novapay::engine::llama::{LoadOptions, PrefillKernel, Requantize};
use novapay::engine::{LlmOptions, SamplingParams, TemplateChoice};
use novapay::index::chunk::ChunkSettings;
use novapay::memory::{self, ConversationStore, MemoryError, MemorySpec};
use novapay::models::{self, HubSettings};
use novapay::rag::cache::CacheConfig;
use novapay::rag::gate::GateConfig;
use novapay::rag::{AnswerMode, RagConfig};

#[derive(Parser, Debug)]
#[command(
    name = "novapay",
    version,
    about = "Offline customer-support assistant for NovaPay"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human or json.
    #[arg(
        long,
        env = "NOVAPAY_LOG_FORMAT",
        default_value = "human",
        global = true
    )]
    pub log_format: String,
    /// Read settings from this file instead of ./.env (only the working directory's .env is read,
    /// never one in a parent directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
}

/// The `--env-file` value from the raw arguments: the file must be loaded before clap reads the
/// environment, so it is looked up before parsing.
pub fn env_file_arg(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            return None;
        }
        if a == "--env-file" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--env-file=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

// Parsed once at start-up: the size of the largest variant (serve's settings) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download the LLM and the embedder from the Hugging Face Hub (run on a connected machine).
    Download {
        #[command(flatten)]
        hub: HubArgs,
        /// GGUF to fetch: owner/repo:file.gguf[@revision].
        #[arg(long, env = "NOVAPAY_LLM", default_value = models::DEFAULT_LLM)]
        llm: String,
        /// Sentence-transformers repository to fetch: owner/repo[@revision].
        #[arg(long, env = "NOVAPAY_EMBEDDER", default_value = models::DEFAULT_EMBEDDER)]
        embedder: String,
        /// Fetch only the LLM.
        #[arg(long, conflicts_with = "embedder_only")]
        llm_only: bool,
        /// Fetch only the embedder.
        #[arg(long)]
        embedder_only: bool,
        /// Download nothing: say whether each model is on disk, can be downloaded, or not (exit
        /// status 0: all on disk or downloadable; 2: the Hub cannot be reached; 1: other errors).
        #[arg(long)]
        check: bool,
    },
    /// Index the knowledge base folder (incremental; only changed files are embedded again).
    Index {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        embed: EmbedArgs,
        #[command(flatten)]
        kb: KbArgs,
        /// Re-embed every file, e.g. after changing the embedder or the chunk size.
        #[arg(long)]
        rebuild: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer a question from the knowledge base, streaming the answer, then its sources.
    Ask {
        #[command(flatten)]
        assistant: AssistantArgs,
        /// Conversation to continue (created when new); without it each question stands alone.
        #[arg(long)]
        session: Option<String>,
        /// Print one JSON object {answer, session_id, sources, fallback} instead of streaming text.
        #[arg(long)]
        json: bool,
        /// Show what retrieval finds (sources, scores, whether the fallback fires) without generating.
        #[arg(long)]
        retrieve_only: bool,
        /// The question.
        question: String,
    },
    /// Serve the HTTP API and the web chat page.
    Serve {
        #[command(flatten)]
        assistant: AssistantArgs,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        bitrix24: Bitrix24Args,
    },
    /// Bitrix24 chat bot set-up.
    Bitrix24 {
        #[command(subcommand)]
        what: Bitrix24Command,
    },
    /// Print the token ids (and pieces) of a text with the LLM's tokenizer.
    Tokenize {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        llm: LlmArgs,
        /// Print JSON: {"ids": [...], "pieces": [...]}.
        #[arg(long)]
        json: bool,
        /// Treat control-token strings like <|im_start|> as plain text (how customer text is encoded).
        #[arg(long)]
        plain: bool,
        text: String,
    },
    /// Logits of every prompt position (top-k, argmax) and a greedy continuation, for checking the
    /// engine against llama.cpp on the same GGUF.
    Logits {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        llm: LlmArgs,
        /// Token ids, comma-separated, instead of a text (e.g. llama.cpp's tokenization).
        #[arg(long, conflicts_with = "text")]
        ids: Option<String>,
        /// Put the model's BOS token first (text prompts only; follows the GGUF's add_bos_token by default).
        #[arg(long)]
        bos: Option<bool>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Also print these token ids' logits at every position (comma-separated).
        #[arg(long)]
        select: Option<String>,
        /// Greedy tokens to generate after the prompt.
        #[arg(long, default_value_t = 0)]
        greedy: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        text: Option<String>,
    },
    /// Write a Llama-3.2-shaped GGUF with random weights and real metadata (deterministic from the seed),
    /// for tests and benchmarks at the product's model size without downloading it.
    SynthGguf {
        /// tiny (tests, ~20-35 MB) or 3b (Llama 3.2 3B's shapes, ~2 GB as q4_k_m).
        #[arg(long, default_value = "tiny")]
        shape: novapay::engine::synth::Shape,
        /// q4_k_m (llama.cpp's Q4_K + Q6_K mix), q4_k, q6_k or q8_0.
        #[arg(long, default_value = "q4_k_m")]
        quant: novapay::engine::synth::Quant,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Retrieval quality on public evaluation sets.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
}

// Parsed once at start-up, like `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prompt and generation tokens/s, time to first token, peak RSS.
    Llm {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        llm: LlmArgs,
        /// Prompt text (the comparison script uses the same file).
        #[arg(long, default_value = "scripts/bench-data/prompt.txt")]
        prompt_file: PathBuf,
        /// Prompt length: the file's tokens repeated/truncated to this many.
        #[arg(long, default_value_t = 500)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        generate_tokens: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also measure the prefix cache: time to first token of a first question, of another
        /// question sharing its first N tokens (the system prompt), and of a follow-up.
        #[arg(long, default_value_t = 0)]
        shared_prefix: usize,
        /// A/B switch: fused Q/K/V and gate/up quantized kernel calls.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        fused_matmul: bool,
        /// A/B switch: run forward passes inside candle's CPU thread pool.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        pool_context: bool,
    },
    /// Load on a running server: N concurrent sessions x M questions; p50/p95 latency, throughput,
    /// errors, and how fast overflow is refused.
    Http {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 8)]
        sessions: usize,
        #[arg(long, default_value_t = 3)]
        questions: usize,
        #[arg(long, env = "NOVAPAY_BENCH_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Answers/s and latency of the whole answer path on a replay of repeated questions, with and
    /// without the answer cache (the first turn of each line of a questions file).
    Answers {
        #[command(flatten)]
        assistant: AssistantArgs,
        #[arg(long, default_value = "eval/questions.jsonl")]
        questions: PathBuf,
        /// Distinct questions taken from the file.
        #[arg(long, default_value_t = 8)]
        distinct: usize,
        /// Times each question is asked.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// Embedding chunks/s at a batch size.
    Embed {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        embed: EmbedArgs,
        /// One chunk per line (the comparison script uses the same file).
        #[arg(long, default_value = "scripts/bench-data/chunks.txt")]
        chunks_file: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// nDCG@10, recall@10 and recall@100 on a BEIR dataset (corpus.jsonl, queries, qrels), as BEIR does.
    Retrieval {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        embed: EmbedArgs,
        /// BEIR folder: corpus.jsonl, queries.jsonl (or queries-test.jsonl), qrels-test.tsv.
        #[arg(long)]
        beir: PathBuf,
        /// dense, bm25 or hybrid; all three when not given.
        #[arg(long)]
        mode: Option<String>,
        /// Evaluate only the first N test queries (quick checks).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Knowledge-base regression questions through the whole answer path (the check a support team
    /// runs after every knowledge-base edit): right source, expected figures, forbidden strings,
    /// refusals, figures the sources do not state.
    Answers {
        #[command(flatten)]
        assistant: AssistantArgs,
        /// JSONL: {id, turns: [...], expect_source?, expect_any?: [...], expect_none?: [...],
        /// unanswerable?: bool, split?}
        #[arg(long)]
        questions: PathBuf,
        /// Only the questions with this `split` label.
        #[arg(long)]
        split: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Refusal of unanswerable and false refusal of answerable questions over the gate's threshold,
    /// on SQuAD 2.0 (each question against its article) and on a questions file (per split).
    Answerability {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        embed: EmbedArgs,
        #[command(flatten)]
        kb: KbArgs,
        #[command(flatten)]
        rag: RagArgs,
        /// squad2-sample folder (squad2-dev-sample300.jsonl, paragraphs.jsonl).
        #[arg(long)]
        squad: Option<PathBuf>,
        /// Questions file in `eval answers` format, against the indexed knowledge base.
        #[arg(long)]
        questions: Option<PathBuf>,
        /// Only the first N SQuAD questions.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// doc2dial: recall@5 of the gold passage for follow-up questions, with and without history.
    Dialogue {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        embed: EmbedArgs,
        /// doc2dial folder: documents.jsonl, questions.jsonl.
        #[arg(long)]
        doc2dial: PathBuf,
        /// Use all 273 documents instead of the 200-document subset.
        #[arg(long)]
        all_documents: bool,
        /// Evaluate only the first N questions.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

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

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[arg(long, env = "NOVAPAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "NOVAPAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Comma-separated API keys; when set, every route but /health, /metrics, /openapi.json and the
    /// chat page needs one (Bearer, or Basic with the key as user name or password).
    #[arg(
        long,
        env = "NOVAPAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Comma-separated administrator keys: valid API keys that may also read any caller's session
    /// (support staff). Other keys see only the sessions they created.
    #[arg(
        long,
        env = "NOVAPAY_ADMIN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,
    /// Serve without API keys on an address other than loopback (a warning is logged). Without it,
    /// `serve` refuses to listen on a public address with no keys.
    #[arg(long, env = "NOVAPAY_ALLOW_ANONYMOUS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// Open connections at most; more clients wait to be accepted.
    #[arg(long, env = "NOVAPAY_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle connection stays open).
    #[arg(long, env = "NOVAPAY_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "NOVAPAY_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Comma-separated allowed CORS origins, or * for any; none by default.
    #[arg(long, env = "NOVAPAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Generation jobs that may wait while one runs; beyond it requests get 429 at once.
    #[arg(long, env = "NOVAPAY_QUEUE_DEPTH", default_value_t = 8)]
    pub queue_depth: usize,
    /// Seconds a generation may take before the request gets 504.
    #[arg(long, env = "NOVAPAY_GENERATION_TIMEOUT_SECS", default_value_t = 120)]
    pub generation_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "NOVAPAY_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "NOVAPAY_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    /// Log question text at info level (card-number-like digit runs are masked).
    #[arg(long, env = "NOVAPAY_LOG_QUERIES", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub log_queries: bool,
    /// Seconds between checks for a newly published index generation (`novapay index` run elsewhere);
    /// the server switches to it without a restart. 0 = never.
    #[arg(long, env = "NOVAPAY_INDEX_POLL_SECS", default_value_t = 5)]
    pub index_poll_secs: u64,
    /// The LLM is a small demo model (scripts/run.sh sets it when the Hub cannot be reached): the
    /// start-up log, /health and the chat page say that answers are not reliable.
    #[arg(long, env = "NOVAPAY_DEMO_MODEL", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub demo_model: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// CPU threads for inference (default: all cores). Ignored on a GPU.
    #[arg(long, env = "NOVAPAY_THREADS")]
    pub threads: Option<usize>,
    /// Where the models run: cpu, cuda (GPU 0), cuda:N, or auto (GPU 0 when this binary has CUDA
    /// support and the machine a GPU, else the CPU).
    #[arg(long, env = "NOVAPAY_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub hub: HubArgs,
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
        let fit = embedder_max_length.saturating_sub(48).max(32);
        let max_tokens = self.chunk_tokens.unwrap_or(200).min(fit);
        ChunkSettings {
            max_tokens,
            overlap_tokens: self.chunk_overlap.min(max_tokens / 2),
        }
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
        let e5 = embedder.to_ascii_lowercase().contains("e5-");
        RagConfig {
            top_k: self.top_k.max(1),
            gate: GateConfig {
                min_similarity: self.min_score.unwrap_or(if e5 {
                    0.80
                } else {
                    defaults.gate.min_similarity
                }),
                min_weighted_coverage: self
                    .min_coverage
                    .unwrap_or(defaults.gate.min_weighted_coverage),
                ..defaults.gate
            },
            answer_mode: self.answer_mode,
            cache: CacheConfig {
                capacity: self.answer_cache_size,
                near_duplicate: self.answer_cache_similarity,
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
    #[arg(long, env = "HF_HOME", hide = true)]
    pub hf_home: Option<PathBuf>,
    #[arg(long, env = "HF_ENDPOINT", hide = true)]
    pub hf_endpoint: Option<String>,
    #[arg(long, env = "HF_TOKEN", hide_env_values = true, hide = true)]
    pub hf_token: Option<String>,
}

impl HubArgs {
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
    /// The LLM: a local .gguf path or owner/repo:file.gguf[@revision] on the Hub.
    #[arg(long, env = "NOVAPAY_LLM", default_value = models::DEFAULT_LLM)]
    pub llm: String,
    /// A tokenizer.json to use instead of the vocabulary inside the GGUF.
    #[arg(long, env = "NOVAPAY_LLM_TOKENIZER")]
    pub llm_tokenizer: Option<PathBuf>,
    /// Chat template: auto (the GGUF's own), llama3 or chatml.
    #[arg(long, env = "NOVAPAY_CHAT_TEMPLATE", default_value = "auto")]
    pub chat_template: TemplateChoice,
    /// Context window in tokens (capped by the model's own).
    #[arg(long, env = "NOVAPAY_CTX_SIZE", default_value_t = 4096)]
    pub ctx_size: usize,
    /// auto: requantize weight types candle multiplies slowly (Q4_1, Q5_x) to Q8_0 at load; off.
    #[arg(long, env = "NOVAPAY_REQUANTIZE", default_value = "auto")]
    pub requantize: Requantize,
    /// Prompt matmuls on CPU: auto (dense f32 for small models, quantized for large), dense, quantized.
    #[arg(long, env = "NOVAPAY_PREFILL_KERNEL", default_value = "auto")]
    pub prefill_kernel: PrefillKernel,
    /// Reuse the KV cache of the longest prefix a prompt shares with the previous one (system prompt,
    /// a follow-up's earlier turns). false closes a timing side channel between callers (SECURITY.md).
    #[arg(long, env = "NOVAPAY_PROMPT_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prompt_cache: bool,
}

impl LlmArgs {
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
        let e5 = self.embedder.to_ascii_lowercase().contains("e5-");
        let default = |p: &str| if e5 { p.to_string() } else { String::new() };
        EmbedderOptions {
            query_prefix: self
                .query_prefix
                .clone()
                .unwrap_or_else(|| default("query: ")),
            passage_prefix: self
                .passage_prefix
                .clone()
                .unwrap_or_else(|| default("passage: ")),
            batch_size,
            ..EmbedderOptions::new(dir)
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    #[arg(long, env = "NOVAPAY_MAX_NEW_TOKENS", default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, env = "NOVAPAY_TEMPERATURE", default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, env = "NOVAPAY_TOP_P")]
    pub top_p: Option<f64>,
    #[arg(long, env = "NOVAPAY_TOP_K")]
    pub top_k: Option<usize>,
    #[arg(long, env = "NOVAPAY_SEED", default_value_t = 299_792_458)]
    pub seed: u64,
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

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,novapay=info"));
    // Colours only on a terminal: a log file or collector gets plain text, with no escape sequences.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The Bitrix24 chat bot in `serve`.
#[derive(Args, Debug, Clone)]
pub struct Bitrix24Args {
    /// off; handler (Bitrix24 posts events to /integrations/bitrix24/events); or poll (novapay pulls
    /// bot API v2 events, for servers without a public URL).
    #[arg(
        long = "bitrix24",
        env = "NOVAPAY_BITRIX24_MODE",
        value_enum,
        default_value = "off"
    )]
    pub mode: Bitrix24Mode,
    /// Handler mode: the application token events must carry (default: the one sent at ONAPPINSTALL,
    /// kept in <state-dir>/bitrix24_application_token).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_APPLICATION_TOKEN",
        hide_env_values = true
    )]
    pub bitrix24_application_token: Option<String>,
    /// Incoming-webhook URL (https://PORTAL/rest/USER/SECRET/): polling mode, and handler mode for a
    /// bot registered with `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_WEBHOOK_URL", hide_env_values = true)]
    pub bitrix24_webhook_url: Option<String>,
    /// Handler mode with an incoming webhook: the CLIENT_ID printed by `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_CLIENT_ID", hide_env_values = true)]
    pub bitrix24_client_id: Option<String>,
    /// Handler mode with a local application: novapay's public event URL
    /// (https://HOST/integrations/bitrix24/events); installing the application then registers the bot.
    #[arg(long, env = "NOVAPAY_BITRIX24_HANDLER_URL")]
    pub bitrix24_handler_url: Option<String>,
    /// Handler mode: the portal's address (https://PORTAL.bitrix24.ru). Replies go only to its REST
    /// endpoint (never to an address an event names), and without an application token an
    /// installation is accepted only from this portal, once.
    #[arg(long, env = "NOVAPAY_BITRIX24_PORTAL")]
    pub bitrix24_portal: Option<String>,
    /// Handler mode: the portal's member_id; when set, an installation must carry it.
    #[arg(long, env = "NOVAPAY_BITRIX24_MEMBER_ID", hide_env_values = true)]
    pub bitrix24_member_id: Option<String>,
    /// Allow plain http:// for the portal and the webhook URL (a test portal only; https otherwise).
    #[arg(long, env = "NOVAPAY_BITRIX24_ALLOW_HTTP", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub bitrix24_allow_http: bool,
    /// Polling mode: the bot id printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_ID")]
    pub bitrix24_bot_id: Option<u64>,
    /// Polling mode: the bot token printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_TOKEN", hide_env_values = true)]
    pub bitrix24_bot_token: Option<String>,
    /// Polling mode: milliseconds to wait once there are no more events (Bitrix24 recommends 5-30 s).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_POLL_INTERVAL_MS",
        default_value_t = 5000
    )]
    pub bitrix24_poll_interval_ms: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitrix24Mode {
    Off,
    Handler,
    Poll,
}

#[derive(Subcommand, Debug)]
pub enum Bitrix24Command {
    /// Register the chat bot on a portal through an incoming webhook (scopes imbot, imopenlines) and
    /// print the settings `serve` needs.
    Register {
        /// Incoming-webhook URL: https://PORTAL/rest/USER/SECRET/
        #[arg(long, env = "NOVAPAY_BITRIX24_WEBHOOK_URL", hide_env_values = true)]
        webhook_url: String,
        /// Public URL of novapay's event handler, e.g. https://novapay.example.com/integrations/bitrix24/events.
        #[arg(long, required_unless_present = "poll", conflicts_with = "poll")]
        handler_url: Option<String>,
        /// Register a bot API v2 bot whose events `serve --bitrix24 poll` pulls (no public URL needed).
        #[arg(long)]
        poll: bool,
        /// Bot code, unique on the portal.
        #[arg(long, default_value = "novapay_assistant")]
        code: String,
        #[arg(long, default_value = "NovaPay")]
        name: String,
        #[arg(long, default_value = "Помощник службы поддержки")]
        work_position: String,
        /// Do not offer the bot to Open Lines (no customer chats, no operator hand-off).
        #[arg(long)]
        no_open_lines: bool,
    },
}
