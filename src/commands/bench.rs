//! `novapay bench ...`: benchmarks that print JSON (the LLM, the embedder, the whole answer path,
//! and load on a running server).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use novapay::bench::{self, LlmBenchSpec};
use novapay::engine::Llm;

use super::options::{AssistantArgs, EmbedArgs, LlmArgs, RuntimeArgs};

// Parsed once at start-up, like `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Prompt and generation tokens/s, time to first token, peak RSS.
    Llm(LlmBench),
    /// Load on a running server: N concurrent sessions x M questions; p50/p95 latency, throughput,
    /// errors, and how fast overflow is refused.
    Http(HttpBench),
    /// Answers/s and latency of the whole answer path on a replay of repeated questions, with and
    /// without the answer cache (the first turn of each line of a questions file).
    Answers(AnswersBench),
    /// Embedding chunks/s at a batch size.
    Embed(EmbedBench),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Llm(a) => llm(&a),
        Command::Http(a) => {
            let report = bench::bench_http(&a.url, a.sessions, a.questions, a.api_key.as_deref());
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Answers(a) => answers(&a),
        Command::Embed(a) => embed(&a),
    }
}

#[derive(clap::Args, Debug)]
pub struct LlmBench {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    llm: LlmArgs,
    /// Prompt text (the comparison script uses the same file).
    #[arg(long, default_value = "scripts/bench/data/prompt.txt")]
    prompt_file: PathBuf,
    /// Prompt length: the file's tokens repeated/truncated to this many.
    #[arg(long, default_value_t = 500)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 128)]
    generate_tokens: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure the prefix cache: time to first token of a first question, of another
    /// question sharing its first N tokens (the system prompt), and of a follow-up.
    #[arg(long, default_value_t = 0)]
    shared_prefix: usize,
    /// A/B switch: fused Q/K/V and gate/up quantized kernel calls.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fused_matmul: bool,
    /// A/B switch: run forward passes inside candle's CPU thread pool.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pool_context: bool,
    /// N clients at once through the batching worker (distinct prompts, one round, a batch of N): aggregate tok/s, answers/min, p50/p95 time to first and last token.
    #[arg(long, default_value_t = 0)]
    parallel: usize,
}

#[derive(clap::Args, Debug)]
pub struct HttpBench {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    #[arg(long, default_value_t = 3)]
    questions: usize,
    #[arg(long, env = "NOVAPAY_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AnswersBench {
    #[command(flatten)]
    assistant: AssistantArgs,
    #[arg(long, default_value = "eval/questions.jsonl")]
    questions: PathBuf,
    /// Distinct questions taken from the file.
    #[arg(long, default_value_t = 8)]
    distinct: usize,
    /// Times each question is asked.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

#[derive(clap::Args, Debug)]
pub struct EmbedBench {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    embed: EmbedArgs,
    /// One chunk per line (the comparison script uses the same file).
    #[arg(long, default_value = "scripts/bench/data/chunks.txt")]
    chunks_file: PathBuf,
    /// One customer question per line, each embedded alone for the latency figure.
    #[arg(long, default_value = "scripts/bench/data/questions.txt")]
    questions_file: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn llm(a: &LlmBench) -> anyhow::Result<()> {
    let (_, threads) = super::prepare_device(&a.runtime)?;
    let mut opts = super::load_llm_options(&a.runtime, &a.llm)?;
    opts.load.fused_matmul = a.fused_matmul;
    opts.pool_context = a.pool_context;
    let text = bench::read_text_or_default(&a.prompt_file);
    if a.parallel > 0 {
        opts.max_batch = a.parallel;
        let t = Instant::now();
        let handle = novapay::engine::LlmHandle::spawn(opts, a.parallel.max(1))
            .context("loading the LLM")?;
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let spec = LlmBenchSpec {
            prompt_text: &text,
            prompt_tokens: a.prompt_tokens,
            generate_tokens: a.generate_tokens,
            rounds: 1,
            threads,
            load_ms,
            shared_prefix: 0,
        };
        let report = bench::bench_llm_parallel(&handle, &spec, a.parallel)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let t = Instant::now();
    let mut llm = Llm::load(&opts).context("loading the LLM")?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let report = bench::bench_llm(
        &mut llm,
        &LlmBenchSpec {
            prompt_text: &text,
            prompt_tokens: a.prompt_tokens,
            generate_tokens: a.generate_tokens,
            rounds: a.rounds,
            threads,
            load_ms,
            shared_prefix: a.shared_prefix,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn embed(a: &EmbedBench) -> anyhow::Result<()> {
    let (_, threads) = super::prepare_device(&a.runtime)?;
    let t = Instant::now();
    let embedder = super::load_embedder(&a.runtime, &a.embed, a.batch_size)?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let chunks = bench::read_chunks_or_default(&a.chunks_file, 64);
    let questions = bench::read_questions_or_default(&a.questions_file);
    let report = bench::bench_embed(
        &embedder,
        &questions,
        &chunks,
        a.rounds,
        threads,
        a.batch_size,
        load_ms,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The replay twice, without and with the answer cache, on the same loaded models.
fn answers(a: &AnswersBench) -> anyhow::Result<()> {
    let (questions_file, distinct, rounds) = (&a.questions, a.distinct, a.rounds);
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
        let mut args = a.assistant.clone();
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
