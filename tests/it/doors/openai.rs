//! The OpenAI-compatible API: the official `openai` Python SDK against a real `novapay serve` (the
//! client Open WebUI, LibreChat and integrators' scripts use), and the edges the SDK does not reach.

use std::ffi::OsString;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::{
    index_small_kb, python, python_script, send, spawn_app, AppOptions, ServeProcess,
};

#[test]
fn the_openai_python_sdk_gets_grounded_answers_embeddings_and_openai_errors() {
    let work = tempfile::tempdir().unwrap();
    let mut env = index_small_kb(work.path());
    env.push(("NOVAPAY_API_KEYS".into(), OsString::from("sdk-test-key")));
    let mut server = ServeProcess::spawn("openai", &env, &work.path().join("state"));
    server.wait_ready();

    let out = Command::new(python())
        .arg(python_script("openai_client.py"))
        .args([server.base.as_str(), "sdk-test-key"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the openai SDK client failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the client prints JSON");

    // Non-streamed: a generated answer from the fee schedule, its sources cited under the text and
    // in the extension field, usage counted by the LLM (the server caps generation at 8 tokens).
    let chat = &seen["chat"];
    let ext = &chat["novapay"];
    assert_eq!(ext["fallback"], false, "{chat}");
    assert_eq!(ext["sources"][0]["source"], "fees-and-limits.md", "{chat}");
    let content = chat["content"].as_str().unwrap();
    assert!(
        content.contains("\n\nSources:\n- [1] fees-and-limits.md"),
        "{content}"
    );
    let usage = &chat["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(
        prompt > 100,
        "the grounded prompt (instructions and excerpts) is counted: {usage}"
    );
    assert!(
        (1..=6).contains(&completion),
        "max_tokens=6 caps the generation: {usage}"
    );
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
    // Cut by max_tokens, unless the figure check left nothing of the six tokens this CPU's model
    // said (issue 25) and quotes replaced them: a quote is a complete text.
    let cut = if ext["extractive"] == true {
        "stop"
    } else {
        "length"
    };
    assert_eq!(chat["finish_reason"], cut, "{chat}");

    // Streamed: role chunk, content chunks, citations, the finish chunk with the extension, usage.
    let stream = &seen["stream"];
    assert!(stream["chunks"].as_u64().unwrap() >= 4, "{stream}");
    assert_eq!(
        stream["novapay"]["sources"][0]["source"], "fees-and-limits.md",
        "{stream}"
    );
    assert!(
        stream["content"]
            .as_str()
            .unwrap()
            .contains("- [1] fees-and-limits.md"),
        "{stream}"
    );
    let su = &stream["usage"];
    assert!(su["prompt_tokens"].as_u64().unwrap() > 100, "{su}");
    assert!(
        (1..=6).contains(&su["completion_tokens"].as_u64().unwrap()),
        "{su}"
    );

    // The fallback is an ordinary assistant message, with no sources and no LLM work.
    let fallback = &seen["fallback"];
    assert_eq!(fallback["novapay"]["fallback"], true, "{fallback}");
    assert_eq!(fallback["novapay"]["sources"], json!([]), "{fallback}");
    assert!(
        fallback["content"]
            .as_str()
            .unwrap()
            .contains("support@novapay.com"),
        "{fallback}"
    );
    assert_eq!(fallback["usage"]["total_tokens"], 0, "{fallback}");

    // Embeddings of the MiniLM test embedder: 384 dimensions, base64 and float agree, the answer
    // sentence is close to its question, and the usage counts word pieces.
    let emb = &seen["embeddings"];
    assert_eq!(emb["count"], 2);
    assert_eq!(emb["dimensions"], 384);
    assert!(
        emb["cosine_base64_float"].as_f64().unwrap() > 0.9999,
        "{emb}"
    );
    assert!(
        emb["cosine_question_answer"].as_f64().unwrap() > 0.5,
        "{emb}"
    );
    let tokens = emb["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((10..40).contains(&tokens), "{emb}");

    // Errors the SDK raised as its own classes, in OpenAI's shape.
    let wrong = &seen["wrong_key"];
    assert_eq!(wrong["status"], 401, "{wrong}");
    assert_eq!(wrong["code"], "invalid_api_key", "{wrong}");
    assert_eq!(wrong["type"], "invalid_request_error", "{wrong}");
    assert!(wrong["body"]["message"].is_string(), "{wrong}");
    assert_eq!(seen["unknown_model"]["status"], 404);
    assert_eq!(seen["unknown_model"]["code"], "model_not_found");
    assert_eq!(seen["unknown_model"]["param"], "model");
    assert_eq!(seen["too_many_inputs"]["status"], 400);
    assert_eq!(seen["too_many_inputs"]["param"], "input");

    // Every answer of this door is in /metrics, and the key never reaches the log.
    let metrics = server.metrics();
    assert!(
        metrics.contains(
            r#"novapay_http_requests_total{route="/v1/chat/completions",status="200"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("novapay_fallback_answers_total 1"),
        "{metrics}"
    );
    assert!(!server.log().contains("sdk-test-key"));
}

#[test]
fn chat_history_comes_from_the_request_and_nothing_is_stored() {
    let app = spawn_app(AppOptions::default());
    let chat = |body: Value| {
        send(
            ureq::post(&app.url("/v1/chat/completions")).set("Content-Type", "application/json"),
            body.to_string().as_bytes(),
        )
    };
    let (status, v) = chat(json!({
        "model": "novapay",
        "max_tokens": 2,
        "messages": [
            {"role": "user", "content": "How much does a domestic transfer cost?"},
            {"role": "assistant", "content": "A domestic transfer costs 0.5% [1].\n\nSources:\n- [1] fees-and-limits.md — Domestic transfer fee"},
            {"role": "user", "content": "And for international ones?"}
        ]
    }));
    assert_eq!(status, 200, "{v}");
    let ext = &v["novapay"];
    assert_eq!(
        ext["fallback"], false,
        "the follow-up is understood from the history in the request: {v}"
    );
    let titles: Vec<&str> = ext["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["title"].as_str())
        .collect();
    assert!(
        titles.iter().any(|t| t.contains("International")),
        "{titles:?}"
    );
    assert_eq!(
        app.session_count(),
        0,
        "the OpenAI door keeps no conversation on the server"
    );

    // Errors of /v1/ paths are in OpenAI's shape, whoever makes them.
    let big = json!({"model": "novapay", "messages": [{"role": "user", "content": "x".repeat(1_100_000)}]});
    let (status, v) = chat(big);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].is_string() && v["error"].get("param").is_some());
    let long_question =
        json!({"model": "novapay", "messages": [{"role": "user", "content": "fee ".repeat(300)}]});
    let (status, v) = chat(long_question);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages", "{v}");
    let (status, v) = send(
        ureq::post(&app.url("/v1/chat/completions")).set("Content-Type", "text/plain"),
        b"hello",
    );
    assert_eq!(status, 415, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let (status, v) = app.get("/v1/no-such-thing");
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    // The REST API keeps its own error shape.
    let (status, v) = app.post_json("/api/v1/query", &json!({"query": ""}));
    assert_eq!(status, 400);
    assert!(v["error"].get("type").is_none(), "{v}");
}
