//! Command-line flags. Every flag has an environment fallback (documented in `.env.example`); this is
//! the only place that reads the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use novapay::embed::EmbedderOptions;
use novapay::engine::llama::{LoadOptions, Requantize};
use novapay::engine::{LlmOptions, SamplingParams, TemplateChoice};
use novapay::models::{self, HubSettings};

#[derive(Parser, Debug)]
#[command(name = "novapay", version, about = "Offline customer-support assistant for NovaPay")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human or json.
    #[arg(long, env = "NOVAPAY_LOG_FORMAT", default_value = "human", global = true)]
    pub log_format: String,
}

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
    },
    /// Answer a question with the local LLM, optionally from context files.
    Ask {
        #[command(flatten)]
        llm: LlmArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Text files whose contents the answer must come from.
        #[arg(long = "context")]
        context: Vec<PathBuf>,
        /// Print one JSON object instead of streaming text.
        #[arg(long)]
        json: bool,
        /// The question.
        question: String,
    },
    /// Print the token ids (and pieces) of a text with the LLM's tokenizer.
    Tokenize {
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
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prompt and generation tokens/s, time to first token, peak RSS.
    Llm {
        #[command(flatten)]
        llm: LlmArgs,
        /// Prompt text (the comparison script uses the same file).
        #[arg(long, default_value = "scripts/bench-data/prompt.txt")]
        prompt_file: PathBuf,
        #[arg(long, default_value_t = 500)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        generate_tokens: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Embedding chunks/s at a batch size.
    Embed {
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
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "NOVAPAY_THREADS")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl LlmArgs {
    pub fn options(&self, gguf: PathBuf) -> LlmOptions {
        LlmOptions {
            tokenizer_json: self.llm_tokenizer.clone(),
            template: self.chat_template.clone(),
            load: LoadOptions {
                requantize: self.requantize,
                max_context: self.ctx_size,
                ..LoadOptions::default()
            },
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
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "NOVAPAY_THREADS")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl EmbedArgs {
    pub fn options(&self, dir: PathBuf, batch_size: usize) -> EmbedderOptions {
        let e5 = self.embedder.to_ascii_lowercase().contains("e5-");
        let default = |p: &str| if e5 { p.to_string() } else { String::new() };
        EmbedderOptions {
            query_prefix: self.query_prefix.clone().unwrap_or_else(|| default("query: ")),
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
