//! Loading what the subcommands share: the device and thread pools, the models (offline-aware), and
//! the assistant, assembled in one place for `serve`, `ask`, `mcp`, `eval` and `bench`.

use std::path::PathBuf;

use anyhow::Context;
use novapay::device::DeviceChoice;
use novapay::embed::Embedder;
use novapay::engine::Llm;
use novapay::index::IndexSettings;
use novapay::models::{self, pin};

use super::options::{AssistantArgs, EmbedArgs, KbArgs, LlmArgs, RuntimeArgs};

/// Settles `--device` (a GPU that cannot be used fails here, before any loading) and, on the CPU
/// only, sizes candle's thread pools before anything starts them. Returns the CPU threads (0 on a GPU).
pub(crate) fn prepare_device(runtime: &RuntimeArgs) -> anyhow::Result<(DeviceChoice, usize)> {
    let device = runtime.device.device.resolve()?;
    let threads = if device.is_cpu() {
        novapay::threads::configure_cpu_threads(runtime.device.threads)
    } else {
        0
    };
    Ok((device, threads))
}

/// Sizes the thread pools (before anything loads) and resolves the LLM file, offline-aware.
pub(crate) fn resolve_llm(
    runtime: &RuntimeArgs,
    args: &LlmArgs,
) -> anyhow::Result<(PathBuf, usize)> {
    let (_, threads) = prepare_device(runtime)?;
    let path = models::resolve_llm(&args.llm, &runtime.hub.settings(true))?;
    Ok((path, threads))
}

pub(crate) fn load_llm_options(
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
pub(crate) fn load_llm(runtime: &RuntimeArgs, args: &LlmArgs) -> anyhow::Result<Llm> {
    let opts = load_llm_options(runtime, args)?;
    Llm::load(&opts).with_context(|| format!("loading the LLM from {}", opts.gguf.display()))
}

pub(crate) fn load_embedder(
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
    /// The model files matched the models lock (false: no lock, allowed by the operator).
    pub models_pinned: bool,
}

/// The files the assistant's models load, as the models lock names them.
pub(crate) fn configured_models(a: &AssistantArgs) -> anyhow::Result<Vec<pin::ModelFiles>> {
    let settings = a.runtime.hub.settings(true);
    let gguf = models::resolve_llm(&a.llm.llm, &settings)?;
    let embedder = models::resolve_embedder(&a.embed.embedder, &settings)?;
    let mut files = vec![pin::ModelFiles::llm(&a.llm.llm, &gguf)];
    if let Some(tokenizer) = &a.llm.llm_tokenizer {
        files.push(pin::ModelFiles::llm_tokenizer(tokenizer));
    }
    files.push(pin::ModelFiles::embedder(&a.embed.embedder, &embedder));
    Ok(files)
}

/// Refuses model files that differ from the models lock, before anything is loaded from them; says
/// loudly when there is no lock and the operator allowed that. Returns whether the models are pinned.
pub(crate) fn check_models_pinned(a: &AssistantArgs) -> anyhow::Result<bool> {
    let lock = a.runtime.hub.lock_path();
    let started = std::time::Instant::now();
    let configured = configured_models(a)?;
    let check = pin::check_at_start(
        &lock,
        &configured,
        a.pin.models_check.depth(),
        // The operator who names the lock, or asks for one, gets no start without it.
        !(a.pin.require_pinned_models || a.runtime.hub.models_lock.is_some()),
    )?;
    match check {
        pin::StartCheck::Pinned { lock, files } => {
            tracing::info!(
                lock = %lock.display(),
                files,
                check = ?a.pin.models_check,
                ms = started.elapsed().as_millis() as u64,
                "model files match the models lock"
            );
            Ok(true)
        }
        pin::StartCheck::Unpinned { lock } => {
            tracing::warn!(
                lock = %lock.display(),
                "no models lock: the model files are NOT checked"
            );
            eprintln!(
                "novapay: WARNING: no models lock at {}: the model files are NOT checked; pin them \
                 with `novapay verify-models --pin` (NOVAPAY_REQUIRE_PINNED_MODELS=1 refuses to \
                 start without a lock)",
                lock.display()
            );
            Ok(false)
        }
    }
}

/// The assistant over the indexed knowledge base (memory, models, answer settings): the one place it
/// is assembled, for `serve`, `ask`, `eval` and `bench`. Memory opens first, so that an unreachable
/// Redis fails before minutes of model loading.
pub(crate) fn load_assistant(
    a: &AssistantArgs,
    queue_depth: usize,
    log_questions: bool,
) -> anyhow::Result<Loaded> {
    let memory = a.memory.open(&a.kb)?;
    tracing::info!(memory = %a.memory.memory, "conversation memory open");
    let models_pinned = check_models_pinned(a)?;
    let embedder = load_embedder(&a.runtime, &a.embed, 32)?;
    let settings = index_settings(&embedder, &a.embed, &a.kb);
    let kb = novapay::index::KnowledgeBase::open(&a.kb.index_dir(), &settings)?;
    tracing::info!(generation = %kb.manifest.generation, chunks = kb.len(), "knowledge base open");
    let mut config = a.rag.config(&a.embed.embedder, a.sampling.params());
    config.log_questions = log_questions;
    // A cached answer (keyed by a customer's question) lives no longer than its conversation.
    config.cache.max_age =
        (a.memory.memory_ttl > 0).then(|| std::time::Duration::from_secs(a.memory.memory_ttl));
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
        models_pinned,
    })
}

/// What the index must have been built with, for this embedder and these chunk settings.
pub(crate) fn index_settings(embedder: &Embedder, embed: &EmbedArgs, kb: &KbArgs) -> IndexSettings {
    let passage_prefix = embed.options(PathBuf::new(), 1).passage_prefix;
    IndexSettings::new(
        embedder,
        &passage_prefix,
        kb.chunk_settings(embedder.max_length()),
    )
}
