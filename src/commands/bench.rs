use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use novapay::bench::{self, LlmBenchSpec};
use novapay::engine::Llm;

use crate::cli::{EmbedArgs, LlmArgs, RuntimeArgs};

pub struct LlmBenchArgs<'a> {
    pub runtime: &'a RuntimeArgs,
    pub args: &'a LlmArgs,
    pub prompt_file: &'a Path,
    pub prompt_tokens: usize,
    pub generate_tokens: usize,
    pub rounds: usize,
    pub shared_prefix: usize,
    pub fused_matmul: bool,
    pub pool_context: bool,
}

pub fn llm(a: LlmBenchArgs) -> anyhow::Result<()> {
    let LlmBenchArgs {
        runtime,
        args,
        prompt_file,
        prompt_tokens,
        generate_tokens,
        rounds,
        shared_prefix,
        fused_matmul,
        pool_context,
    } = a;
    let (_, threads) = super::prepare_device(runtime)?;
    let mut opts = super::load_llm_options(runtime, args)?;
    opts.load.fused_matmul = fused_matmul;
    opts.pool_context = pool_context;
    let t = Instant::now();
    let mut llm = Llm::load(&opts).context("loading the LLM")?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let text = bench::read_text_or_default(prompt_file);
    let report = bench::bench_llm(
        &mut llm,
        &LlmBenchSpec {
            prompt_text: &text,
            prompt_tokens,
            generate_tokens,
            rounds,
            threads,
            load_ms,
            shared_prefix,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn embed(
    runtime: &RuntimeArgs,
    args: &EmbedArgs,
    chunks_file: &Path,
    batch_size: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let (_, threads) = super::prepare_device(runtime)?;
    let t = Instant::now();
    let embedder = super::load_embedder(runtime, args, batch_size)?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let chunks = bench::read_chunks_or_default(chunks_file, 64);
    let report = bench::bench_embed(&embedder, &chunks, rounds, threads, batch_size, load_ms)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
