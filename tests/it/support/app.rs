//! The HTTP server in-process on 127.0.0.1:0 with the real small models, and the plain HTTP calls
//! tests make to it (JSON bodies, Bearer keys, SSE responses).

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use novapay::assistant::documents::Documents;
use novapay::assistant::{AnswerMode, Assistant, RagConfig};
use novapay::engine::{LlmHandle, LlmOptions, SamplingParams};
use novapay::http::{self, RunningServer, ServerConfig, Services};
use novapay::memory::SqliteStore;
use serde_json::Value;

use super::models::smollm2_path;
use crate::knowledge::knowledge_base::{embedder, shared_kb};

pub struct TestApp {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    pub base: String,
    services: Option<Services>,
    /// The assistant the server answers with (its memory, for checks the API cannot make).
    pub assistant: Arc<Assistant>,
    state: tempfile::TempDir,
}

pub struct AppOptions {
    pub config: ServerConfig,
    pub queue_depth: usize,
    pub sampling: SamplingParams,
    pub ready: bool,
    /// Answer with this assistant instead of [`test_assistant`]'s (another knowledge base or
    /// configuration); `queue_depth` and `sampling` are then its own.
    pub assistant: Option<Arc<Assistant>>,
    /// Serve the documents API with this library.
    pub documents: Option<Arc<Documents>>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            config: ServerConfig::default(),
            queue_depth: 4,
            sampling: SamplingParams {
                max_new_tokens: 32,
                ..SamplingParams::default()
            },
            ready: true,
            assistant: None,
            documents: None,
        }
    }
}

pub fn spawn_app(opts: AppOptions) -> TestApp {
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        http::start(listener, opts.config).unwrap()
    });
    if let Some(documents) = opts.documents {
        server.set_documents(documents);
    }
    let assistant = opts
        .assistant
        .unwrap_or_else(|| test_assistant(state.path(), opts.queue_depth, opts.sampling));
    let services = Services {
        assistant: assistant.clone(),
        llm_name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        embedder_name: "all-MiniLM-L6-v2".into(),
        // In-process: nothing was checked against a models lock.
        models_pinned: false,
    };
    let base = format!("http://{}", server.addr);
    let mut app = TestApp {
        rt,
        server: Some(server),
        base,
        services: Some(services),
        assistant,
        state,
    };
    if opts.ready {
        app.make_ready();
    }
    app
}

/// The door tests' model thread answers one request at a time: they fill the queue (one running,
/// `queue_depth` waiting) to see 429s and extractive answers. Batching is tested in
/// `engine::scheduler` and `engine::batch`.
fn llm_options() -> LlmOptions {
    LlmOptions {
        max_batch: 1,
        ..LlmOptions::new(smollm2_path())
    }
}

/// The assistant on the real small models, the repository's knowledge base and SQLite memory in
/// `state_dir`.
pub fn test_assistant(
    state_dir: &std::path::Path,
    queue_depth: usize,
    sampling: SamplingParams,
) -> Arc<Assistant> {
    test_assistant_in_mode(state_dir, queue_depth, sampling, AnswerMode::default())
}

/// [`test_assistant`] answering in `mode`.
pub fn test_assistant_in_mode(
    state_dir: &std::path::Path,
    queue_depth: usize,
    sampling: SamplingParams,
    answer_mode: AnswerMode,
) -> Arc<Assistant> {
    let llm = LlmHandle::spawn(llm_options(), queue_depth).unwrap();
    let memory = Arc::new(SqliteStore::open(&state_dir.join("m.sqlite")).unwrap());
    Arc::new(Assistant::new(
        shared_kb(),
        embedder(),
        llm,
        memory,
        RagConfig {
            sampling,
            answer_mode,
            ..RagConfig::default()
        },
    ))
}

/// An assistant on the test models and data/ with `config`.
pub fn test_assistant_configured(
    state_dir: &std::path::Path,
    queue_depth: usize,
    config: RagConfig,
) -> Arc<Assistant> {
    let llm = LlmHandle::spawn(llm_options(), queue_depth).unwrap();
    let memory = Arc::new(SqliteStore::open(&state_dir.join("m.sqlite")).unwrap());
    Arc::new(Assistant::new(shared_kb(), embedder(), llm, memory, config))
}

/// [`test_assistant`] whose gate answers nothing: every question that retrieval finds something
/// for gets the closest sections (`suggested`), however the gate is tuned. The weighted coverage
/// cannot exceed 1 and no meaning rescue is tried, while the gate's "found anything" still holds.
pub fn suggesting_assistant(state_dir: &std::path::Path) -> Arc<Assistant> {
    let llm = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 4).unwrap();
    let memory = Arc::new(SqliteStore::open(&state_dir.join("m.sqlite")).unwrap());
    let mut config = RagConfig {
        sampling: SamplingParams {
            max_new_tokens: 16,
            ..SamplingParams::default()
        },
        ..RagConfig::default()
    };
    config.gate.min_weighted_coverage = 2.0;
    config.gate.meaning.min_sentence_similarity = None;
    // The word rules alone decide (the weighing gate's model could still answer).
    config.gate.weighing = false;
    Arc::new(Assistant::new(shared_kb(), embedder(), llm, memory, config))
}

impl TestApp {
    pub fn make_ready(&mut self) {
        if let (Some(server), Some(services)) = (&self.server, self.services.take()) {
            server.set_ready(services);
        }
    }

    /// Sessions stored in the server's SQLite file.
    pub fn session_count(&self) -> i64 {
        let db = rusqlite::Connection::open(self.state.path().join("m.sqlite")).unwrap();
        db.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        send(
            ureq::post(&self.url(path)).set("Content-Type", "application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// `POST` with an API key as `Authorization: Bearer`.
    pub fn post_json_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        send(
            ureq::post(&self.url(path))
                .set("Authorization", &format!("Bearer {key}"))
                .set("Content-Type", "application/json"),
            body.to_string().as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        response(ureq::get(&self.url(path)).call())
    }

    /// `GET` with an API key as `Authorization: Bearer`.
    pub fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        self.request_as(key, "GET", path)
    }

    /// `DELETE` with an API key as `Authorization: Bearer`.
    pub fn delete_as(&self, key: &str, path: &str) -> (u16, Value) {
        self.request_as(key, "DELETE", path)
    }

    /// A request of any method, without a body, with an API key as `Authorization: Bearer`.
    pub fn request_as(&self, key: &str, method: &str, path: &str) -> (u16, Value) {
        response(
            ureq::request(method, &self.url(path))
                .set("Authorization", &format!("Bearer {key}"))
                .call(),
        )
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.as_str().unwrap_or_default().to_string()
    }

    pub fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

pub fn send(req: ureq::Request, body: &[u8]) -> (u16, Value) {
    response(req.send_bytes(body))
}

pub fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Reads an SSE response into (event, data) pairs; data that is not JSON (OpenAI's `[DONE]`)
/// comes as a JSON string.
pub fn sse_events(resp: ureq::Response) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut event = String::from("message");
    let mut data = String::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if !data.is_empty() {
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                events.push((event.clone(), value));
            }
            event = "message".into();
            data.clear();
        } else if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    events
}
