//! `novapay synth-gguf`: writes a Llama-3.2-shaped GGUF with random weights and real metadata, for
//! tests and benchmarks at the product's model size without downloading it.

use std::path::PathBuf;

use novapay::engine::synth::{write_synthetic_gguf, Quant, Shape, SynthSpec};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// tiny (tests, ~20-35 MB) or 3b (Llama 3.2 3B's shapes, ~2 GB as q4_k_m).
    #[arg(long, default_value = "tiny")]
    pub shape: Shape,
    /// q4_k_m (llama.cpp's Q4_K + Q6_K mix), q4_k, q6_k or q8_0.
    #[arg(long, default_value = "q4_k_m")]
    pub quant: Quant,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let report = write_synthetic_gguf(
        &SynthSpec {
            shape: a.shape,
            quant: a.quant,
            seed: a.seed,
        },
        &a.out,
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
