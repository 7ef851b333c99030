//! One function per subcommand; each resolves models, calls the library and prints.

mod ask;
mod bench;
mod bitrix24;
mod download;
mod eval;
mod index;
mod logits;
mod mcp;
mod report;
mod serve;
mod tokenize;

use std::path::PathBuf;

use anyhow::Context;
use novapay::device::DeviceChoice;
use novapay::embed::Embedder;
use novapay::engine::Llm;
use novapay::index::IndexSettings;
use novapay::models;

use crate::cli::{
    BenchCommand, Cli, Command, EmbedArgs, EvalCommand, KbArgs, LlmArgs, RuntimeArgs,
};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Download(a) => download::run(&a),
        Command::Index(a) => index::run(&a),
        Command::Ask(a) => ask::run(ask::AskArgs {
            a: &a.assistant,
            session: a.session.as_deref(),
            json: a.json,
            retrieve_only: a.retrieve_only,
            question: &a.question,
        }),
        Command::Serve(a) => serve::run(&a.assistant, &a.server, &a.bitrix24),
        Command::Mcp(a) => mcp::run(&a),
        Command::Report(a) => report::run(&a),
        Command::Bitrix24 { what } => bitrix24::run(what),
        Command::Tokenize(a) => tokenize::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::SynthGguf(a) => {
            let report = novapay::engine::synth::write_synthetic_gguf(
                &novapay::engine::synth::SynthSpec {
                    shape: a.shape,
                    quant: a.quant,
                    seed: a.seed,
                },
                &a.out,
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::ConvertE5 { bin, out } => {
            let report = novapay::embed::convert_e5s1(&bin, &out)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench { what } => match what {
            BenchCommand::Llm {
                runtime,
                llm,
                prompt_file,
                prompt_tokens,
                generate_tokens,
                rounds,
                shared_prefix,
                fused_matmul,
                pool_context,
            } => bench::llm(bench::LlmBenchArgs {
                runtime: &runtime,
                args: &llm,
                prompt_file: &prompt_file,
                prompt_tokens,
                generate_tokens,
                rounds,
                shared_prefix,
                fused_matmul,
                pool_context,
            }),
            BenchCommand::Http {
                url,
                sessions,
                questions,
                api_key,
            } => {
                let report =
                    novapay::bench::bench_http(&url, sessions, questions, api_key.as_deref());
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            BenchCommand::Answers {
                assistant,
                questions,
                distinct,
                rounds,
            } => bench::answers(&assistant, &questions, distinct, rounds),
            BenchCommand::Embed {
                runtime,
                embed,
                chunks_file,
                batch_size,
                rounds,
            } => bench::embed(&runtime, &embed, &chunks_file, batch_size, rounds),
        },
        Command::Eval { what } => match what {
            EvalCommand::Retrieval {
                runtime,
                embed,
                beir,
                mode,
                limit,
                json,
            } => eval::retrieval(&runtime, &embed, &beir, mode.as_deref(), limit, json),
            EvalCommand::Answers {
                assistant,
                questions,
                split,
                json,
            } => eval::answers(&assistant, &questions, split.as_deref(), json),
            EvalCommand::Answerability {
                runtime,
                embed,
                kb,
                rag,
                squad: _,
                questions: _,
                limit: _,
                fit: Some(out),
                doc2dial,
                per_domain,
                json,
            } => eval::fit_gate(
                &runtime, &embed, &kb, &rag, &out, &doc2dial, per_domain, json,
            ),
            EvalCommand::Answerability {
                runtime,
                embed,
                kb,
                rag,
                squad,
                questions,
                limit,
                fit: None,
                json,
                ..
            } => eval::answerability(eval::AnswerabilityArgs {
                runtime: &runtime,
                embed: &embed,
                kb: &kb,
                rag: &rag,
                squad: squad.as_deref(),
                questions: questions.as_deref(),
                limit,
                json,
            }),
            EvalCommand::Dialogue {
                runtime,
                embed,
                doc2dial,
                all_documents,
                limit,
                json,
            } => eval::dialogue(&runtime, &embed, &doc2dial, all_documents, limit, json),
        },
    }
}

/// Settles `--device` (a GPU that cannot be used fails here, before any loading) and, on the CPU
/// only, sizes candle's thread pools before anything starts them. Returns the CPU threads (0 on a GPU).
fn prepare_device(runtime: &RuntimeArgs) -> anyhow::Result<(DeviceChoice, usize)> {
    let device = runtime.device.resolve()?;
    let threads = if device.is_cpu() {
        novapay::threads::configure_cpu_threads(runtime.threads)
    } else {
        0
    };
    Ok((device, threads))
}

/// Sizes the thread pools (before anything loads) and resolves the LLM file, offline-aware.
fn resolve_llm(runtime: &RuntimeArgs, args: &LlmArgs) -> anyhow::Result<(PathBuf, usize)> {
    let (_, threads) = prepare_device(runtime)?;
    let path = models::resolve_llm(&args.llm, &runtime.hub.settings(true))?;
    Ok((path, threads))
}

fn load_llm_options(
    runtime: &RuntimeArgs,
    args: &LlmArgs,
) -> anyhow::Result<novapay::engine::LlmOptions> {
    let (device, _) = prepare_device(runtime)?;
    let (path, _) = resolve_llm(runtime, args)?;
    let mut opts = args.options(path);
    opts.load.tile_cache =
        args.tile_cache(runtime.hub.settings(false).cache_dir.join("novapay-tiles"));
    Ok(novapay::engine::LlmOptions { device, ..opts })
}

#[allow(dead_code)]
fn load_llm(runtime: &RuntimeArgs, args: &LlmArgs) -> anyhow::Result<Llm> {
    let opts = load_llm_options(runtime, args)?;
    Llm::load(&opts).with_context(|| format!("loading the LLM from {}", opts.gguf.display()))
}

fn load_embedder(
    runtime: &RuntimeArgs,
    args: &EmbedArgs,
    batch_size: usize,
) -> anyhow::Result<Embedder> {
    let (device, _) = prepare_device(runtime)?;
    let dir = models::resolve_embedder(&args.embedder, &runtime.hub.settings(true))?;
    let opts = novapay::embed::EmbedderOptions {
        device,
        ..args.options(dir.clone(), batch_size)
    };
    Embedder::load(opts).with_context(|| format!("loading the embedder from {}", dir.display()))
}

/// The assistant as `load_assistant` assembles it, with what `serve` reports and watches.
pub(crate) struct Loaded {
    pub assistant: std::sync::Arc<novapay::assistant::Assistant>,
    pub index_settings: IndexSettings,
    pub llm_name: String,
    pub embedder_name: String,
    /// The assistant's embedder, shared with the knowledge-base management of `serve`.
    pub embedder: std::sync::Arc<Embedder>,
}

/// The assistant over the indexed knowledge base (memory, models, answer settings): the one place it
/// is assembled, for `serve`, `ask`, `eval` and `bench`. Memory opens first, so that an unreachable
/// Redis fails before minutes of model loading.
fn load_assistant(
    a: &crate::cli::AssistantArgs,
    queue_depth: usize,
    log_questions: bool,
) -> anyhow::Result<Loaded> {
    let memory = a.memory.open(&a.kb)?;
    tracing::info!(memory = %a.memory.memory, "conversation memory open");
    let embedder = load_embedder(&a.runtime, &a.embed, 32)?;
    let settings = index_settings(&embedder, &a.embed, &a.kb);
    let kb = novapay::index::KnowledgeBase::open(&a.kb.index_dir(), &settings)?;
    tracing::info!(generation = %kb.manifest.generation, chunks = kb.len(), "knowledge base open");
    let mut config = a.rag.config(&a.embed.embedder, a.sampling.params());
    config.log_questions = log_questions;
    let opts = load_llm_options(&a.runtime, &a.llm)?;
    let llm = novapay::engine::LlmHandle::spawn(opts, queue_depth).context("loading the LLM")?;
    let llm_name = llm.info().name.clone();
    let embedder_name = embedder.name.clone();
    let embedder = std::sync::Arc::new(embedder);
    Ok(Loaded {
        embedder: embedder.clone(),
        assistant: std::sync::Arc::new(novapay::assistant::Assistant::new(
            std::sync::Arc::new(kb),
            embedder,
            llm,
            memory,
            config,
        )),
        index_settings: settings,
        llm_name,
        embedder_name,
    })
}

/// What the index must have been built with, for this embedder and these chunk settings.
fn index_settings(embedder: &Embedder, embed: &EmbedArgs, kb: &KbArgs) -> IndexSettings {
    let passage_prefix = embed.options(PathBuf::new(), 1).passage_prefix;
    IndexSettings::new(
        embedder,
        &passage_prefix,
        kb.chunk_settings(embedder.max_length()),
    )
}
