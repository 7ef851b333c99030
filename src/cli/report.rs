//! Flags of `novapay report`.

use super::options::{KbArgs, MemoryArgs};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub kb: KbArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Days back the report covers.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Print the report as JSON (the same document as GET /api/v1/stats).
    #[arg(long)]
    pub json: bool,
}
