//! Bad model files: a missing file, a file that is not a GGUF, and a truncated download are each
//! refused with a reason before loading.

use std::io::Write;

use novapay::engine::{EngineError, Llm, LlmOptions};

use crate::smollm2_path;

fn load_err(path: std::path::PathBuf) -> EngineError {
    Llm::load(&LlmOptions::new(path))
        .err()
        .expect("loading must fail")
}

#[test]
fn missing_model_file_is_model_not_found() {
    let err = load_err("/nonexistent/model.gguf".into());
    assert!(matches!(err, EngineError::ModelNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}

#[test]
fn non_gguf_and_empty_files_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.gguf", &b""[..]),
        ("text.gguf", &b"this is not a model"[..]),
        ("html.gguf", &b"<html>404 Not Found</html>"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_err(path);
        assert!(err.to_string().contains("not a GGUF file"), "{name}: {err}");
    }
}

#[test]
fn truncated_downloads_are_detected_before_loading() {
    let real = std::fs::read(smollm2_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for len in [8usize, 4096, real.len() / 2, real.len() - 1] {
        let path = dir.path().join(format!("cut-{len}.gguf"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&real[..len])
            .unwrap();
        let err = load_err(path);
        let msg = err.to_string();
        assert!(matches!(err, EngineError::BadModel { .. }), "{len}: {msg}");
        assert!(
            msg.contains("truncated") || msg.contains("corrupt"),
            "{len}: {msg}"
        );
    }
}
