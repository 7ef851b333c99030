//! `novapay bench ...`: benchmarks that print JSON.

use std::path::PathBuf;

use clap::Subcommand;

use super::options::{AssistantArgs, EmbedArgs, LlmArgs, RuntimeArgs};

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
