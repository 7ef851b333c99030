//! Flags of `novapay mcp`.

use super::options::AssistantArgs;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct McpArgs {
    #[command(flatten)]
    pub assistant: AssistantArgs,
}
