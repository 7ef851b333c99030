//! `novapay download`: fetches the LLM and the embedder from the Hugging Face Hub (or, with `--check`, says whether each is on disk or reachable).

use super::options::HubArgs;
use anyhow::Context;
use novapay::engine::tile_cache::TileCacheMode;
use novapay::models::pin::{self, ModelFiles, Repin};
use novapay::models::{self, Availability};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// GGUF to fetch: owner/repo:file.gguf[@revision], or a recommended model by its Hub id
    /// (meta-llama/Llama-3.2-3B-Instruct, Qwen/Qwen2.5-3B-Instruct, Qwen/Qwen2.5-7B-Instruct,
    /// google/gemma-3-4b-it: their Q4_K_M GGUF; docs/models.md).
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

/// Exit status of `download --check` when the Hub cannot be reached (scripts/run.sh then uses the
/// demo model).
const EXIT_UNREACHABLE: i32 = 2;

/// Reports where each model would come from, downloading nothing; exits 2 when one needs the Hub and
/// the Hub cannot be reached.
pub fn check(a: &Args) -> anyhow::Result<()> {
    let (llm, embedder) = (a.llm.as_str(), a.embedder.as_str());
    let (want_llm, want_embedder) = (!a.embedder_only, !a.llm_only);
    let settings = a.hub.settings(false);
    let mut found = Vec::new();
    if want_llm {
        found.push(("LLM", llm, models::llm_availability(llm, &settings)?));
    }
    if want_embedder {
        found.push((
            "embedder",
            embedder,
            models::embedder_availability(embedder, &settings)?,
        ));
    }
    let mut unreachable = false;
    let mut refused = Vec::new();
    for (what, spec, availability) in &found {
        let status = match availability {
            Availability::OnDisk(path) => format!("on disk: {}", path.display()),
            Availability::Downloadable { url } => format!("can be downloaded: {url}"),
            Availability::Unreachable { reason } => {
                unreachable = true;
                format!("NOT on disk and the Hub cannot be reached: {reason}")
            }
            Availability::Refused { url, status } => {
                refused.push(format!("{spec}: HTTP {status} for {url}"));
                format!("refused by the Hub: HTTP {status} for {url}")
            }
        };
        println!("{what:<9} {spec}\n          {status}");
    }
    if !refused.is_empty() {
        anyhow::bail!(
            "the Hub refuses {} (wrong name, or a gated model that needs HF_TOKEN)",
            refused.join("; ")
        );
    }
    if unreachable {
        std::process::exit(EXIT_UNREACHABLE);
    }
    Ok(())
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    if a.check {
        return check(a);
    }
    let (llm, embedder) = (a.llm.as_str(), a.embedder.as_str());
    let (want_llm, want_embedder) = (!a.embedder_only, !a.llm_only);
    let settings = a.hub.settings(true);
    if settings.offline {
        anyhow::bail!("`download` needs the network: unset HF_HUB_OFFLINE / drop --offline");
    }
    let mut fetched = Vec::new();
    if want_llm {
        let path = models::resolve_llm(llm, &settings)?;
        println!("LLM       {llm}\n          -> {}", path.display());
        fetched.push(ModelFiles::llm(llm, &path));
        if a.build_tile_cache {
            build_tile_cache(path, &settings.cache_dir)?;
        }
    }
    if want_embedder {
        let path = models::resolve_embedder(embedder, &settings)?;
        println!("embedder  {embedder}\n          -> {}", path.display());
        fetched.push(ModelFiles::embedder(embedder, &path));
    }
    let lock = a.hub.lock_path();
    record_lock(&lock, &fetched)?;
    println!(
        "models are in {}; for an air-gapped server copy that folder (with {}) and set \
         NOVAPAY_MODELS_DIR to it, then run `novapay verify-models` there",
        settings.cache_dir.display(),
        lock.display()
    );
    Ok(())
}

/// Records the size and sha256 of every file fetched in the models lock: the same code as
/// `verify-models --pin`, except that a file the lock already pins with another hash is refused
/// (a download does not bless a changed file) and the other models' entries are kept.
pub fn record_lock(lock: &std::path::Path, fetched: &[ModelFiles]) -> anyhow::Result<()> {
    let written = pin::write_lock(lock, fetched, Repin::KeepPinned)?;
    let files: usize = written.models.iter().map(|m| m.files.len()).sum();
    println!(
        "models lock {} ({files} files pinned by size and sha256)",
        lock.display()
    );
    Ok(())
}

/// Loads the LLM once on the CPU so that its tile cache is written next to it (or in the models
/// folder's `novapay-tiles` when the model's folder is read-only, as `serve` would).
fn build_tile_cache(gguf: std::path::PathBuf, models_dir: &std::path::Path) -> anyhow::Result<()> {
    if !novapay::engine::packed::available() {
        println!(
            "          tile cache: not built, this CPU has no AVX-512 VNNI (a server that has it \
             builds the cache at its first start)"
        );
        return Ok(());
    }
    let mut opts = novapay::engine::LlmOptions::new(gguf);
    opts.device = novapay::device::DeviceChoice::Cpu;
    opts.load.tile_cache = TileCacheMode::Auto {
        fallback_dir: Some(models_dir.join("novapay-tiles")),
    };
    let llm =
        novapay::engine::Llm::load(&opts).context("loading the LLM to build its tile cache")?;
    println!("          tile cache: {}", llm.config().tile_cache);
    Ok(())
}
