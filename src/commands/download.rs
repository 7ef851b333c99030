use novapay::models;

use crate::cli::HubArgs;

pub fn run(
    hub: &HubArgs,
    llm: &str,
    embedder: &str,
    want_llm: bool,
    want_embedder: bool,
) -> anyhow::Result<()> {
    let settings = hub.settings(true);
    if settings.offline {
        anyhow::bail!("`download` needs the network: unset HF_HUB_OFFLINE / drop --offline");
    }
    if want_llm {
        let path = models::resolve_llm(llm, &settings)?;
        println!("LLM       {llm}\n          -> {}", path.display());
    }
    if want_embedder {
        let path = models::resolve_embedder(embedder, &settings)?;
        println!("embedder  {embedder}\n          -> {}", path.display());
    }
    println!(
        "models are in {}; for an air-gapped server copy that folder and set NOVAPAY_MODELS_DIR to it",
        settings.cache_dir.display()
    );
    Ok(())
}
