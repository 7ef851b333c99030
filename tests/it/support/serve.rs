//! A `novapay serve` process for end-to-end tests: started on a free port with the environment a
//! test gives, its stderr collected, killed on drop.

use super::assert_success;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::models::{minilm_dir, smollm2_path};

/// Indexes a one-document knowledge base (the fee schedule) under `work` and returns the settings a
/// `novapay serve` needs for it: the small models, the data folder and the index.
pub fn index_small_kb(work: &Path) -> Vec<(String, OsString)> {
    let data = work.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let repo_data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::copy(
        repo_data.join("fees-and-limits.md"),
        data.join("fees-and-limits.md"),
    )
    .unwrap();
    let env: Vec<(String, OsString)> = vec![
        ("NOVAPAY_LLM".into(), smollm2_path().into()),
        ("NOVAPAY_EMBEDDER".into(), minilm_dir().into()),
        ("NOVAPAY_DATA_DIR".into(), data.into()),
        ("NOVAPAY_INDEX_DIR".into(), work.join("index").into()),
    ];
    run_index(work, &env);
    env
}

/// Runs `novapay index` with `env` (as [`index_small_kb`] returned it); returns its stdout.
pub fn run_index(work: &Path, env: &[(String, OsString)]) -> String {
    let out = novapay()
        .current_dir(work)
        .arg("index")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The binary with a clean environment: no developer .env, Hub cache or thread settings leak in.
pub fn novapay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_novapay"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("NOVAPAY_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1")
        // No lock at the default place (HOME's Hub cache): the shared test models start unpinned, with
        // a warning; the pinning tests (operations/pinned_models.rs) name a lock, which requires it.
        // The LLM's tile cache in the test scratch folder, never next to the shared test models.
        .env(
            "NOVAPAY_LLM_TILE_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("tile-cache"),
        );
    c
}

/// A `novapay serve` child on a port of its own choosing, killed on drop.
pub struct ServeProcess {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
    /// The stderr reader: joined once the process has exited, so that its last lines are in `log`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `novapay serve` on a free port with `env` (and NOVAPAY_STATE_DIR = `state`); returns once
    /// it listens (models load after that: see [`Self::wait_ready`]).
    pub fn spawn(name: &str, env: &[(String, OsString)], state: &Path) -> Self {
        std::fs::create_dir_all(state).unwrap();
        let mut cmd = novapay();
        cmd.current_dir(state)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .env("NOVAPAY_STATE_DIR", state)
            .env("NOVAPAY_MAX_NEW_TOKENS", "8")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "novapay serve {name} did not start listening: {}",
                    log.lock().unwrap()
                )
            });
        Self {
            child,
            base: format!("http://{addr}"),
            log,
            reader: Some(reader),
        }
    }

    /// Waits for the process to end on its own (a start it refused); `None` if it still runs after
    /// `timeout`. Its whole stderr is in [`Self::log`] then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(resp) = ureq::get(&format!("{}/health", self.base))
                .timeout(Duration::from_secs(5))
                .call()
            {
                if resp.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "novapay serve exited ({status}): {}",
                    self.log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "novapay serve not ready after 300 s: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no clean-up code runs, as when the OOM killer or `kill -9` strikes.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let result = ureq::post(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(300))
            .send_json(body.clone());
        decode(result)
    }

    /// `POST` with an API key as `Authorization: Bearer`.
    pub fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        decode(
            ureq::post(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {key}"))
                .timeout(Duration::from_secs(300))
                .send_json(body.clone()),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        decode(
            ureq::get(&format!("{}{path}", self.base))
                .timeout(Duration::from_secs(30))
                .call(),
        )
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.as_str().unwrap_or_default().to_string()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
