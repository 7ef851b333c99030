//! Flags of `novapay ask`.

use super::options::AssistantArgs;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct AskArgs {
    #[command(flatten)]
    pub assistant: AssistantArgs,
    /// Conversation to continue (created when new); without it each question stands alone.
    #[arg(long)]
    pub session: Option<String>,
    /// Print one JSON object {answer, session_id, sources, fallback} instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Show what retrieval finds (sources, scores, whether the fallback fires) without generating.
    #[arg(long)]
    pub retrieve_only: bool,
    /// The question.
    pub question: String,
}
