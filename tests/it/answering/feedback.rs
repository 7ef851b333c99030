//! Feedback on answers and the support report: over HTTP on the real server (ownership, metrics, the
//! admin-only stats), in both conversation stores, and `novapay report` on a state directory.

use crate::support::assert_success;
use std::sync::Arc;

use novapay::http::ServerConfig;
use novapay::memory::{
    now_ms, AnswerRecord, ConversationStore, Feedback, Rating, RedisStore, SessionId, SessionOwner,
    Speaker, SqliteStore, Turn,
};
use serde_json::{json, Value};

use crate::operations::redis_memory::RedisServer;
use crate::support::novapay;
use crate::support::{error_code, spawn_app, AppOptions};

const OWNER: &str = "owner-key";
const OTHER: &str = "other-key";
const ADMIN: &str = "admin-key";
const ANSWERABLE: &str = "How much does a domestic transfer cost?";
const UNANSWERABLE: &str = "How do I bake a chocolate cake?";

#[test]
fn only_the_sessions_owner_rates_an_answer_and_admins_see_the_report() {
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            api_keys: vec![OWNER.into(), OTHER.into()],
            admin_keys: vec![ADMIN.into()],
            ..ServerConfig::default()
        },
        ..AppOptions::default()
    });
    let (status, answered) =
        app.post_json_as(OWNER, "/api/v1/query", &json!({ "query": ANSWERABLE }));
    assert_eq!(status, 200, "{answered}");
    let query_id = answered["query_id"].as_str().unwrap().to_string();
    let session = answered["session_id"].as_str().unwrap().to_string();
    // A conversation of its own: after a fee question, a short one would be read as a follow-up.
    let (status, fallback) =
        app.post_json_as(OWNER, "/api/v1/query", &json!({ "query": UNANSWERABLE }));
    assert_eq!(status, 200, "{fallback}");
    assert_eq!(fallback["fallback"], true, "{fallback}");
    assert_ne!(fallback["query_id"], answered["query_id"]);

    let rate = |key: &str, body: Value| app.post_json_as(key, "/api/v1/feedback", &body);
    // Another key, even an administrator's, is told the answer does not exist.
    for key in [OTHER, ADMIN] {
        let (status, body) = rate(key, json!({ "query_id": query_id, "rating": "down" }));
        assert_eq!(
            (status, error_code(&body)),
            (404, "not_found"),
            "{key}: {body}"
        );
    }
    let (status, body) = rate(
        OWNER,
        json!({ "query_id": "00000000-0000-4000-8000-000000000000", "rating": "up" }),
    );
    assert_eq!(status, 404, "{body}");
    for bad in [
        json!({ "query_id": query_id, "rating": "meh" }),
        json!({ "query_id": "../x", "rating": "up" }),
        json!({ "query_id": query_id, "rating": "up", "comment": "x".repeat(1001) }),
        json!({ "rating": "up" }),
    ] {
        let (status, body) = rate(OWNER, bad.clone());
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = rate(
        OWNER,
        json!({ "query_id": query_id, "rating": "down", "comment": "the fee is wrong" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], true);
    let fallback_id = fallback["query_id"].as_str().unwrap();
    let (status, _) = rate(OWNER, json!({ "query_id": fallback_id, "rating": "up" }));
    assert_eq!(status, 200);

    let metrics = app.metrics();
    assert!(
        metrics.contains("novapay_feedback_total{rating=\"down\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("novapay_feedback_total{rating=\"up\"} 1"));

    let (status, body) = app.get_as(OWNER, "/api/v1/stats");
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    let (status, report) = app.get_as(ADMIN, "/api/v1/stats?days=7");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["questions_answered"], 2, "{report}");
    assert_eq!(report["fallback_answers"], 1);
    assert_eq!(report["unanswered_questions"][0]["question"], UNANSWERABLE);
    assert_eq!(report["unanswered_questions"][0]["count"], 1);
    assert_eq!(report["feedback"], json!({ "up": 1, "down": 1 }));
    let down = &report["thumbs_down"][0];
    assert_eq!(down["question"], ANSWERABLE);
    assert_eq!(down["query_id"], query_id.as_str());
    assert_eq!(down["comment"], "the fee is wrong");
    assert_eq!(down["answer"], answered["response"]);
    assert_eq!(
        down["sources"][0],
        answered["source_documents"][0]["source"]
    );
    assert!(report["latency_ms"]["p50"].as_u64().is_some(), "{report}");
    assert!(report["latency_ms"]["p95"].as_u64() >= report["latency_ms"]["p50"].as_u64());

    // Deleting a conversation deletes its answers and their feedback.
    let (status, _) = crate::support::response(
        ureq::delete(&app.url(&format!("/api/v1/session/{session}")))
            .set("Authorization", &format!("Bearer {OWNER}"))
            .call(),
    );
    assert_eq!(status, 200);
    let (status, _) = rate(OWNER, json!({ "query_id": query_id, "rating": "up" }));
    assert_eq!(status, 404);
    let (_, report) = app.get_as(ADMIN, "/api/v1/stats");
    assert_eq!(report["questions_answered"], 1, "{report}");
    assert_eq!(report["feedback"], json!({ "up": 1, "down": 0 }));
}

/// The same contract for both stores: filed, rated, listed newest first, gone with the session.
fn answer_records_round_trip(store: &dyn ConversationStore) {
    let session = SessionId::parse(&format!("fb-{}", uuid::Uuid::new_v4())).unwrap();
    store
        .create_session(
            &session,
            &SessionOwner {
                owner: Some("key:1".into()),
                user_id: None,
            },
        )
        .unwrap();
    let start = now_ms();
    for (n, fallback) in [(1, false), (2, true)] {
        store
            .append(
                &session,
                &Turn {
                    role: Speaker::User,
                    content: format!("question {n}"),
                    sources: vec![],
                    created_at_ms: now_ms(),
                },
            )
            .unwrap();
        store
            .record_answer(&AnswerRecord {
                query_id: format!("{session}-q{n}"),
                session: session.clone(),
                question: format!("question {n}"),
                answer: format!("answer {n}"),
                sources: vec!["fees.md".into()],
                fallback,
                latency_ms: 100 * n as u64,
                created_at_ms: start + n,
                feedback: None,
                outcome: None,
                language: String::new(),
                suggestions: Vec::new(),
            })
            .unwrap();
    }
    let q1 = format!("{session}-q1");
    let feedback = Feedback {
        rating: Rating::Down,
        comment: Some("wrong".into()),
        created_at_ms: now_ms(),
        suggestion: None,
        operator: false,
    };
    assert!(store.set_feedback(&q1, &feedback).unwrap());
    assert!(!store.set_feedback("no-such-answer", &feedback).unwrap());
    let record = store.answer_record(&q1).unwrap().unwrap();
    assert_eq!(record.session, session);
    assert_eq!(record.question, "question 1");
    assert_eq!(record.sources, ["fees.md"]);
    assert_eq!(record.feedback, Some(feedback));
    let listed = store.answer_records(start, 10).unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.query_id.as_str()).collect();
    assert_eq!(ids, [format!("{session}-q2"), q1.clone()]);
    assert_eq!(store.answer_records(start + 2, 10).unwrap().len(), 1);
    assert_eq!(store.answer_records(start, 1).unwrap().len(), 1);
    assert!(store.delete_session(&session).unwrap());
    assert!(store.answer_record(&q1).unwrap().is_none());
    assert!(store.answer_records(start, 10).unwrap().is_empty());
}

#[test]
fn answer_records_and_feedback_live_and_die_with_the_session_in_sqlite_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("m.sqlite")).unwrap();
    answer_records_round_trip(&sqlite);
    let redis = RedisServer::start();
    let store = RedisStore::open(&redis.url(), Some(std::time::Duration::from_secs(3600))).unwrap();
    answer_records_round_trip(&store);
}

#[test]
fn novapay_report_reads_the_state_directorys_store() {
    let state = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn ConversationStore> =
            Arc::new(SqliteStore::open(&state.path().join("conversations.sqlite")).unwrap());
        let session = SessionId::parse("report-1").unwrap();
        let now = now_ms();
        for (n, question, fallback) in [
            (1, "Do you support Apple Pay?", true),
            (2, "do you support apple pay", true),
            (3, "What is the ATM fee?", false),
            (4, "Can I get a loan?", true),
        ] {
            store
                .append(
                    &session,
                    &Turn {
                        role: Speaker::User,
                        content: question.into(),
                        sources: vec![],
                        created_at_ms: now,
                    },
                )
                .unwrap();
            store
                .record_answer(&AnswerRecord {
                    query_id: format!("q{n}"),
                    session: session.clone(),
                    question: question.into(),
                    answer: format!("answer {n}"),
                    sources: if fallback {
                        vec![]
                    } else {
                        vec!["cards.md".into()]
                    },
                    fallback,
                    latency_ms: 1000 * n as u64,
                    created_at_ms: now + n,
                    feedback: None,
                    outcome: None,
                    language: String::new(),
                    suggestions: Vec::new(),
                })
                .unwrap();
        }
        store
            .set_feedback(
                "q3",
                &Feedback {
                    rating: Rating::Down,
                    comment: None,
                    created_at_ms: now,
                    suggestion: None,
                    operator: false,
                },
            )
            .unwrap();
    }
    let run = |args: &[&str]| {
        let out = novapay()
            .arg("report")
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .output()
            .unwrap();
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(json["questions_answered"], 4);
    assert_eq!(json["fallback_answers"], 3);
    assert_eq!(json["unanswered_questions"][0]["count"], 2);
    assert_eq!(
        json["unanswered_questions"][1]["question"],
        "Can I get a loan?"
    );
    assert_eq!(json["thumbs_down"][0]["question"], "What is the ATM fee?");
    assert_eq!(json["latency_ms"], json!({ "p50": 2000, "p95": 4000 }));
    // Filed before outcomes and languages were: counted from `fallback`, under `unknown`.
    assert_eq!(json["outcomes"]["answered"], 1);
    assert_eq!(json["outcomes"]["handed_off"], 3);
    assert_eq!(json["outcomes_by_language"]["unknown"]["handed_off"], 3);
    let text = run(&[]);
    assert!(text.contains("questions answered: 4"), "{text}");
    assert!(
        text.contains("    all: 1 / 0 (0 helped, 0 operator) / 3"),
        "{text}"
    );
    assert!(text.contains("2 x  do you support apple pay"), "{text}");
    assert!(text.contains("sources: cards.md"), "{text}");
}
