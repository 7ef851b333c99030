//! Knowledge-base management without a restart: the documents API on a real server (real embedder,
//! real index generations on disk), and `serve --watch` as a real process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use novapay::assistant::documents::Documents;
use novapay::assistant::{AnswerMode, Assistant, RagConfig};
use novapay::engine::{LlmHandle, LlmOptions, SamplingParams};
use novapay::http::ServerConfig;
use novapay::index::chunk::ChunkSettings;
use novapay::index::{build_index, IndexJob, IndexSettings, KnowledgeBase, Library};
use novapay::memory::SqliteStore;
use serde_json::{json, Value};

use crate::knowledge::knowledge_base::embedder;
use crate::smollm2_path;
use crate::support::{error_code, response, send, spawn_app, AppOptions, TestApp};
use crate::support::{index_small_kb, ServeProcess};

const VOUCHERS: &str = "# NovaPay Gift Vouchers\n\n\
NovaPay gift vouchers can be bought in the NovaPay app for 10, 25 or 50 euros and sent to anyone by \
e-mail. A gift voucher is valid for 12 months from the day it is bought. Redeem a gift voucher under \
Payments > Gift vouchers; the amount is added to your NovaPay balance.\n";
const VOUCHER_QUESTION: &str = "How long is a NovaPay gift voucher valid?";
const QUERY_KEY: &str = "query-key-1";
const ADMIN_KEY: &str = "admin-key-1";
/// The upload limit of the test server.
const MAX_DOCUMENT: usize = 8 * 1024;

struct KbApp {
    app: TestApp,
    data: PathBuf,
    index: PathBuf,
    _work: tempfile::TempDir,
}

/// A server over a two-document knowledge base indexed on disk, in extract mode (answers quote the
/// excerpts: no generation needed to see which document answered).
fn spawn_kb_app() -> KbApp {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let index = work.path().join("index");
    std::fs::create_dir_all(&data).unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    for name in ["fees-and-limits.md", "cards.md"] {
        std::fs::copy(repo.join(name), data.join(name)).unwrap();
    }
    let settings = IndexSettings::new(
        &embedder(),
        "",
        ChunkSettings {
            max_tokens: 200,
            overlap_tokens: 30,
        },
    );
    build_index(
        &IndexJob {
            data_dir: data.clone(),
            index_dir: index.clone(),
            settings: settings.clone(),
            rebuild: false,
            fail_after_files: None,
        },
        &embedder(),
        &|_, _| {},
    )
    .unwrap();
    let kb = KnowledgeBase::open(&index, &settings).unwrap();
    let llm = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 4).unwrap();
    let memory = Arc::new(SqliteStore::open(&work.path().join("m.sqlite")).unwrap());
    let assistant = Arc::new(Assistant::new(
        Arc::new(kb),
        embedder(),
        llm,
        memory,
        RagConfig {
            answer_mode: AnswerMode::Extract,
            sampling: SamplingParams {
                max_new_tokens: 8,
                ..SamplingParams::default()
            },
            ..RagConfig::default()
        },
    ));
    let library = Arc::new(Library::new(
        &data,
        &index,
        settings,
        embedder(),
        MAX_DOCUMENT,
    ));
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            api_keys: vec![QUERY_KEY.into()],
            admin_keys: vec![ADMIN_KEY.into()],
            ..ServerConfig::default()
        },
        documents: Some(Arc::new(Documents::new(library, assistant.clone()))),
        assistant: Some(assistant),
        ..AppOptions::default()
    });
    KbApp {
        app,
        data,
        index,
        _work: work,
    }
}

impl KbApp {
    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    fn ask(&self, question: &str) -> (u16, Value) {
        self.app
            .post_json_as(QUERY_KEY, "/api/v1/query", &json!({ "query": question }))
    }

    fn upload(&self, key: &str, file_name: &str, content: &[u8]) -> (u16, Value) {
        let boundary = "novapay-test-boundary-7f3a";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        send(
            ureq::post(&self.url("/api/v1/documents"))
                .set("Authorization", &format!("Bearer {key}"))
                .set(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                ),
            &body,
        )
    }

    fn admin(&self, method: &str, path: &str, key: &str) -> (u16, Value) {
        self.app.request_as(key, method, path)
    }

    fn generation(&self) -> String {
        std::fs::read_to_string(self.index.join("CURRENT"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Names and contents of the data folder, hidden files included.
    fn data_folder(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.data)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }
}

fn sources(answer: &Value) -> Vec<String> {
    answer["source_documents"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources in {answer}"))
        .iter()
        .map(|d| d["source"].as_str().unwrap().to_string())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_uploaded_document_answers_at_once_and_is_gone_after_delete_while_queries_keep_succeeding() {
    let app = spawn_kb_app();
    let (status, before) = app.ask(VOUCHER_QUESTION);
    assert_eq!(status, 200, "{before}");
    assert!(
        !sources(&before).contains(&"gift-vouchers.md".to_string()),
        "{before}"
    );

    // Questions run without pause through the uploads, swaps and the delete: every one succeeds.
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let background = {
        let (stop, asked, url) = (stop.clone(), asked.clone(), app.url("/api/v1/query"));
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = send(
                    ureq::post(&url)
                        .set("Authorization", &format!("Bearer {QUERY_KEY}"))
                        .set("Content-Type", "application/json"),
                    json!({ "query": "What is the fee for a domestic transfer?" })
                        .to_string()
                        .as_bytes(),
                );
                asked.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
            }
            failures
        })
    };

    // Signals, not timing: the asker has answered before the first swap, and again after the last.
    let wait_for_answers = |more_than: usize| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while asked.load(Ordering::Relaxed) <= more_than {
            assert!(
                Instant::now() < deadline,
                "the background asker got no answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_answers(0);

    let started = Instant::now();
    let (status, uploaded) = app.upload(ADMIN_KEY, "gift-vouchers.md", VOUCHERS.as_bytes());
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(uploaded["document"], "gift-vouchers.md");
    assert!(uploaded["chunks"].as_u64().unwrap() >= 1, "{uploaded}");
    assert_eq!(uploaded["report"]["added"], json!(["gift-vouchers.md"]));
    assert_eq!(
        uploaded["report"]["chunks_embedded"], uploaded["chunks"],
        "only the new document is embedded: {uploaded}"
    );
    let (status, after) = app.ask(VOUCHER_QUESTION);
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{after}");
    assert_eq!(sources(&after)[0], "gift-vouchers.md", "{after}");
    assert!(
        after["response"].as_str().unwrap().contains("12 months"),
        "{after}"
    );
    eprintln!("upload to first answer from it: {} ms", elapsed.as_millis());
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(
        std::fs::read_to_string(app.data.join("gift-vouchers.md")).unwrap(),
        VOUCHERS
    );

    let (status, listed) = app.admin("GET", "/api/v1/documents", ADMIN_KEY);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["generation"], app.generation().as_str());
    let docs = listed["documents"].as_array().unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["cards.md", "fees-and-limits.md", "gift-vouchers.md"]
    );
    let vouchers = &docs[2];
    assert_eq!(vouchers["status"], "indexed", "{vouchers}");
    assert_eq!(vouchers["size"], VOUCHERS.len());
    assert_eq!(vouchers["hash"], sha256_hex(VOUCHERS.as_bytes()));
    assert_eq!(vouchers["chunks"], uploaded["chunks"]);
    assert!(vouchers["indexed_at_unix"].as_u64().unwrap() > 1_700_000_000);

    // Replacing it re-embeds it alone, and the new text answers.
    let edited = VOUCHERS.replace("12 months", "24 months");
    let (status, replaced) = app.upload(ADMIN_KEY, "gift-vouchers.md", edited.as_bytes());
    assert_eq!(status, 201, "{replaced}");
    assert_eq!(replaced["report"]["updated"], json!(["gift-vouchers.md"]));
    let (_, answer) = app.ask(VOUCHER_QUESTION);
    assert!(
        answer["response"].as_str().unwrap().contains("24 months"),
        "{answer}"
    );

    let (status, deleted) = app.admin("DELETE", "/api/v1/documents/gift-vouchers.md", ADMIN_KEY);
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted["change"]["report"]["removed"],
        json!(["gift-vouchers.md"])
    );
    assert!(!app.data.join("gift-vouchers.md").exists());
    let (status, gone) = app.ask(VOUCHER_QUESTION);
    assert_eq!(status, 200, "{gone}");
    assert!(
        !sources(&gone).contains(&"gift-vouchers.md".to_string()),
        "{gone}"
    );
    assert!(
        !gone["response"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("voucher"),
        "{gone}"
    );
    let (status, again) = app.admin("DELETE", "/api/v1/documents/gift-vouchers.md", ADMIN_KEY);
    assert_eq!((status, error_code(&again)), (404, "not_found"), "{again}");

    wait_for_answers(asked.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let failures = background.join().unwrap();
    assert!(
        failures.is_empty(),
        "questions failed during the swaps: {failures:?}"
    );
    assert!(
        asked.load(Ordering::Relaxed) >= 2,
        "the background asker ran"
    );
    // No leftovers: no temporary or moved-aside files.
    assert_eq!(
        app.data_folder()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["cards.md", "fees-and-limits.md"]
    );
}

#[test]
fn bad_uploads_are_refused_with_their_status_and_change_nothing() {
    let app = spawn_kb_app();
    let folder = app.data_folder();
    let generation = app.generation();
    let unchanged = |what: &str| {
        assert_eq!(app.data_folder(), folder, "{what} changed the data folder");
        assert_eq!(
            app.generation(),
            generation,
            "{what} published a generation"
        );
    };

    // Query keys cannot manage documents; no key at all is 401.
    for (method, path) in [
        ("GET", "/api/v1/documents"),
        ("DELETE", "/api/v1/documents/cards.md"),
        ("POST", "/api/v1/reindex"),
    ] {
        let (status, body) = app.admin(method, path, QUERY_KEY);
        assert_eq!(
            (status, error_code(&body)),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    let (status, body) = app.upload(QUERY_KEY, "gift-vouchers.md", VOUCHERS.as_bytes());
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    let (status, _) = response(ureq::get(&app.url("/api/v1/documents")).call());
    assert_eq!(status, 401);
    unchanged("a query key");

    let (status, body) = app.upload(ADMIN_KEY, "setup.exe", b"MZ\x90\x00binary");
    assert_eq!(
        (status, error_code(&body)),
        (415, "unsupported_document_type"),
        "{body}"
    );
    unchanged("an .exe");

    let (status, body) = app.upload(ADMIN_KEY, "empty.md", b"");
    assert_eq!(
        (status, error_code(&body)),
        (422, "unreadable_document"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("empty"),
        "{body}"
    );
    let (status, body) = app.upload(ADMIN_KEY, "blank.txt", b"  \n\n\t ");
    assert_eq!(
        (status, error_code(&body)),
        (422, "unreadable_document"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no text"),
        "{body}"
    );
    let (status, body) = app.upload(ADMIN_KEY, "tariffs.pdf", b"%PDF-1.4\n garbage garbage");
    assert_eq!(
        (status, error_code(&body)),
        (422, "unreadable_document"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("PDF"),
        "{body}"
    );
    let (status, body) = app.upload(ADMIN_KEY, "contract.docx", b"PK\x03\x04 not a zip");
    assert_eq!(
        (status, error_code(&body)),
        (422, "unreadable_document"),
        "{body}"
    );
    unchanged("unreadable documents");

    let big = "NovaPay fees. ".repeat(MAX_DOCUMENT / 10);
    let (status, body) = app.upload(ADMIN_KEY, "big.md", big.as_bytes());
    assert_eq!(
        (status, error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );
    // Far past the limit: cut off while reading, still a JSON 413.
    let huge = vec![b'a'; MAX_DOCUMENT * 20];
    let (status, body) = app.upload(ADMIN_KEY, "huge.txt", &huge);
    assert_eq!(
        (status, error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );
    unchanged("too large documents");

    for name in [
        "../escape.md",
        "..",
        "a\\b.md",
        ".env.md",
        "sub/../../x.md",
        "/etc/x.md",
    ] {
        let (status, body) = app.upload(ADMIN_KEY, name, VOUCHERS.as_bytes());
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_document_name"),
            "{name}: {body}"
        );
    }
    let (status, body) = app.admin(
        "DELETE",
        "/api/v1/documents/..%2Ffees-and-limits.md",
        ADMIN_KEY,
    );
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_document_name"),
        "{body}"
    );
    assert!(!app.data.parent().unwrap().join("escape.md").exists());
    unchanged("path traversal");

    // Not multipart, or no `file` field.
    let (status, body) = send(
        ureq::post(&app.url("/api/v1/documents"))
            .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
            .set("Content-Type", "application/json"),
        b"{}",
    );
    assert_eq!(status, 415, "{body}");
    unchanged("a JSON body");

    // Re-indexing an unchanged folder publishes nothing; a file copied in by hand is picked up.
    let (status, body) = app.admin("POST", "/api/v1/reindex", ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"], false, "{body}");
    unchanged("a re-index of an unchanged folder");
    std::fs::write(app.data.join("gift-vouchers.md"), VOUCHERS).unwrap();
    let (status, body) = app.admin("POST", "/api/v1/reindex", ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"], true, "{body}");
    assert_eq!(
        body["report"]["added"],
        json!(["gift-vouchers.md"]),
        "{body}"
    );
    assert_ne!(app.generation(), generation);
    let (_, answer) = app.ask(VOUCHER_QUESTION);
    assert_eq!(sources(&answer)[0], "gift-vouchers.md", "{answer}");
}

fn wait_for(what: &str, server: &ServeProcess, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not happen within 60 s: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn serve_watch_reindexes_the_data_folder_when_a_file_changes() {
    let work = tempfile::tempdir().unwrap();
    let mut env = index_small_kb(work.path());
    env.push(("NOVAPAY_WATCH".into(), "1".into()));
    env.push(("NOVAPAY_WATCH_DEBOUNCE_MS".into(), "300".into()));
    env.push(("NOVAPAY_INDEX_POLL_SECS".into(), "0".into()));
    env.push(("NOVAPAY_ANSWER_MODE".into(), "extract".into()));
    let data: &Path = &work.path().join("data");
    let mut server = ServeProcess::spawn("watch", &env, &work.path().join("state"));
    server.wait_ready();
    let (_, health) = server.get("/health");
    let first = health["index"]["generation"].as_str().unwrap().to_string();

    std::fs::write(data.join("gift-vouchers.md"), VOUCHERS).unwrap();
    let took = wait_for("re-index after a new file", &server, || {
        server.get("/health").1["index"]["generation"] != first.as_str()
    });
    eprintln!(
        "--watch: new file answered from after {} ms",
        took.as_millis()
    );
    let (status, answer) = server.post("/api/v1/query", &json!({ "query": VOUCHER_QUESTION }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(sources(&answer)[0], "gift-vouchers.md", "{answer}");
    let (_, health) = server.get("/health");
    assert_eq!(health["index"]["files"], 2);

    // A hidden file (an editor's swap file) is not a change.
    let second = health["index"]["generation"].as_str().unwrap().to_string();
    std::fs::write(data.join(".gift-vouchers.md.swp"), "x").unwrap();
    std::fs::remove_file(data.join("gift-vouchers.md")).unwrap();
    wait_for("re-index after a deletion", &server, || {
        server.get("/health").1["index"]["files"] == 1
    });
    assert_ne!(
        server.get("/health").1["index"]["generation"],
        second.as_str()
    );
    assert!(
        server.log().contains("data folder changed"),
        "{}",
        server.log()
    );
}

#[test]
fn a_change_whose_indexing_fails_restores_the_data_folder() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("fees.md"),
        "# Fees\n\nA domestic transfer costs 0.5%.\n",
    )
    .unwrap();
    // The index folder cannot be created (its parent is a file): every build fails.
    std::fs::write(work.path().join("not-a-folder"), "").unwrap();
    let library = Library::new(
        &data,
        &work.path().join("not-a-folder/index"),
        IndexSettings::new(
            &embedder(),
            "",
            ChunkSettings {
                max_tokens: 200,
                overlap_tokens: 30,
            },
        ),
        embedder(),
        MAX_DOCUMENT,
    );
    let listing = |dir: &Path| {
        let mut names: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        names.sort();
        names
    };
    let before = listing(&data);
    let switched = std::cell::Cell::new(false);
    assert!(library
        .put("new.md", VOUCHERS.as_bytes(), |_| switched.set(true))
        .is_err());
    assert!(library
        .put("fees.md", VOUCHERS.as_bytes(), |_| switched.set(true))
        .is_err());
    assert!(library.delete("fees.md", |_| switched.set(true)).is_err());
    assert!(!switched.get(), "nothing was switched to");
    assert_eq!(listing(&data), before, "the data folder is as it was");
}
