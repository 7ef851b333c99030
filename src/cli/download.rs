//! Flags of `novapay download`.

use clap::Args;
use novapay::models;

use super::options::HubArgs;

#[derive(Args, Debug, Clone)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// GGUF to fetch: owner/repo:file.gguf[@revision].
    #[arg(long, env = "NOVAPAY_LLM", default_value = models::DEFAULT_LLM)]
    pub llm: String,
    /// Sentence-transformers repository to fetch: owner/repo[@revision].
    #[arg(long, env = "NOVAPAY_EMBEDDER", default_value = models::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Fetch only the LLM.
    #[arg(long, conflicts_with = "embedder_only")]
    pub llm_only: bool,
    /// Fetch only the embedder.
    #[arg(long)]
    pub embedder_only: bool,
    /// Download nothing: say whether each model is on disk, can be downloaded, or not (exit
    /// status 0: all on disk or downloadable; 2: the Hub cannot be reached; 1: other errors).
    #[arg(long)]
    pub check: bool,
    /// After downloading the LLM, load it once to write its tile cache next to it (the weights
    /// repacked for AVX-512 VNNI kernels, about the model's size), so a server started on a copy of
    /// the models folder maps it instead of repacking at its first start. Needs such a CPU here.
    #[arg(long, conflicts_with = "embedder_only")]
    pub build_tile_cache: bool,
}
