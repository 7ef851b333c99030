//! The LLMs the README's model table recommends, by Hub id: a setting may name the model
//! (`Qwen/Qwen2.5-3B-Instruct`) or its GGUF repository without a file
//! (`bartowski/Qwen2.5-3B-Instruct-GGUF`), and it is read as the repository's Q4_K_M file. Every other
//! setting is left as it is (`owner/repo:file.gguf[@revision]`, local paths).

/// One recommended LLM: its model id, the ungated GGUF repository and Q4_K_M file it is fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogModel {
    pub model_id: &'static str,
    pub gguf_repo: &'static str,
    pub gguf_file: &'static str,
    /// `general.architecture` of the file.
    pub architecture: &'static str,
}

pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        model_id: "meta-llama/Llama-3.2-3B-Instruct",
        gguf_repo: "bartowski/Llama-3.2-3B-Instruct-GGUF",
        gguf_file: "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        architecture: "llama",
    },
    CatalogModel {
        model_id: "Qwen/Qwen2.5-3B-Instruct",
        gguf_repo: "bartowski/Qwen2.5-3B-Instruct-GGUF",
        gguf_file: "Qwen2.5-3B-Instruct-Q4_K_M.gguf",
        architecture: "qwen2",
    },
    CatalogModel {
        model_id: "Qwen/Qwen2.5-7B-Instruct",
        gguf_repo: "bartowski/Qwen2.5-7B-Instruct-GGUF",
        gguf_file: "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        architecture: "qwen2",
    },
    CatalogModel {
        model_id: "google/gemma-3-4b-it",
        gguf_repo: "bartowski/google_gemma-3-4b-it-GGUF",
        gguf_file: "google_gemma-3-4b-it-Q4_K_M.gguf",
        architecture: "gemma3",
    },
];

/// The catalog entry a setting names by model id or GGUF repository (case-insensitive, an optional
/// `@revision` kept by the caller).
pub fn lookup(repo: &str) -> Option<&'static CatalogModel> {
    CATALOG
        .iter()
        .find(|m| m.model_id.eq_ignore_ascii_case(repo) || m.gguf_repo.eq_ignore_ascii_case(repo))
}

/// `owner/repo:file.gguf[@revision]` for a setting that names a catalog model without a file; any
/// other setting unchanged.
pub fn llm_spec(spec: &str) -> String {
    let trimmed = spec.trim();
    let hub = trimmed.strip_prefix("hf:").unwrap_or(trimmed);
    if hub.contains(':') {
        return spec.to_string();
    }
    let (repo, revision) = match hub.rsplit_once('@') {
        Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev)),
        _ => (hub, None),
    };
    match lookup(repo) {
        Some(m) => match revision {
            Some(rev) => format!("{}:{}@{rev}", m.gguf_repo, m.gguf_file),
            None => format!("{}:{}", m.gguf_repo, m.gguf_file),
        },
        None => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_and_gguf_repositories_name_the_q4_k_m_file() {
        assert_eq!(
            llm_spec("Qwen/Qwen2.5-3B-Instruct"),
            "bartowski/Qwen2.5-3B-Instruct-GGUF:Qwen2.5-3B-Instruct-Q4_K_M.gguf"
        );
        assert_eq!(
            llm_spec("google/gemma-3-4b-it@abc123"),
            "bartowski/google_gemma-3-4b-it-GGUF:google_gemma-3-4b-it-Q4_K_M.gguf@abc123"
        );
        assert_eq!(
            llm_spec("bartowski/qwen2.5-7b-instruct-gguf"),
            "bartowski/Qwen2.5-7B-Instruct-GGUF:Qwen2.5-7B-Instruct-Q4_K_M.gguf"
        );
        assert_eq!(
            llm_spec(crate::models::DEFAULT_LLM),
            crate::models::DEFAULT_LLM
        );
        assert_eq!(
            llm_spec("meta-llama/Llama-3.2-3B-Instruct"),
            crate::models::DEFAULT_LLM,
            "the default LLM by its model id"
        );
        for other in [
            "owner/repo",
            "owner/repo:f.gguf",
            "./m.gguf",
            "Qwen/Qwen2.5-3B-Instruct:x.gguf",
        ] {
            assert_eq!(llm_spec(other), other);
        }
    }
}
