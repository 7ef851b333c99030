//! The model decision of `scripts/run.sh` (scripts/choose-models.sh): the product's models whenever they
//! are on disk or the Hub answers, the demo model only when the Hub cannot be reached; and the
//! `novapay download --check` probe it relies on. No real Hub: a closed local port and a local fake.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::novapay;

fn closed_port() -> u16 {
    // Bound and released: nothing listens there, connections are refused at once.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs scripts/choose-models.sh as run.sh does, with a clean environment plus `env`.
fn choose_models(env: &[(&str, &str)]) -> Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/choose-models.sh"))
        .arg(env!("CARGO_BIN_EXE_novapay"))
        .current_dir(&root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The product's default models as `novapay download` leaves them in a Hub cache (contents do not
/// matter: nothing is loaded).
fn fake_hub_cache(dir: &Path) {
    for (repo, files) in [
        (
            "models--bartowski--Llama-3.2-3B-Instruct-GGUF",
            &["Llama-3.2-3B-Instruct-Q4_K_M.gguf"][..],
        ),
        (
            "models--intfloat--multilingual-e5-small",
            &["config.json", "tokenizer.json", "model.safetensors"][..],
        ),
    ] {
        let snap = dir.join(repo).join("snapshots/0123abc");
        std::fs::create_dir_all(&snap).unwrap();
        for f in files {
            std::fs::write(snap.join(f), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.join(repo).join("refs")).unwrap();
        std::fs::write(dir.join(repo).join("refs/main"), "0123abc").unwrap();
    }
}

#[test]
fn run_script_uses_the_demo_model_only_when_the_hub_cannot_be_reached() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let cache_dir = cache.path().to_str().unwrap();
    let hub = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("NOVAPAY_MODELS_DIR", cache_dir),
    ];

    let started = Instant::now();
    let out = choose_models(&hub);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let exports: Vec<&str> = stdout.lines().collect();
    // The demo pair runs pinned when scripts/fetch-test-models.sh wrote its lock (it does once a
    // novapay binary exists); without the lock it runs unpinned rather than refused.
    let demo_lock =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/test/novapay-models.lock");
    let mut expected = vec![
        "export NOVAPAY_LLM=models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "export NOVAPAY_EMBEDDER=models/test/multilingual-e5-small-q4",
        "export NOVAPAY_DEMO_MODEL=1",
    ];
    if demo_lock.is_file() {
        expected.push("export NOVAPAY_MODELS_LOCK=models/test/novapay-models.lock");
    }
    expected.push("export NOVAPAY_ANSWER_MODE=extract");
    assert_eq!(exports, expected);
    // An embedder chosen by hand is not in the demo pair's lock: no lock is named for it.
    let own = choose_models(&[
        hub[0],
        hub[1],
        ("NOVAPAY_EMBEDDER", "models/test/all-MiniLM-L6-v2"),
    ]);
    let own = String::from_utf8_lossy(&own.stdout);
    assert!(
        own.contains("export NOVAPAY_EMBEDDER=models/test/all-MiniLM-L6-v2")
            && !own.contains("NOVAPAY_MODELS_LOCK"),
        "{own}"
    );
    assert!(stderr.contains("NOVAPAY_ANSWER_MODE=extract"), "{stderr}");
    // An answer mode the operator chose is kept.
    let chosen = choose_models(&[hub[0], hub[1], ("NOVAPAY_ANSWER_MODE", "verified")]);
    assert!(
        String::from_utf8_lossy(&chosen.stdout).contains("export NOVAPAY_ANSWER_MODE=verified"),
        "{chosen:?}"
    );
    let announced: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("DEMO MODEL"))
        .collect();
    assert_eq!(announced.len(), 1, "{stderr}");
    assert!(
        announced[0].contains("answers are not reliable") && announced[0].contains(&endpoint),
        "{stderr}"
    );

    // The same unreachable Hub, but the product's models were copied here: they are used.
    fake_hub_cache(cache.path());
    let out = choose_models(&hub);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "", "{stderr}");
    assert!(!stderr.contains("DEMO"), "{stderr}");
    assert!(
        stderr.contains("Llama-3.2-3B-Instruct-Q4_K_M.gguf"),
        "{stderr}"
    );

    // Models chosen by the operator: nothing is decided or checked.
    let out = choose_models(&[
        ("HF_ENDPOINT", endpoint.as_str()),
        ("NOVAPAY_LLM", "/srv/models/mine.gguf"),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

/// A Hub stand-in that answers the next `n` requests with `status`.
fn fake_hub(status: &'static str, n: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    format!("http://{addr}")
}

fn check(endpoint: &str, cache: &Path) -> Output {
    novapay()
        .args(["download", "--check"])
        .env("HF_ENDPOINT", endpoint)
        .env("NOVAPAY_MODELS_DIR", cache)
        .output()
        .unwrap()
}

#[test]
fn download_check_tells_downloadable_refused_and_unreachable_apart() {
    let cache = tempfile::tempdir().unwrap();

    let out = check(&fake_hub("200 OK", 2), cache.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches("can be downloaded").count(), 2, "{stdout}");
    assert!(
        stdout.contains(
            "/bartowski/Llama-3.2-3B-Instruct-GGUF/resolve/main/Llama-3.2-3B-Instruct-Q4_K_M.gguf"
        ),
        "{stdout}"
    );

    let out = check(&fake_hub("404 Not Found", 2), cache.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");

    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let out = check(&endpoint, cache.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("NOT on disk and the Hub cannot be reached"),
        "{stdout}"
    );
    // Nothing was written to the cache by a check.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}
