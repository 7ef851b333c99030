//! Where model files come from: a local path, or a Hugging Face Hub repository fetched with hf-hub into
//! the standard Hub cache (shared with Python tools) or a chosen models directory. In offline mode no
//! network connection is opened: a model that is not on disk is an error that names the exact
//! `novapay download` command to run on a connected machine and where to copy the result.

pub mod catalog;
pub mod pin;

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// Llama 3.2 3B Instruct, Q4_K_M, from a public ungated repository (~2.0 GB).
pub const DEFAULT_LLM: &str =
    "bartowski/Llama-3.2-3B-Instruct-GGUF:Llama-3.2-3B-Instruct-Q4_K_M.gguf";
/// Multilingual (incl. Russian) BERT-architecture sentence embedder, 384 dimensions, e5 prefixes.
pub const DEFAULT_EMBEDDER: &str = "intfloat/multilingual-e5-small";

/// Files of a sentence-transformers folder: required first, then optional ones.
const EMBEDDER_REQUIRED: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];
const EMBEDDER_OPTIONAL: &[&str] = &[
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "modules.json",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model reference `{spec}`: {reason}")]
    InvalidSpec { spec: String, reason: String },
    #[error("model not found at {0}")]
    NotFound(PathBuf),
    #[error("{0}")]
    MissingOffline(Box<OfflineMiss>),
    #[error("cannot download `{spec}`: {reason}")]
    Download { spec: String, reason: String },
}

/// A model that offline mode cannot fetch, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{what} `{spec}` is not in the model cache {cache} and offline mode forbids downloading it.\n\
     On a machine with internet access run:\n    {command}\n\
     then copy that machine's {cache_hint} to {cache} on this one (or pass a local path with {flag})."
)]
pub struct OfflineMiss {
    pub what: &'static str,
    pub spec: String,
    pub cache: PathBuf,
    pub cache_hint: String,
    pub command: String,
    pub flag: &'static str,
}

/// A model setting: a local path or a Hub id `owner/repo[:file][@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub {
        repo: String,
        file: Option<String>,
        revision: String,
    },
}

impl ModelSource {
    /// Local paths win when they exist; `hf:` forces a Hub id; otherwise `owner/name[...]` is a Hub id.
    pub fn parse(spec: &str) -> Result<Self, ModelError> {
        let invalid = |reason: &str| ModelError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(invalid("empty"));
        }
        let forced_hub = spec.strip_prefix("hf:").map(|s| s.trim_start_matches('/'));
        if forced_hub.is_none() && Path::new(spec).exists() {
            return Ok(Self::Local(PathBuf::from(spec)));
        }
        let hub = forced_hub.unwrap_or(spec);
        let looks_local = hub.starts_with(['.', '/', '~'])
            || hub.ends_with(".gguf") && !hub.contains(':')
            || hub.contains('\\');
        if forced_hub.is_none() && looks_local {
            return Ok(Self::Local(PathBuf::from(spec)));
        }
        let (rest, revision) = match hub.rsplit_once('@') {
            Some((rest, rev)) if !rev.is_empty() && !rev.contains('/') => (rest, rev.to_string()),
            _ => (hub, "main".to_string()),
        };
        let (repo, file) = match rest.split_once(':') {
            Some((repo, file)) if !file.is_empty() => (repo, Some(file.to_string())),
            Some(_) => return Err(invalid("nothing after `:`; expected owner/repo:file")),
            None => (rest, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            if forced_hub.is_none() {
                return Ok(Self::Local(PathBuf::from(spec)));
            }
            return Err(invalid("a Hub id is owner/repo[:file][@revision]"));
        }
        Ok(Self::Hub {
            repo: repo.to_string(),
            file,
            revision,
        })
    }
}

/// How to reach the Hub (or not).
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Hub cache directory (`$HF_HOME/hub`, `~/.cache/huggingface/hub`, or `--models-dir`).
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub progress: bool,
}

impl HubSettings {
    /// The standard Hugging Face cache: `$HF_HOME/hub` when set, else `~/.cache/huggingface/hub`.
    pub fn default_cache_dir(hf_home: Option<&Path>) -> PathBuf {
        match hf_home {
            Some(home) => home.join("hub"),
            None => Cache::default().path().clone(),
        }
    }
}

/// The GGUF file a Hub LLM setting names (`owner/repo:file.gguf`); a repository alone is an error.
fn gguf_file_named(spec: &str, file: Option<String>) -> Result<String, ModelError> {
    file.ok_or_else(|| ModelError::InvalidSpec {
        spec: spec.to_string(),
        reason: "name the GGUF file in the repository: owner/repo:file.gguf".into(),
    })
}

/// Resolves the LLM setting to a GGUF file on disk, downloading it unless offline. A recommended
/// model named by its Hub id alone is its Q4_K_M file (`catalog.rs`).
pub fn resolve_llm(spec: &str, hub: &HubSettings) -> Result<PathBuf, ModelError> {
    let spec = &catalog::llm_spec(spec);
    match ModelSource::parse(spec)? {
        ModelSource::Local(path) => existing(path),
        ModelSource::Hub {
            repo,
            file,
            revision,
        } => {
            let file = gguf_file_named(spec, file)?;
            fetch(&repo, &revision, &file, true, hub, spec, "LLM", "--llm")
                .map(|p| p.expect("required files are always returned"))
        }
    }
}

/// Resolves the embedder setting to a sentence-transformers folder on disk.
pub fn resolve_embedder(spec: &str, hub: &HubSettings) -> Result<PathBuf, ModelError> {
    match ModelSource::parse(spec)? {
        ModelSource::Local(path) => existing(path),
        ModelSource::Hub {
            repo,
            file,
            revision,
        } => {
            if file.is_some() {
                return Err(ModelError::InvalidSpec {
                    spec: spec.to_string(),
                    reason: "an embedder is a whole repository: owner/repo[@revision]".into(),
                });
            }
            let mut dir = None;
            for name in EMBEDDER_REQUIRED {
                let path = fetch(
                    &repo,
                    &revision,
                    name,
                    true,
                    hub,
                    spec,
                    "embedder",
                    "--embedder",
                )?
                .expect("required files are always returned");
                dir = path.parent().map(Path::to_path_buf);
            }
            for name in EMBEDDER_OPTIONAL {
                // Absent optional files (no pooling config, say) are fine: defaults apply.
                let _ = fetch(
                    &repo,
                    &revision,
                    name,
                    false,
                    hub,
                    spec,
                    "embedder",
                    "--embedder",
                );
            }
            dir.ok_or_else(|| ModelError::NotFound(PathBuf::from(spec)))
        }
    }
}

/// The Hub's public address, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Whether a model can be had: what `novapay download --check` reports and `scripts/run.sh` decides
/// on (the product's models, or the demo model when the Hub cannot be reached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// On disk already (a local path, or every required file in the Hub cache): no network needed.
    OnDisk(PathBuf),
    /// Not on disk; the Hub answered for it, so `novapay download` can fetch it.
    Downloadable { url: String },
    /// Not on disk and the Hub cannot be reached (no route, refused, timed out, offline mode).
    Unreachable { reason: String },
    /// The Hub answered but refuses it (no such file, gated, bad token): a setting to fix.
    Refused { url: String, status: u16 },
}

/// Checks the LLM setting without downloading: on disk, or a HEAD request to the Hub with short
/// timeouts (a firewall that drops packets must not stall start-up).
pub fn llm_availability(spec: &str, hub: &HubSettings) -> Result<Availability, ModelError> {
    let spec = &catalog::llm_spec(spec);
    match ModelSource::parse(spec)? {
        ModelSource::Local(path) => existing(path).map(Availability::OnDisk),
        ModelSource::Hub {
            repo,
            file,
            revision,
        } => {
            let file = gguf_file_named(spec, file)?;
            Ok(hub_availability(&repo, &revision, &[file.as_str()], hub))
        }
    }
}

/// Checks the embedder setting without downloading (see [`llm_availability`]).
pub fn embedder_availability(spec: &str, hub: &HubSettings) -> Result<Availability, ModelError> {
    match ModelSource::parse(spec)? {
        ModelSource::Local(path) => existing(path).map(Availability::OnDisk),
        ModelSource::Hub { repo, revision, .. } => {
            Ok(hub_availability(&repo, &revision, EMBEDDER_REQUIRED, hub))
        }
    }
}

fn hub_availability(
    repo_id: &str,
    revision: &str,
    files: &[&str],
    hub: &HubSettings,
) -> Availability {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::new(hub.cache_dir.clone()).repo(repo);
    let cached: Vec<PathBuf> = files.iter().filter_map(|f| cache.get(f)).collect();
    if cached.len() == files.len() {
        return Availability::OnDisk(cached[0].clone());
    }
    if hub.offline {
        return Availability::Unreachable {
            reason: "offline mode (HF_HUB_OFFLINE=1)".into(),
        };
    }
    let endpoint = hub.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let url = format!(
        "{}/{repo_id}/resolve/{revision}/{}",
        endpoint.trim_end_matches('/'),
        files[0]
    );
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .redirects(0)
        .build();
    let mut request = agent.head(&url);
    if let Some(token) = &hub.token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(_) => Availability::Downloadable { url },
        Err(ureq::Error::Status(status, _)) if status < 500 => {
            Availability::Refused { url, status }
        }
        Err(ureq::Error::Status(status, _)) => Availability::Unreachable {
            reason: format!("{endpoint} answered HTTP {status}"),
        },
        Err(ureq::Error::Transport(t)) => Availability::Unreachable {
            reason: t.to_string(),
        },
    }
}

fn existing(path: PathBuf) -> Result<PathBuf, ModelError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(ModelError::NotFound(path))
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch(
    repo_id: &str,
    revision: &str,
    file: &str,
    required: bool,
    hub: &HubSettings,
    spec: &str,
    what: &'static str,
    flag: &'static str,
) -> Result<Option<PathBuf>, ModelError> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::new(hub.cache_dir.clone());
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Ok(Some(path));
    }
    if hub.offline {
        if !required {
            return Ok(None);
        }
        return Err(ModelError::MissingOffline(Box::new(OfflineMiss {
            what,
            spec: spec.to_string(),
            cache: hub.cache_dir.clone(),
            cache_hint: format!(
                "models--{}/ folder from its Hugging Face cache (or the --models-dir you gave it)",
                repo_id.replace('/', "--")
            ),
            command: format!(
                "novapay download {}={spec} --models-dir ./novapay-models",
                if what == "LLM" { "--llm" } else { "--embedder" }
            ),
            flag,
        })));
    }
    let mut builder = ApiBuilder::from_cache(cache)
        .with_progress(hub.progress)
        .with_retries(3)
        .with_token(hub.token.clone());
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| ModelError::Download {
        spec: spec.to_string(),
        reason: e.to_string(),
    })?;
    match api.repo(repo).get(file) {
        Ok(path) => Ok(Some(path)),
        Err(_) if !required => Ok(None),
        Err(e) => Err(ModelError::Download {
            spec: format!("{spec} ({file})"),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert_eq!(
            ModelSource::parse("bartowski/Llama-3.2-3B-Instruct-GGUF:x.gguf@abc").unwrap(),
            ModelSource::Hub {
                repo: "bartowski/Llama-3.2-3B-Instruct-GGUF".into(),
                file: Some("x.gguf".into()),
                revision: "abc".into()
            }
        );
        assert_eq!(
            ModelSource::parse("intfloat/multilingual-e5-small").unwrap(),
            ModelSource::Hub {
                repo: "intfloat/multilingual-e5-small".into(),
                file: None,
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("./models/a.gguf").unwrap(),
            ModelSource::Local("./models/a.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("models/a.gguf").unwrap(),
            ModelSource::Local("models/a.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("a/b/c").unwrap(),
            ModelSource::Local("a/b/c".into())
        );
        assert!(ModelSource::parse("hf:a/b/c").is_err());
        assert!(ModelSource::parse("").is_err());
    }

    #[test]
    fn offline_miss_names_the_download_command_and_opens_no_connection() {
        let dir = tempfile::tempdir().unwrap();
        let hub = HubSettings {
            cache_dir: dir.path().to_path_buf(),
            offline: true,
            // An endpoint nobody listens on: reaching for it would fail differently.
            endpoint: Some("http://127.0.0.1:9".into()),
            token: None,
            progress: false,
        };
        let err = resolve_llm("owner/repo:model.gguf", &hub).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::MissingOffline(_)), "{msg}");
        assert!(
            msg.contains("novapay download --llm=owner/repo:model.gguf"),
            "{msg}"
        );
        assert!(msg.contains("models--owner--repo"), "{msg}");
        let err = resolve_embedder("owner/emb", &hub).unwrap_err();
        assert!(err
            .to_string()
            .contains("novapay download --embedder=owner/emb"));
    }

    #[test]
    fn a_recommended_model_by_hub_id_resolves_to_its_gguf_file_offline() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir
            .path()
            .join("models--bartowski--google_gemma-3-4b-it-GGUF");
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("google_gemma-3-4b-it-Q4_K_M.gguf"), b"GGUF").unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        let hub = HubSettings {
            cache_dir: dir.path().to_path_buf(),
            offline: true,
            endpoint: Some("http://127.0.0.1:9".into()),
            token: None,
            progress: false,
        };
        let path = resolve_llm("google/gemma-3-4b-it", &hub).unwrap();
        assert_eq!(path, snap.join("google_gemma-3-4b-it-Q4_K_M.gguf"));
        assert!(matches!(
            llm_availability("google/gemma-3-4b-it", &hub).unwrap(),
            Availability::OnDisk(p) if p == path
        ));
        // Not on disk: the error names the repository and file the id stands for.
        let msg = resolve_llm("Qwen/Qwen2.5-7B-Instruct", &hub)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bartowski/Qwen2.5-7B-Instruct-GGUF:Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
            "{msg}"
        );
    }

    #[test]
    fn offline_hit_in_the_hub_cache_layout_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("models--owner--repo/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("model.gguf"), b"GGUF").unwrap();
        std::fs::create_dir_all(dir.path().join("models--owner--repo/refs")).unwrap();
        std::fs::write(dir.path().join("models--owner--repo/refs/main"), "abc123").unwrap();
        let hub = HubSettings {
            cache_dir: dir.path().to_path_buf(),
            offline: true,
            endpoint: None,
            token: None,
            progress: false,
        };
        let path = resolve_llm("owner/repo:model.gguf", &hub).unwrap();
        assert_eq!(path, snap.join("model.gguf"));
    }
}
