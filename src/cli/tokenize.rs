//! Flags of `novapay tokenize`.

use super::options::{LlmArgs, RuntimeArgs};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Print JSON: {"ids": [...], "pieces": [...]}.
    #[arg(long)]
    pub json: bool,
    /// Treat control-token strings like <|im_start|> as plain text (how customer text is encoded).
    #[arg(long)]
    pub plain: bool,
    pub text: String,
}
