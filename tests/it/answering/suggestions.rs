//! Issue 19's doors: a turn the gate will not answer but retrieval found sections for comes back as
//! `suggested` through REST (JSON and SSE), the OpenAI-compatible API (plain and streamed) and MCP,
//! each in its own way; feedback names the suggestion that helped (or the operator), bad feedback is
//! refused with nothing stored, and the support report counts the outcomes per language.
//!
//! A guaranteed suggestion comes from an assistant whose gate cannot answer
//! ([`suggesting_assistant`]); the test on the product's gate only checks that whatever comes back
//! is rendered consistently, so that tuning the gate does not break it.

use serde_json::{json, Value};

use crate::support::{
    error_code, mcp_client, spawn_app, sse_events, suggesting_assistant, AppOptions, TestApp,
};
use novapay::http::ServerConfig;

/// On the knowledge base's topic: retrieval finds the fee sections.
const ON_TOPIC: &str = "How much does a domestic transfer cost?";
/// Off the knowledge base's answers, in its words (cards, names).
const NEAR_MISS: &str = "Can I get a metal card with my name engraved?";
const KEY: &str = "suggest-key";
const OTHER_KEY: &str = "suggest-other-key";
const ADMIN: &str = "suggest-admin";

fn suggesting_app(dir: &std::path::Path) -> TestApp {
    spawn_app(AppOptions {
        config: ServerConfig {
            api_keys: vec![KEY.into(), OTHER_KEY.into()],
            admin_keys: vec![ADMIN.into()],
            ..ServerConfig::default()
        },
        assistant: Some(suggesting_assistant(dir)),
        ..AppOptions::default()
    })
}

/// The label a suggestion is listed under: its section, else its document's title.
fn label(s: &Value) -> &str {
    match s["section"].as_str() {
        Some(section) if !section.trim().is_empty() => section,
        _ => s["title"].as_str().unwrap(),
    }
}

/// Checks a `suggested` reply's suggestions (1-based ids in order, every field there) and that
/// `text` lists each as a numbered line with its label and snippet; returns them.
fn assert_listed(text: &str, suggestions: &Value) -> Vec<Value> {
    let list = suggestions
        .as_array()
        .unwrap_or_else(|| panic!("{suggestions}"));
    assert!(
        (1..=3).contains(&list.len()),
        "one to three sections: {suggestions:#}"
    );
    for (i, s) in list.iter().enumerate() {
        assert_eq!(s["id"], i + 1, "{s}");
        for field in ["source", "title", "section", "snippet", "text"] {
            assert!(s[field].is_string(), "`{field}` in {s}");
        }
        assert!(!s["text"].as_str().unwrap().is_empty(), "{s}");
        assert!(s["score"].is_number(), "{s}");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}. ", i + 1)))
            .unwrap_or_else(|| panic!("no line {} in {text:?}", i + 1));
        assert!(line.contains(label(s)), "{line:?} names {s}");
        assert!(
            line.contains(s["snippet"].as_str().unwrap()),
            "{line:?} shows the snippet of {s}"
        );
    }
    assert!(
        text.contains("operator"),
        "the way to an operator: {text:?}"
    );
    list.clone()
}

/// The same sections: every field equal, scores as the same f32 (a door may print one with more
/// digits after a round trip through `serde_json::Value`).
#[track_caller]
fn assert_same_suggestions(got: &Value, want: &[Value]) {
    let got = got.as_array().unwrap_or_else(|| panic!("{got}"));
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        for field in ["id", "source", "title", "section", "snippet", "text"] {
            assert_eq!(g[field], w[field], "`{field}`: {g} vs {w}");
        }
        let (a, b) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-6, "{g} vs {w}");
    }
}

fn post_stream(app: &TestApp, path: &str, body: &Value) -> Vec<(String, Value)> {
    let resp = ureq::post(&app.url(path))
        .set("Authorization", &format!("Bearer {KEY}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    sse_events(resp)
}

#[test]
fn a_suggestion_is_rendered_by_rest_sse_and_the_openai_api() {
    let dir = tempfile::tempdir().unwrap();
    let app = suggesting_app(dir.path());

    // REST JSON: the outcome, the sections, the seed's `fallback`, no sources.
    let (status, rest) = app.post_json_as(KEY, "/api/v1/query", &json!({ "query": ON_TOPIC }));
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["outcome"], "suggested", "{rest:#}");
    assert_eq!(rest["fallback"], true, "{rest:#}");
    assert_eq!(rest["source_documents"], json!([]), "{rest:#}");
    let response = rest["response"].as_str().unwrap();
    let suggestions = assert_listed(response, &rest["suggestions"]);
    assert!(
        suggestions
            .iter()
            .any(|s| s["source"] == "fees-and-limits.md"),
        "the fee document is offered: {suggestions:?}"
    );

    // SSE: the streamed text is the list, the final event carries the same outcome and sections.
    let events = post_stream(
        &app,
        "/api/v1/query",
        &json!({ "query": ON_TOPIC, "stream": true }),
    );
    let streamed: String = events
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done", "{events:?}");
    assert_eq!(done["outcome"], "suggested", "{done:#}");
    assert_eq!(done["fallback"], true, "{done:#}");
    assert_same_suggestions(&done["suggestions"], &suggestions);
    assert_eq!(streamed, done["response"].as_str().unwrap());
    assert_listed(&streamed, &done["suggestions"]);

    // OpenAI: the message is the numbered list (no `Sources:` block), the extension the sections.
    let request =
        json!({ "model": "novapay", "messages": [{ "role": "user", "content": ON_TOPIC }] });
    let (status, completion) = app.post_json_as(KEY, "/v1/chat/completions", &request);
    assert_eq!(status, 200, "{completion}");
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!content.contains("Sources:"), "{content}");
    let extension = &completion["novapay"];
    assert_eq!(extension["outcome"], "suggested", "{completion:#}");
    assert_eq!(extension["fallback"], true, "{completion:#}");
    assert_eq!(extension["sources"], json!([]), "{completion:#}");
    assert_same_suggestions(&extension["suggestions"], &suggestions);
    assert_listed(content, &extension["suggestions"]);

    let mut streamed_request = request.clone();
    streamed_request["stream"] = json!(true);
    let chunks = post_stream(&app, "/v1/chat/completions", &streamed_request);
    let text: String = chunks
        .iter()
        .filter_map(|(_, c)| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = chunks
        .iter()
        .rev()
        .find_map(|(_, c)| c.get("novapay"))
        .unwrap_or_else(|| panic!("no extension chunk: {chunks:?}"));
    assert_eq!(last["outcome"], "suggested", "{last:#}");
    assert_same_suggestions(&last["suggestions"], &suggestions);
    assert_eq!(text, content, "the stream says what the completion says");
    assert_eq!(chunks.last().unwrap().1, json!("[DONE]"));
}

#[test]
fn mcp_returns_a_suggestion_as_structured_content() {
    let dir = tempfile::tempdir().unwrap();
    let app = suggesting_app(dir.path());
    let r = mcp_client(&json!({
        "http": { "url": app.url("/mcp"), "key": KEY },
        "steps": { "ask": { "question": ON_TOPIC } },
    }));
    let ask = &r["ask"];
    assert_eq!(ask["is_error"], false, "{r:#}");
    let structured = &ask["structured"];
    assert_eq!(structured["outcome"], "suggested", "{structured:#}");
    assert_eq!(structured["fallback"], true, "{structured:#}");
    assert_eq!(structured["sources"], json!([]), "{structured:#}");
    let text = ask["text"].as_str().unwrap();
    assert!(!text.contains("Sources:"), "{text}");
    let suggestions = assert_listed(text, &structured["suggestions"]);
    assert!(
        suggestions
            .iter()
            .all(|s| !s["text"].as_str().unwrap().is_empty()),
        "the calling model gets each section's text: {structured:#}"
    );
}

#[test]
fn feedback_names_the_suggestion_that_helped_and_bad_feedback_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = suggesting_app(dir.path());
    let ask = |key: &str, query: &str| {
        let (status, body) = app.post_json_as(key, "/api/v1/query", &json!({ "query": query }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "suggested", "{body:#}");
        body
    };
    let first = ask(KEY, ON_TOPIC);
    let second = ask(KEY, "Как перевести деньги на карту другого банка?");
    let theirs = ask(OTHER_KEY, ON_TOPIC);
    let offered = first["suggestions"].as_array().unwrap().len();
    let rate = |key: &str, body: Value| app.post_json_as(key, "/api/v1/feedback", &body);
    let stored_feedback = || app.assistant.support_report(0).unwrap().feedback;

    // A suggestion the answer did not offer, or 0: 400, with what it did offer.
    for id in [offered + 1, 99, 0] {
        let (status, body) = rate(
            KEY,
            json!({ "query_id": first["query_id"], "rating": "up", "suggestion": id }),
        );
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_suggestion"),
            "{id}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // The answer, named with another of the caller's sessions: 409.
    let (status, body) = rate(
        KEY,
        json!({ "query_id": first["query_id"], "session_id": second["session_id"],
                "rating": "up", "suggestion": 1 }),
    );
    assert_eq!(
        (status, error_code(&body)),
        (409, "session_mismatch"),
        "{body}"
    );
    // Another caller's answer: 404, as if it did not exist.
    let (status, body) = rate(
        KEY,
        json!({ "query_id": theirs["query_id"], "rating": "up", "suggestion": 1 }),
    );
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");
    let nothing = stored_feedback();
    assert_eq!((nothing.up, nothing.down), (0, 0), "nothing was stored");

    // The first answer's section 1 helped; after the second the customer wanted an operator.
    let (status, body) = rate(
        KEY,
        json!({ "query_id": first["query_id"], "session_id": first["session_id"],
                "rating": "up", "suggestion": 1 }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suggestion"], 1, "{body}");
    let (status, body) = rate(
        KEY,
        json!({ "query_id": second["query_id"], "rating": "down", "operator": true }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operator"], true, "{body}");

    let (status, stats) = app.get_as(ADMIN, "/api/v1/stats");
    assert_eq!(status, 200, "{stats}");
    let en = &stats["outcomes_by_language"]["en"];
    assert_eq!(en["suggested"], 2, "{stats:#}");
    assert_eq!(en["suggested_and_helped"], 1, "{stats:#}");
    assert_eq!(en["suggested_then_operator"], 0, "{stats:#}");
    let ru = &stats["outcomes_by_language"]["ru"];
    assert_eq!(ru["suggested"], 1, "{stats:#}");
    assert_eq!(ru["suggested_then_operator"], 1, "{stats:#}");
    assert_eq!(stats["outcomes"]["suggested"], 3, "{stats:#}");
    assert_eq!(stats["outcomes"]["answered"], 0, "{stats:#}");
}

#[test]
fn a_question_near_the_knowledge_base_is_rendered_as_the_gate_decides() {
    // The product's gate: whatever it decides for a question in the knowledge base's words but off
    // its answers, the reply is consistent (sections listed when suggested, none otherwise).
    let app = spawn_app(AppOptions::default());
    let (status, body) = app.post_json("/api/v1/query", &json!({ "query": NEAR_MISS }));
    assert_eq!(status, 200, "{body}");
    let outcome = body["outcome"].as_str().unwrap();
    assert_eq!(body["fallback"], outcome != "answered", "{body:#}");
    if outcome == "suggested" {
        assert_listed(body["response"].as_str().unwrap(), &body["suggestions"]);
        assert_eq!(body["source_documents"], json!([]), "{body:#}");
    } else {
        assert_eq!(body["suggestions"], json!([]), "{body:#}");
    }
}

/// Questions in customers' words, one of which the product's gate is unsure of (its score between
/// the two thresholds): what the opt-in judge is asked about.
const UNSURE_CANDIDATES: &[&str] = &[
    "my card got nicked on the bus, what do I do now?",
    "how much will you charge me to wire money to my cousin in Germany",
    "Can I get a metal card with my name engraved?",
    "Is there a fee to close my account?",
    "can I pay my rent with the card?",
    "I forgot my password, help",
    "how long until my documents are checked?",
    "Can I send money to another country?",
    "I lost my phone, can someone log into my account?",
    "my salary comes in euros, can I keep it on the card?",
    "what happens if somebody else uses my card online?",
];

/// The opt-in judge: for a question the gate is unsure of, the model's "yes" turns the offered
/// sections into a generated answer (with its sources, through the figure check), its "no" keeps the
/// sections; with the judge off (the default) the same question gets the sections and the model is
/// never asked. The model's replies are scripted (what SmolLM2 would say differs between CPUs); the
/// retrieval, the gate and everything after the generation are the real ones.
#[test]
fn the_models_judgement_answers_an_unsure_question_only_when_it_says_yes() {
    use novapay::assistant::answerability::{Decision, GateModel};
    use novapay::assistant::testing::ask_with_generations;
    use novapay::assistant::{AnswerMode, Ask, Conversation, Door, Outcome, RagConfig};
    use novapay::engine::SamplingParams;

    let dir = tempfile::tempdir().unwrap();
    let assistant_with = |judge: bool, sub: &str| {
        let mut config = RagConfig {
            answer_mode: AnswerMode::Verified,
            sampling: SamplingParams {
                max_new_tokens: 48,
                ..SamplingParams::default()
            },
            ..RagConfig::default()
        };
        config.cache.capacity = 0;
        config.gate.judge = judge;
        let state = dir.path().join(sub);
        std::fs::create_dir_all(&state).unwrap();
        crate::support::test_assistant_configured(&state, 4, config)
    };
    let on = assistant_with(true, "on");
    let off = assistant_with(false, "off");
    let model = GateModel::builtin();
    let unsure = UNSURE_CANDIDATES
        .iter()
        .copied()
        .find(|q| {
            let r = on.retrieve(q, &[]).unwrap();
            r.decision == Decision::Suggest
                && r.gate.unknown_identifiers.is_empty()
                && r.gate.score.is_some_and(|s| s >= model.suggest_at)
        })
        .expect("one of the candidates is between the gate's thresholds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |a: &std::sync::Arc<novapay::assistant::Assistant>, replies: &[&str]| {
        let question = Ask::new(unsure, Conversation::Stateless(Vec::new()), Door::Eval);
        rt.block_on(async {
            ask_with_generations(a, question, replies)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
        })
    };
    let answer_text = "You can find this in the app under Settings. [1]";

    let yes = ask(&on, &["Yes.", answer_text]);
    assert_eq!(yes.answer.outcome(), Outcome::Answered, "{unsure}: {yes:?}");
    assert!(
        yes.answer.text.contains("Settings"),
        "{:?}",
        yes.answer.text
    );
    assert!(!yes.answer.sources.is_empty() && yes.answer.suggestions.is_empty());
    let tokens = on
        .llm()
        .tokenizer()
        .encode(answer_text, false)
        .unwrap()
        .len();
    assert_eq!(yes.usage().map(|u| u.completion_tokens), Some(tokens));

    for reply in ["No.", "нет", "I am not sure", ""] {
        let no = ask(&on, &[reply, answer_text]);
        assert_eq!(no.answer.outcome(), Outcome::Suggested, "{reply:?}: {no:?}");
        assert!(no.answer.sources.is_empty() && !no.answer.suggestions.is_empty());
        assert!(!no.answer.text.contains("Settings"), "{:?}", no.answer.text);
    }

    let never_asked = ask(&off, &["Yes.", answer_text]);
    assert_eq!(never_asked.answer.outcome(), Outcome::Suggested);
    assert!(never_asked.usage().is_none(), "{never_asked:?}");

    let verdicts = on.metrics().gather();
    let judged: Vec<_> = verdicts
        .iter()
        .filter(|f| f.name() == "novapay_judge_verdicts_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .collect();
    assert_eq!(judged.iter().sum::<f64>(), 5.0, "{judged:?}");
}
