//! The MCP server through the official MCP Python SDK client (`mcp` on PyPI, installed by
//! scripts/dev/python-test-env.sh from tests/requirements.txt): over stdio (`novapay mcp` spawned by the
//! client) and over streamable HTTP (`/mcp` on a real `novapay serve`), on the small real models.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{index_small_kb, mcp_client as client, ServeProcess};

const QUESTION: &str = "How much does a domestic transfer cost?";
const DOCUMENT: &str = "fees-and-limits.md";
const CARD: &str = "4111 1111 1111 1111";

/// The checks both transports share: the tools, a search, an answer, the documents.
fn assert_tools_answer_and_documents(r: &Value) {
    assert!(r.get("error").is_none(), "{r:#}");
    let tools = r["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["ask", "search_knowledge_base"], "{r:#}");
    assert_eq!(
        tools["ask"]["input_schema"]["required"],
        json!(["question"]),
        "{r:#}"
    );

    let search = &r["search"];
    assert_eq!(search["is_error"], false, "{search:#}");
    let excerpts = search["structured"]["excerpts"].as_array().unwrap();
    assert_eq!(excerpts.len(), 2, "top_k is honoured: {search:#}");
    assert!(
        excerpts.iter().all(|e| e["source"] == DOCUMENT),
        "{search:#}"
    );
    assert!(
        excerpts.iter().any(|e| e["heading"]
            .as_str()
            .unwrap()
            .contains("Domestic transfer fee")),
        "the domestic fee section is found: {search:#}"
    );
    assert!(excerpts[0]["score"].as_f64().unwrap() > 0.3, "{search:#}");
    // Whole excerpts, not previews: the domestic fee section with its worked example.
    assert!(
        excerpts
            .iter()
            .all(|e| !e["text"].as_str().unwrap().ends_with('…')),
        "{search:#}"
    );
    assert!(
        excerpts.iter().any(|e| e["text"]
            .as_str()
            .unwrap()
            .contains("Example: sending $200 domestically costs $1.00 (0.5% of $200).")),
        "{search:#}"
    );
    assert!(
        excerpts
            .iter()
            .any(|e| e["text"].as_str().unwrap().chars().count() > 240),
        "longer than the answers' 240-character snippets: {search:#}"
    );
    assert_eq!(search["structured"]["answerable"], true, "{search:#}");
    assert!(search["text"].as_str().unwrap().contains(DOCUMENT));

    let invalid = &r["search_invalid"];
    assert_eq!(invalid["is_error"], true, "{invalid:#}");
    assert!(
        invalid["text"].as_str().unwrap().contains("top_k"),
        "{invalid:#}"
    );

    let ask = &r["ask"];
    assert_eq!(ask["is_error"], false, "{ask:#}");
    let answer = &ask["structured"];
    assert!(
        !answer["answer"].as_str().unwrap().trim().is_empty(),
        "{ask:#}"
    );
    assert_eq!(answer["fallback"], false, "{ask:#}");
    assert_eq!(answer["sources"][0]["source"], DOCUMENT, "{ask:#}");
    assert!(
        !answer["session_id"].as_str().unwrap().is_empty(),
        "{ask:#}"
    );
    let text = ask["text"].as_str().unwrap();
    assert!(
        text.contains("Sources:") && text.contains(&format!("[1] {DOCUMENT}")),
        "{text}"
    );

    let uri = format!("novapay://kb/{DOCUMENT}");
    assert_eq!(
        r["resources"],
        json!([{
            "uri": uri,
            "name": DOCUMENT,
            "title": "NovaPay Fees and Limits",
            "mime_type": "text/plain",
        }]),
        "{r:#}"
    );
    assert_eq!(r["read"][0]["uri"], uri.as_str());
    let read = r["read"][0]["text"].as_str().unwrap();
    let original = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(DOCUMENT),
    )
    .unwrap();
    // The whole document, each line once (neighbouring chunks overlap in the index).
    for line in original.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert_eq!(
            read.matches(line).count(),
            original.matches(line).count(),
            "{line:?} in:\n{read}"
        );
    }
    assert_eq!(r["read_missing"]["refused"], true, "{r:#}");
}

fn steps() -> Value {
    json!({
        "search": {"query": QUESTION, "top_k": 2},
        "search_invalid": {"query": QUESTION, "top_k": 99},
        "ask": {"question": QUESTION},
        "resources": true,
        "read_missing": format!("novapay://kb/..%2F{DOCUMENT}"),
    })
}

fn stdio_env(env: &[(String, std::ffi::OsString)], state: &Path) -> Value {
    let mut vars = serde_json::Map::new();
    for (k, v) in env {
        vars.insert(k.clone(), json!(v.to_string_lossy()));
    }
    for (k, v) in [
        ("NOVAPAY_STATE_DIR", state.to_string_lossy().as_ref()),
        ("NOVAPAY_MAX_NEW_TOKENS", "8"),
        ("NOVAPAY_THREADS", "1"),
        ("RAYON_NUM_THREADS", "1"),
        ("CANDLE_NUM_THREADS", "1"),
    ] {
        vars.insert(k.into(), json!(v));
    }
    Value::Object(vars)
}

#[test]
fn mcp_client_over_stdio_lists_and_calls_tools_and_reads_documents() {
    let work = tempfile::tempdir().unwrap();
    let env = index_small_kb(work.path());
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let r = client(&json!({
        "stdio": {
            "command": env!("CARGO_BIN_EXE_novapay"),
            "args": ["mcp"],
            "env": stdio_env(&env, &state),
            "cwd": state,
        },
        "steps": steps(),
    }));
    assert_tools_answer_and_documents(&r);
}

#[test]
fn mcp_client_over_http_uses_the_api_keys_and_keeps_sessions_with_their_key() {
    let work = tempfile::tempdir().unwrap();
    let mut env = index_small_kb(work.path());
    env.push(("NOVAPAY_API_KEYS".into(), "key-a,key-b".into()));
    env.push(("NOVAPAY_LOG_QUERIES".into(), "1".into()));
    let mut serve = ServeProcess::spawn("mcp", &env, &work.path().join("state"));
    serve.wait_ready();
    let url = format!("{}/mcp", serve.base);

    let r = client(&json!({"http": {"url": url, "key": "key-a"}, "steps": steps()}));
    assert_tools_answer_and_documents(&r);
    let session = r["ask"]["structured"]["session_id"].as_str().unwrap();

    // Another key cannot continue (or learn of) key-a's conversation.
    let other = client(&json!({
        "http": {"url": url, "key": "key-b"},
        "steps": {
            "ask": {"question": QUESTION, "session_id": session},
            "ask_again": {"question": format!("My card {CARD} was charged. {QUESTION}")},
        },
    }));
    assert_eq!(other["ask"]["is_error"], true, "{other:#}");
    assert!(
        other["ask"]["text"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{other:#}"
    );

    // Questions are logged (NOVAPAY_LOG_QUERIES=1) only as logsafe writes them: no card number.
    assert_eq!(other["ask_again"]["is_error"], false, "{other:#}");
    let log = serve.log();
    assert!(
        log.contains("[card number]"),
        "the question was not logged: {log}"
    );
    assert!(!log.contains(CARD), "a card number was logged: {log}");

    // A wrong key gets nowhere: the client cannot even list the tools.
    let refused = client(&json!({"http": {"url": url, "key": "wrong"}, "steps": {}}));
    assert!(refused.get("error").is_some(), "{refused:#}");
    assert!(refused.get("tools").is_none(), "{refused:#}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let wrong = ureq::post(&url)
        .set("Authorization", "Bearer wrong")
        .set("Accept", "application/json, text/event-stream")
        .send_json(body.clone());
    match wrong {
        Err(ureq::Error::Status(401, resp)) => {
            let v: Value = resp.into_json().unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        }
        other => panic!("a wrong key must be 401: {other:?}"),
    }
    // The server's body limit holds for MCP too.
    let huge = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "search_knowledge_base", "arguments": {"query": "x".repeat(100_000)}}});
    match ureq::post(&url)
        .set("Authorization", "Bearer key-a")
        .set("Accept", "application/json, text/event-stream")
        .send_json(huge)
    {
        Err(ureq::Error::Status(413, _)) => {}
        other => panic!("an oversized MCP body must be 413: {other:?}"),
    }

    let metrics = serve.metrics();
    assert!(
        metrics.contains(r#"route="/mcp",status="200""#),
        "{metrics}"
    );
}
