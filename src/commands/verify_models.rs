//! `novapay verify-models`: the full sha256 of every file the models lock pins (an air-gapped copy,
//! before it serves), and `--pin`: the lock written anew for the models configured here, for the
//! operator who changed them on purpose.

use std::path::PathBuf;

use novapay::models::pin::{self, Depth, FileState, ModelFiles, Repin};
use novapay::models::{self, HubSettings};

use super::options::HubArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// The LLM whose files are pinned: a local .gguf path or owner/repo:file.gguf[@revision] on disk.
    #[arg(long, env = "NOVAPAY_LLM", default_value = models::DEFAULT_LLM)]
    pub llm: String,
    /// A tokenizer.json used instead of the GGUF's vocabulary (pinned too when set).
    #[arg(long, env = "NOVAPAY_LLM_TOKENIZER")]
    pub llm_tokenizer: Option<PathBuf>,
    /// The sentence embedder: a local folder or owner/repo[@revision] on disk.
    #[arg(long, env = "NOVAPAY_EMBEDDER", default_value = models::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Write the lock for the models configured here (their files as they are now), replacing the
    /// lock's content: for models changed on purpose, after checking them. Never downloads.
    #[arg(long)]
    pub pin: bool,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let lock_path = a.hub.lock_path();
    // Never a network connection: verifying and pinning are about what is on disk.
    let settings = HubSettings {
        offline: true,
        ..a.hub.settings(false)
    };
    if a.pin {
        return pin_configured(a, &lock_path, &settings);
    }
    let lock = pin::read_lock(&lock_path)?;
    println!("models lock {}", lock_path.display());
    let mut reports = pin::check_lock(&lock_path, &lock, Depth::Full);
    let (configured, unresolved) = configured(a, &settings);
    reports.extend(pin::not_pinned(&lock_path, &lock, &configured));
    for r in &reports {
        println!("{r}");
    }
    for (what, e) in &unresolved {
        println!("{:<10} {what}: {e}", "MISSING");
    }
    let bad: Vec<_> = reports
        .iter()
        .filter(|r| r.state != FileState::Ok)
        .collect();
    if bad.is_empty() && unresolved.is_empty() {
        println!("all {} pinned files match (full sha256)", reports.len());
        return Ok(());
    }
    let names: Vec<String> = bad
        .iter()
        .map(|r| format!("{} ({})", r.path.display(), r.state.label()))
        .chain(
            unresolved
                .iter()
                .map(|(what, _)| format!("{what} (MISSING)")),
        )
        .collect();
    anyhow::bail!(
        "{} model file(s) do not match the models lock {}: {}. Restore them from the approved copy \
         (the machine that ran `novapay download`: copy its models folder with the lock again); if \
         they were changed on purpose, pin them with `novapay verify-models --pin`",
        names.len(),
        lock_path.display(),
        names.join(", ")
    )
}

fn pin_configured(
    a: &Args,
    lock_path: &std::path::Path,
    settings: &HubSettings,
) -> anyhow::Result<()> {
    let (configured, unresolved) = configured(a, settings);
    if let Some((what, e)) = unresolved.first() {
        anyhow::bail!("cannot pin the {what}: {e}");
    }
    let lock = pin::write_lock(lock_path, &configured, Repin::Replace)?;
    for m in &lock.models {
        for f in &m.files {
            println!(
                "pinned     {} ({}) {} bytes sha256 {}",
                f.path, m.role, f.size, f.sha256
            );
        }
    }
    println!("models lock written: {}", lock_path.display());
    Ok(())
}

/// The configured models' files on disk, and the models that are not on disk (with why).
fn configured(a: &Args, settings: &HubSettings) -> (Vec<ModelFiles>, Vec<(String, String)>) {
    let mut files = Vec::new();
    let mut unresolved = Vec::new();
    match models::resolve_llm(&a.llm, settings) {
        Ok(gguf) => files.push(ModelFiles::llm(&a.llm, &gguf)),
        Err(e) => unresolved.push((format!("LLM `{}`", a.llm), e.to_string())),
    }
    if let Some(tokenizer) = &a.llm_tokenizer {
        files.push(ModelFiles::llm_tokenizer(tokenizer));
    }
    match models::resolve_embedder(&a.embedder, settings) {
        Ok(dir) => files.push(ModelFiles::embedder(&a.embedder, &dir)),
        Err(e) => unresolved.push((format!("embedder `{}`", a.embedder), e.to_string())),
    }
    (files, unresolved)
}
