use std::process::Command;

use crate::smollm2_path;

fn novapay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_novapay"));
    // Tests must not depend on the developer's .env or Hub cache.
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir());
    c
}

#[test]
fn tokenize_prints_ids_and_pieces_as_json() {
    let out = novapay()
        .args(["tokenize", "--json", "--llm"])
        .arg(smollm2_path())
        .arg("Hello, мир!")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids.len(), v["pieces"].as_array().unwrap().len());
    assert_eq!(v["count"].as_u64().unwrap() as usize, ids.len());
    assert!(ids.len() >= 4);
}

#[test]
fn offline_without_the_model_names_the_download_command() {
    let cache = tempfile::tempdir().unwrap();
    let out = novapay()
        .args(["tokenize", "hello"])
        .env("HF_HUB_OFFLINE", "1")
        .env("NOVAPAY_MODELS_DIR", cache.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("novapay download --llm="), "{err}");
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_broken_model_file_is_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = novapay()
        .args(["ask", "--llm"])
        .arg(&bad)
        .arg("What are the fees?")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
