//! Model pinning as an operator meets it, with real processes: `verify-models --pin` writes the
//! models lock, `serve` checks the files it will load against it before loading them (size and the
//! sampled sha256; every byte with NOVAPAY_MODELS_CHECK=full) and refuses, naming the file, a GGUF
//! with one byte changed or cut short; `verify-models` (every byte) reports it and exits non-zero;
//! after a re-pin the server starts. The GGUF is a copy in a temporary folder: the shared test models
//! are never written.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use novapay::models::pin::sample_ranges;
use serde_json::Value;

use crate::smollm2_path;
use crate::support::{index_small_kb, novapay, ServeProcess};

const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A knowledge base indexed with the test models, a copy of the GGUF in a models folder of its own,
/// and the settings that serve that copy against the lock in that folder (no unpinned start).
struct Setup {
    work: tempfile::TempDir,
    env: Vec<(String, OsString)>,
    gguf: PathBuf,
    lock: PathBuf,
}

fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let mut env = index_small_kb(work.path());
    let models = work.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let gguf = models.join(GGUF_NAME);
    std::fs::copy(smollm2_path(), &gguf).unwrap();
    let lock = models.join("novapay-models.lock");
    env.retain(|(k, _)| k != "NOVAPAY_LLM");
    env.extend([
        ("NOVAPAY_LLM".to_string(), gguf.clone().into()),
        ("NOVAPAY_MODELS_LOCK".to_string(), lock.clone().into()),
        // No tile cache of each altered copy.
        ("NOVAPAY_LLM_TILE_CACHE".to_string(), "off".into()),
    ]);
    Setup {
        work,
        env,
        gguf,
        lock,
    }
}

/// `novapay verify-models ARGS`: (success, stdout, stderr).
fn verify_models(env: &[(String, OsString)], args: &[&str]) -> (bool, String, String) {
    let out = novapay()
        .arg("verify-models")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `serve` and returns its `/health` once ready.
fn serve_starts(s: &Setup, env: &[(String, OsString)]) -> (Value, String) {
    let mut serve = ServeProcess::spawn("pinned", env, &s.work.path().join("state"));
    serve.wait_ready();
    let (status, health) = serve.get("/health");
    assert_eq!(status, 200, "{health}");
    (health, serve.log())
}

/// Starts `serve`, which must refuse to load the models and exit non-zero; returns its stderr.
fn serve_refused(s: &Setup, env: &[(String, OsString)]) -> String {
    let mut serve = ServeProcess::spawn("refused", env, &s.work.path().join("state"));
    let status = serve
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("serve did not refuse to start: {}", serve.log()));
    let log = serve.log();
    assert!(!status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("novapay: ready"), "{log}");
    log
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn sampled(size: u64, offset: u64) -> bool {
    sample_ranges(size)
        .iter()
        .any(|(o, l)| offset >= *o && offset < o + l)
}

#[test]
fn a_gguf_changed_by_one_byte_is_refused_at_start_by_name_until_repinned() {
    let s = setup();
    let (ok, out, err) = verify_models(&s.env, &["--pin"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("models lock written"), "{out}");
    let lock: Value = serde_json::from_str(&std::fs::read_to_string(&s.lock).unwrap()).unwrap();
    assert_eq!(lock["format"], "novapay-models-lock/1");
    assert_eq!(lock["models"][0]["role"], "llm");
    assert_eq!(
        lock["models"][0]["files"][0]["path"], GGUF_NAME,
        "a file in the lock's folder is named relative to it (the folder can be copied)"
    );
    let (ok, out, err) = verify_models(&s.env, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("all 6 pinned files match"), "{out}");

    let (health, _) = serve_starts(&s, &s.env);
    assert_eq!(health["models_pinned"], true, "{health}");

    // One byte in the middle of the tensor data (a block the start check samples).
    let size = std::fs::metadata(&s.gguf).unwrap().len();
    assert!(sampled(size, size / 2));
    flip_byte(&s.gguf, size / 2);
    let log = serve_refused(&s, &s.env);
    assert!(log.contains(&s.gguf.display().to_string()), "{log}");
    assert!(
        log.contains("MISMATCH") && log.contains("sampled sha256"),
        "{log}"
    );
    assert!(log.contains("novapay verify-models --pin"), "{log}");
    let (ok, out, err) = verify_models(&s.env, &[]);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains(GGUF_NAME)).unwrap();
    assert!(line.starts_with("MISMATCH"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("OK ")).count(),
        5,
        "{out}"
    );
    assert!(err.contains(&s.gguf.display().to_string()), "{err}");
    assert!(err.contains("verify-models --pin"), "{err}");

    // The operator changed it on purpose: re-pinned, it serves.
    let (ok, out, err) = verify_models(&s.env, &["--pin"]);
    assert!(ok, "{out}{err}");
    let (health, _) = serve_starts(&s, &s.env);
    assert_eq!(health["models_pinned"], true, "{health}");

    // Cut short by one byte: the size check names it.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&s.gguf)
        .unwrap();
    file.set_len(size - 1).unwrap();
    drop(file);
    let log = serve_refused(&s, &s.env);
    assert!(log.contains(&s.gguf.display().to_string()), "{log}");
    assert!(
        log.contains(&format!(
            "size is {} bytes, the lock says {size} bytes",
            size - 1
        )),
        "{log}"
    );
    let (ok, out, _) = verify_models(&s.env, &[]);
    assert!(!ok && out.contains("MISMATCH"), "{out}");
}

/// The start check samples; an edit between its blocks is what `verify-models` and
/// NOVAPAY_MODELS_CHECK=full are for (SECURITY.md says so).
#[test]
fn a_byte_between_the_sampled_blocks_is_caught_by_the_full_check() {
    let s = setup();
    let (ok, out, err) = verify_models(&s.env, &["--pin"]);
    assert!(ok, "{out}{err}");
    let size = std::fs::metadata(&s.gguf).unwrap().len();
    let offset = (size / 2..size).find(|o| !sampled(size, *o)).unwrap();
    flip_byte(&s.gguf, offset);

    let (ok, out, err) = verify_models(&s.env, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("MISMATCH") && l.contains(GGUF_NAME) && l.contains("sha256")),
        "{out}"
    );
    assert!(err.contains(GGUF_NAME), "{err}");

    let mut full = s.env.clone();
    full.push(("NOVAPAY_MODELS_CHECK".into(), "full".into()));
    let log = serve_refused(&s, &full);
    assert!(
        log.contains(&s.gguf.display().to_string()) && log.contains("MISMATCH"),
        "{log}"
    );

    // The documented limit of the sampled check: this edit is not seen at start.
    let (health, _) = serve_starts(&s, &s.env);
    assert_eq!(health["models_pinned"], true, "{health}");
}

#[test]
fn without_a_lock_serve_refuses_when_one_is_named_or_required_and_a_malformed_lock_is_named() {
    let s = setup();
    // The lock is named (NOVAPAY_MODELS_LOCK) but absent: refused.
    let log = serve_refused(&s, &s.env);
    assert!(
        log.contains(&format!("no models lock at {}", s.lock.display())),
        "{log}"
    );
    assert!(log.contains("novapay verify-models --pin"), "{log}");
    let (ok, _, err) = verify_models(&s.env, &[]);
    assert!(!ok && err.contains(&s.lock.display().to_string()), "{err}");

    // No lock named, none at the default place (the models directory): starts, unpinned and saying so.
    let models_dir = s.work.path().join("hub");
    std::fs::create_dir_all(&models_dir).unwrap();
    let mut unnamed: Vec<(String, OsString)> = s
        .env
        .iter()
        .filter(|(k, _)| k != "NOVAPAY_MODELS_LOCK")
        .cloned()
        .collect();
    unnamed.push(("NOVAPAY_MODELS_DIR".into(), models_dir.clone().into()));
    let (health, log) = serve_starts(&s, &unnamed);
    assert_eq!(health["models_pinned"], false, "{health}");
    assert!(log.contains("WARNING: no models lock"), "{log}");

    // ... unless the operator requires a lock.
    let mut required = unnamed.clone();
    required.push(("NOVAPAY_REQUIRE_PINNED_MODELS".into(), "1".into()));
    let default_lock = models_dir.join("novapay-models.lock");
    let log = serve_refused(&s, &required);
    assert!(
        log.contains(&format!("no models lock at {}", default_lock.display())),
        "{log}"
    );

    // A damaged lock is an error naming it, even where an unpinned start is allowed.
    std::fs::write(
        &default_lock,
        "{\"format\": \"novapay-models-lock/1\", \"models\": [",
    )
    .unwrap();
    let log = serve_refused(&s, &unnamed);
    assert!(
        log.contains(&format!(
            "the models lock {} is not a valid novapay models lock",
            default_lock.display()
        )),
        "{log}"
    );
    // And so is a damaged named lock.
    std::fs::write(
        &s.lock,
        "{\"format\": \"novapay-models-lock/1\", \"models\": [",
    )
    .unwrap();
    let log = serve_refused(&s, &s.env);
    assert!(
        log.contains(&format!(
            "the models lock {} is not a valid novapay models lock",
            s.lock.display()
        )),
        "{log}"
    );
    let (ok, _, err) = verify_models(&s.env, &[]);
    assert!(
        !ok && err.contains("is not a valid novapay models lock"),
        "{err}"
    );
    // Re-pinning replaces it.
    let (ok, out, err) = verify_models(&s.env, &["--pin"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = verify_models(&s.env, &[]);
    assert!(ok, "{out}{err}");
}
