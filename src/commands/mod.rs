//! One function per subcommand; each resolves models, calls the library and prints.

mod ask;
mod bench;
mod download;
mod tokenize;

use std::path::PathBuf;

use anyhow::Context;
use novapay::engine::Llm;
use novapay::models;

use crate::cli::{BenchCommand, Cli, Command, LlmArgs};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Download {
            hub,
            llm,
            embedder,
            llm_only,
            embedder_only,
        } => download::run(&hub, &llm, &embedder, !embedder_only, !llm_only),
        Command::Ask {
            llm,
            sampling,
            context,
            json,
            question,
        } => ask::run(&llm, &sampling, &context, json, &question),
        Command::Tokenize {
            llm,
            json,
            plain,
            text,
        } => tokenize::run(&llm, json, plain, &text),
        Command::Bench { what } => match what {
            BenchCommand::Llm {
                llm,
                prompt_file,
                prompt_tokens,
                generate_tokens,
                rounds,
            } => bench::llm(&llm, &prompt_file, prompt_tokens, generate_tokens, rounds),
            BenchCommand::Embed {
                embed,
                chunks_file,
                batch_size,
                rounds,
            } => bench::embed(&embed, &chunks_file, batch_size, rounds),
        },
    }
}

/// Resolves the LLM file (offline-aware) and sizes the thread pools before anything loads.
fn resolve_llm(args: &LlmArgs) -> anyhow::Result<(PathBuf, usize)> {
    let threads = novapay::threads::configure_cpu_threads(args.threads);
    let path = models::resolve_llm(&args.llm, &args.hub.settings(true))?;
    Ok((path, threads))
}

fn load_llm(args: &LlmArgs) -> anyhow::Result<Llm> {
    let (path, _) = resolve_llm(args)?;
    Llm::load(&args.options(path.clone()))
        .with_context(|| format!("loading the LLM from {}", path.display()))
}
