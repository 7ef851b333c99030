//! Flags of `novapay synth-gguf`.

use std::path::PathBuf;

use clap::Args;
#[derive(Args, Debug, Clone)]
pub struct SynthGgufArgs {
    /// tiny (tests, ~20-35 MB) or 3b (Llama 3.2 3B's shapes, ~2 GB as q4_k_m).
    #[arg(long, default_value = "tiny")]
    pub shape: novapay::engine::synth::Shape,
    /// q4_k_m (llama.cpp's Q4_K + Q6_K mix), q4_k, q6_k or q8_0.
    #[arg(long, default_value = "q4_k_m")]
    pub quant: novapay::engine::synth::Quant,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}
