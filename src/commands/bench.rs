use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use novapay::bench::{self, LlmBenchSpec};
use novapay::engine::Llm;

use crate::cli::{AssistantArgs, EmbedArgs, LlmArgs, RuntimeArgs};

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

/// The replay twice, without and with the answer cache, on the same loaded models.
pub fn answers(
    a: &AssistantArgs,
    questions_file: &Path,
    distinct: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let questions: Vec<String> = novapay::eval::answers::read_questions(questions_file)?
        .into_iter()
        .filter(|q| q.turns.len() == 1)
        .map(|q| q.turns[0].clone())
        .take(distinct)
        .collect();
    anyhow::ensure!(
        !questions.is_empty(),
        "no single-turn questions in {}",
        questions_file.display()
    );
    let mut reports = Vec::new();
    for cache in [false, true] {
        let mut args = a.clone();
        if !cache {
            args.rag.answer_cache_size = 0;
        }
        let assistant = super::load_assistant(&args, 1, false)?.assistant;
        reports.push(bench::bench_answers(&assistant, &questions, rounds)?);
    }
    let speed_up = reports[1].answers_per_s / reports[0].answers_per_s.max(1e-9);
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "without_cache": reports[0],
            "with_cache": reports[1],
            "answers_per_s_speed_up": speed_up,
        }))?
    );
    Ok(())
}
