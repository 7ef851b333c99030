//! Flags of `novapay index`.

use super::options::{EmbedArgs, KbArgs, RuntimeArgs};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct IndexArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub embed: EmbedArgs,
    #[command(flatten)]
    pub kb: KbArgs,
    /// Re-embed every file, e.g. after changing the embedder or the chunk size.
    #[arg(long)]
    pub rebuild: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
