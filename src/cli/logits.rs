//! Flags of `novapay logits`.

use super::options::{LlmArgs, RuntimeArgs};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Token ids, comma-separated, instead of a text (e.g. llama.cpp's tokenization).
    #[arg(long, conflicts_with = "text")]
    pub ids: Option<String>,
    /// Put the model's BOS token first (text prompts only; follows the GGUF's add_bos_token by default).
    #[arg(long)]
    pub bos: Option<bool>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Also print these token ids' logits at every position (comma-separated).
    #[arg(long)]
    pub select: Option<String>,
    /// Greedy tokens to generate after the prompt.
    #[arg(long, default_value_t = 0)]
    pub greedy: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    pub text: Option<String>,
}
