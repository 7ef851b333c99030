//! The real small models `scripts/fetch-test-models.sh` fetches (SmolLM2-135M-Instruct Q4_1 GGUF,
//! all-MiniLM-L6-v2, Gemma 3 270M Q4_K_M) and the JSON fixtures.

use std::path::PathBuf;

use novapay::engine::{Llm, LlmOptions};

pub fn test_models_dir() -> PathBuf {
    std::env::var_os("NOVAPAY_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/test"))
}

pub fn smollm2_path() -> PathBuf {
    let p = test_models_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

/// Gemma 3 270M (the base model, Q4_K_M), joined from its four PyPI chunk packages.
pub fn gemma3_270m_path() -> PathBuf {
    let p = test_models_dir().join("gemma3-270m/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

pub fn minilm_dir() -> PathBuf {
    let p = test_models_dir().join("all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn load_smollm2() -> Llm {
    Llm::load(&LlmOptions::new(smollm2_path())).expect("SmolLM2 loads")
}
