//! `novapay synth-gguf`: writes a Llama-3.2-, Qwen2.5- or Gemma-3-shaped GGUF with random weights and real
//! metadata, for tests and benchmarks at the product's model size without downloading it.

use std::path::PathBuf;

use novapay::engine::arch::Architecture;
use novapay::engine::synth::{write_synthetic_gguf, Quant, Shape, SynthSpec};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// llama (Llama 3.2's metadata and vocabulary), qwen2 (Qwen2.5's, with Q/K/V biases) or gemma3
    /// (Gemma 3's, with its SentencePiece vocabulary and local/global layers).
    #[arg(long, default_value = "llama")]
    pub arch: Architecture,
    /// tiny (tests, ~20-70 MB) or 3b (the family's 3B shapes: Llama 3.2 3B, ~2 GB as q4_k_m; Qwen2.5
    /// 3B, ~1.9 GB); for gemma3, tiny or 4b (Gemma 3 4B, ~2.5 GB as q4_k_m).
    #[arg(long, default_value = "tiny")]
    pub shape: String,
    /// q4_k_m (llama.cpp's Q4_K + Q6_K mix), q4_k, q6_k or q8_0.
    #[arg(long, default_value = "q4_k_m")]
    pub quant: Quant,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let shape = Shape::named(a.arch, &a.shape).map_err(anyhow::Error::msg)?;
    let report = write_synthetic_gguf(
        &SynthSpec {
            arch: a.arch,
            shape,
            quant: a.quant,
            seed: a.seed,
        },
        &a.out,
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
