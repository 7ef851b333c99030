//! A customer's data on request (issue 23): one customer talks through the REST API (with
//! `user_id`), the OpenAI door (stateless) and a Bitrix24 dialog; an administrator reads, exports and
//! erases it; nothing of theirs is left in any store — the SQLite file itself included — while
//! another customer's data is untouched, a restart brings nothing back, and the audit log records
//! every administrator read and erase without customer text. Real `novapay serve` processes with
//! the small real models; the fake Bitrix24 portal stands in for the portal.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::portal::{message_event, php_form, APP_TOKEN};
use crate::support::{
    assert_success, error_code, index_small_kb, novapay, response, send, test_assistant,
    FakePortal, ServeProcess,
};
use novapay::assistant::customers::Customer;
use novapay::assistant::testing::ask_with_gated_generation;
use novapay::assistant::{Access, Ask, Conversation, Door};
use novapay::engine::SamplingParams;

const APP_KEY: &str = "key-app";
const ADMIN_KEY: &str = "key-admin";
/// Alice's first question (cacheable: no history); Bob later asks it too, so it is his data as well.
/// Alice's own texts carry the marker "Alicia".
const ALICE_OFF_TOPIC: &str = "Where can I buy a lemon cake?";
const ALICE_FOLLOW_UP: &str = "Alicia here: how much does a domestic transfer cost?";
const ALICE_COMMENT: &str = "Alicia-comment: not helpful";
const BOB_COMMENT: &str = "Bob-comment: fine";
const IN_KB: &str = "How much does a domestic transfer cost?";

fn call(
    server: &ServeProcess,
    method: &str,
    key: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let req = ureq::request(method, &format!("{}{path}", server.base))
        .set("Authorization", &format!("Bearer {key}"))
        .timeout(Duration::from_secs(300));
    response(match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    })
}

fn serve_env(work: &Path, portal: &FakePortal) -> Vec<(String, OsString)> {
    let mut env = index_small_kb(work);
    for (k, v) in [
        ("NOVAPAY_API_KEYS", APP_KEY.to_string()),
        ("NOVAPAY_ADMIN_KEYS", ADMIN_KEY.to_string()),
        ("NOVAPAY_BITRIX24_MODE", "handler".into()),
        ("NOVAPAY_BITRIX24_PORTAL", portal.base.clone()),
        ("NOVAPAY_BITRIX24_ALLOW_HTTP", "1".into()),
        ("NOVAPAY_BITRIX24_APPLICATION_TOKEN", APP_TOKEN.into()),
    ] {
        env.push((k.into(), v.into()));
    }
    env
}

/// A Bitrix24 message from portal user `user` in `dialog`, posted to the handler.
fn bitrix24_message(server: &ServeProcess, portal: &FakePortal, user: &str, dialog: &str) {
    let mut event = message_event(&portal.client_endpoint(), APP_TOKEN, dialog, IN_KB, false);
    event["data"]["PARAMS"]["FROM_USER_ID"] = json!(user);
    event["data"]["PARAMS"]["AUTHOR_ID"] = json!(user);
    event["data"]["USER"]["ID"] = json!(user);
    let (status, body) = send(
        ureq::post(&format!("{}/integrations/bitrix24/events", server.base))
            .set("Content-Type", "application/x-www-form-urlencoded"),
        php_form(&event).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
}

fn export(server: &ServeProcess, id: &str, channel: Option<&str>) -> Value {
    let query = channel.map(|c| format!("?channel={c}")).unwrap_or_default();
    let (status, body) = call(
        server,
        "GET",
        ADMIN_KEY,
        &format!("/api/v1/users/{id}/export{query}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// The raw bytes of the conversation store (file and write-ahead log): erased text must be gone
/// from the disk, not only from the answers.
fn store_bytes(state: &Path) -> String {
    let mut bytes = Vec::new();
    for name in ["conversations.sqlite", "conversations.sqlite-wal"] {
        if let Ok(b) = std::fs::read(state.join(name)) {
            bytes.extend(b);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn cli(state: &Path, env: &[(String, OsString)], args: &[&str]) -> Value {
    let out = novapay()
        .current_dir(state)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NOVAPAY_STATE_DIR", state)
        .output()
        .unwrap();
    assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// What Alice's data looks like from everywhere an administrator or the stores can show it.
fn assert_nothing_of_alice(server: &ServeProcess, state: &Path, alice_session: &str) {
    let (status, body) = call(
        server,
        "GET",
        ADMIN_KEY,
        &format!("/api/v1/session/{alice_session}"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(export(server, "alice-1", None)["sessions"], json!([]));
    assert_eq!(
        export(server, "27", Some("bitrix24"))["sessions"],
        json!([])
    );
    let (status, stats) = call(server, "GET", ADMIN_KEY, "/api/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    let stats = stats.to_string();
    assert!(!stats.contains("Alicia"), "{stats}");
    assert!(
        stats.contains("Bob-comment"),
        "Bob's rating is kept: {stats}"
    );
    let disk = store_bytes(state);
    assert!(
        !disk.contains("Alicia"),
        "Alice's text is still in the file"
    );
    assert!(
        !disk.contains("alice-1"),
        "Alice's user id is still in the file"
    );
    assert!(!disk.contains("SWIFT"), "the OpenAI door stores nothing");
    assert!(disk.contains("Bob-comment"), "Bob's data is still there");
}

#[test]
fn a_customer_is_exported_then_erased_from_every_store_and_the_audit_log_says_who_did_it() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let portal = FakePortal::start();
    let env = serve_env(work.path(), &portal);
    let mut server = ServeProcess::spawn("customer-data", &env, &state);
    server.wait_ready();

    // Alice through the REST API: an off-topic question (the fallback, cached), then a follow-up
    // the model answers; she rates the first one down with a comment.
    let (status, first) = server.post_as(
        APP_KEY,
        "/api/v1/query",
        &json!({"query": ALICE_OFF_TOPIC, "user_id": "alice-1"}),
    );
    assert_eq!(status, 200, "{first}");
    let alice_session = first["session_id"].as_str().unwrap().to_string();
    let (status, second) = server.post_as(
        APP_KEY,
        "/api/v1/query",
        &json!({"query": ALICE_FOLLOW_UP, "user_id": "alice-1", "session_id": alice_session}),
    );
    assert_eq!(status, 200, "{second}");
    let (status, rated) = server.post_as(
        APP_KEY,
        "/api/v1/feedback",
        &json!({"query_id": first["query_id"], "rating": "down", "comment": ALICE_COMMENT,
                "user_id": "alice-1"}),
    );
    assert_eq!(status, 200, "{rated}");
    // Alice through the OpenAI door: stateless, nothing is stored for it.
    let (status, completion) = server.post_as(
        APP_KEY,
        "/v1/chat/completions",
        &json!({"model": "novapay", "user": "alice-1", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Alicia asks: what is a SWIFT transfer fee?"}]}),
    );
    assert_eq!(status, 200, "{completion}");
    // Alice in Bitrix24 (portal user 27, an Open Lines-less group dialog); another portal user, 31.
    bitrix24_message(&server, &portal, "27", "chat1157");
    bitrix24_message(&server, &portal, "31", "31");
    portal.wait_for("imbot.message.add", 2);

    // Bob through the REST API: Alice's off-topic question comes from the cache she filled.
    let (status, bob) = server.post_as(
        APP_KEY,
        "/api/v1/query",
        &json!({"query": ALICE_OFF_TOPIC, "user_id": "bob-2"}),
    );
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["cached"], true, "{bob}");
    let (status, rated) = server.post_as(
        APP_KEY,
        "/api/v1/feedback",
        &json!({"query_id": bob["query_id"], "rating": "down", "comment": BOB_COMMENT,
                "user_id": "bob-2"}),
    );
    assert_eq!(status, 200, "{rated}");

    // An administrator reads Alice's conversation and the report (both audited).
    let (status, read) = call(
        &server,
        "GET",
        ADMIN_KEY,
        &format!("/api/v1/session/{alice_session}"),
        None,
    );
    assert_eq!(status, 200, "{read}");
    let (status, stats) = call(&server, "GET", ADMIN_KEY, "/api/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    assert!(stats.to_string().contains(ALICE_COMMENT), "{stats}");

    // The export is exactly Alice's: her one API session (the OpenAI door stored nothing), its four
    // messages as the session route shows them, both answer records, her rating.
    let alice = export(&server, "alice-1", None);
    let sessions = alice["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{alice}");
    assert_eq!(sessions[0]["session_id"], alice_session.as_str());
    let shown: Vec<&Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"])
        .collect();
    let exported: Vec<&Value> = sessions[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(exported, shown);
    assert_eq!(exported.len(), 4);
    let answers = sessions[0]["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 2, "{alice}");
    assert_eq!(answers[0]["rating"]["comment"], ALICE_COMMENT);
    let text = alice.to_string();
    assert!(!text.contains("bob") && !text.contains("Bob"), "{text}");
    assert!(
        !text.contains("SWIFT"),
        "the OpenAI door stored nothing: {text}"
    );
    // The command line exports the same conversations.
    let from_cli = cli(&state, &env, &["export", "--user-id", "alice-1"]);
    assert_eq!(from_cli["sessions"], alice["sessions"]);
    let bitrix = export(&server, "27", Some("bitrix24"));
    assert_eq!(bitrix["sessions"].as_array().unwrap().len(), 1, "{bitrix}");
    assert_eq!(bitrix["sessions"][0]["session_id"], "bitrix24:chat1157");

    // Bad callers and bad ids.
    for (method, path) in [
        ("DELETE", "/api/v1/users/alice-1"),
        ("GET", "/api/v1/users/alice-1/export"),
    ] {
        let (status, body) = call(&server, method, APP_KEY, path, None);
        assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    }
    for bad in ["..%2Fetc", "a%2Fb", "a%5Cb", "x%0Ay"] {
        let (status, body) = call(
            &server,
            "DELETE",
            ADMIN_KEY,
            &format!("/api/v1/users/{bad}"),
            None,
        );
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_code(&body), "invalid_user_id", "{bad}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("'/'"));
    }
    let (status, body) = call(
        &server,
        "DELETE",
        ADMIN_KEY,
        "/api/v1/users/27?channel=telegram",
        None,
    );
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_channel"),
        "{body}"
    );
    let (status, unknown) = call(&server, "DELETE", ADMIN_KEY, "/api/v1/users/nobody-9", None);
    assert_eq!(status, 200, "{unknown}");
    assert_eq!(unknown["removed_anything"], false, "{unknown}");
    assert_eq!(unknown["removed"]["conversations"]["sessions"], 0);

    // The erase, through the API (Alice's user_id) and the command line (her portal user id).
    let (status, erased) = call(&server, "DELETE", ADMIN_KEY, "/api/v1/users/alice-1", None);
    assert_eq!(status, 200, "{erased}");
    assert_eq!(
        erased["removed"]["conversations"],
        json!({"store": "sqlite", "sessions": 1, "turns": 4, "answer_records": 2, "ratings": 1,
               "comments": 1}),
        "{erased}"
    );
    assert_eq!(erased["removed"]["answer_cache"]["entries"], 1, "{erased}");
    assert_eq!(erased["removed_anything"], true);
    let (status, again) = call(&server, "DELETE", ADMIN_KEY, "/api/v1/users/alice-1", None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["removed_anything"], false, "{again}");
    assert_eq!(
        again["removed"]["conversations"]["turns"], 0,
        "a second erase removes nothing: {again}"
    );
    let by_cli = cli(&state, &env, &["forget", "--bitrix24-user", "27"]);
    assert_eq!(
        by_cli["removed"]["conversations"]["sessions"], 1,
        "{by_cli}"
    );
    assert_eq!(by_cli["removed"]["conversations"]["turns"], 2, "{by_cli}");

    // Nothing of Alice anywhere; Bob and portal user 31 untouched; the cache answers her question
    // afresh.
    assert_nothing_of_alice(&server, &state, &alice_session);
    assert_eq!(
        export(&server, "bob-2", None)["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        export(&server, "31", Some("bitrix24"))["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, fresh) = server.post_as(
        APP_KEY,
        "/api/v1/query",
        &json!({"query": ALICE_OFF_TOPIC, "user_id": "carol-3"}),
    );
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        fresh["cached"], false,
        "the cached answer went with Alice: {fresh}"
    );

    // A restart brings nothing back; the report read from the store has nothing of hers either.
    server.kill_hard();
    let mut server = ServeProcess::spawn("customer-data-restarted", &env, &state);
    server.wait_ready();
    assert_nothing_of_alice(&server, &state, &alice_session);
    let report = cli(&state, &env, &["report", "--json"]);
    assert!(!report.to_string().contains("Alicia"), "{report}");

    // The audit log: every administrator read and erase, by whom, and no customer text.
    let audit_path = state.join("audit.jsonl");
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let entries: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let admin = novapay::http::auth::fingerprint(ADMIN_KEY);
    let count = |action: &str, who: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["who"] == who)
            .count()
    };
    // Reads that found nothing (404 after the erase) read nothing and are not entries.
    assert_eq!(count("session.read", &admin), 1, "{audit}");
    assert_eq!(count("stats.read", &admin), 3, "{audit}");
    assert_eq!(count("customer.export", "cli"), 1, "{audit}");
    assert!(count("customer.export", &admin) >= 6, "{audit}");
    assert_eq!(count("customer.erase", &admin), 3, "{audit}");
    assert_eq!(count("customer.erase", "cli"), 1, "{audit}");
    let erase = entries
        .iter()
        .find(|e| e["action"] == "customer.erase" && e["user_id"] == "alice-1")
        .unwrap();
    assert_eq!(erase["counts"]["conversations"]["turns"], 4, "{erase}");
    assert!(erase["at"].as_str().unwrap().ends_with('Z'), "{erase}");
    let bitrix_erase = entries
        .iter()
        .find(|e| e["who"] == "cli" && e["action"] == "customer.erase")
        .unwrap();
    assert_eq!(bitrix_erase["channel"], "bitrix24");
    assert_eq!(bitrix_erase["user_id"], "27");
    for text in ["Alicia", "Bob-comment", "transfer", "lemon", "SWIFT"] {
        assert!(
            !audit.contains(text),
            "customer text {text:?} in the audit log"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn an_answer_in_flight_when_its_customer_is_erased_is_not_stored() {
    let state = tempfile::tempdir().unwrap();
    let sampling = SamplingParams {
        max_new_tokens: 16,
        ..SamplingParams::default()
    };
    let assistant = test_assistant(state.path(), 2, sampling);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ask = |user: &str| {
        Ask::new(
            IN_KB,
            Conversation::New(Access {
                owner: "key:test".into(),
                user_id: Some(user.into()),
                admin: false,
            }),
            Door::Rest,
        )
    };
    let generated = "A domestic transfer costs 0.5% of the amount.";
    for (user, erase) in [("dora-4", true), ("eve-5", false)] {
        let (stream, gate) = rt
            .block_on(ask_with_gated_generation(&assistant, ask(user), generated))
            .unwrap();
        let customer = Customer::user(user).unwrap();
        if erase {
            // The generation has been asked for and holds; the customer is erased meanwhile.
            let erased = assistant.erase_customer(&customer).unwrap();
            assert!(!erased.removed_anything, "nothing was stored yet");
        }
        gate.release();
        let answered = rt.block_on(stream.collect()).unwrap();
        let session = answered.session.clone().unwrap();
        let stored = assistant.memory().session(&session).unwrap();
        let exported = assistant.export_customer(&customer).unwrap();
        if erase {
            assert_eq!(stored, None, "the erased customer's answer was stored");
            assert!(exported.sessions.is_empty());
        } else {
            assert!(stored.is_some(), "without an erase the answer is stored");
            assert_eq!(exported.sessions.len(), 1);
        }
    }
}

#[test]
fn the_redis_store_erases_and_exports_a_customer_and_keeps_the_others() {
    use novapay::memory::{
        AnswerRecord, ConversationStore, Feedback, Rating, RedisStore, SessionId, SessionOwner,
        Speaker, Turn,
    };
    let redis = crate::operations::redis_memory::RedisServer::start();
    let store = RedisStore::open(&redis.url(), Some(Duration::from_secs(3600))).unwrap();
    let turn = |role, content: &str| Turn {
        role,
        content: content.into(),
        sources: vec![],
        created_at_ms: novapay::memory::now_ms(),
    };
    let talk = |id: &SessionId, user: Option<&str>, query_id: &str, comment: Option<&str>| {
        store
            .create_session(
                id,
                &SessionOwner {
                    owner: (!id.is_internal()).then(|| "key:a".to_string()),
                    user_id: user.map(str::to_string),
                },
            )
            .unwrap();
        store
            .append(id, &turn(Speaker::User, "Alicia asks"))
            .unwrap();
        store
            .append(id, &turn(Speaker::Assistant, "an answer"))
            .unwrap();
        store
            .record_answer(&AnswerRecord {
                query_id: query_id.into(),
                session: id.clone(),
                question: "Alicia asks".into(),
                answer: "an answer".into(),
                sources: vec![],
                fallback: false,
                latency_ms: 1,
                created_at_ms: novapay::memory::now_ms(),
                feedback: None,
                outcome: None,
                language: "en".into(),
                suggestions: vec![],
            })
            .unwrap();
        let feedback = Feedback {
            rating: Rating::Down,
            comment: comment.map(str::to_string),
            created_at_ms: novapay::memory::now_ms(),
            suggestion: None,
            operator: false,
        };
        assert!(store.set_feedback(query_id, &feedback).unwrap());
    };
    let alice_api = SessionId::parse("s-alice").unwrap();
    let bob_api = SessionId::parse("s-bob").unwrap();
    let alice_chat = SessionId::internal("bitrix24", "chat1157").unwrap();
    let alice_private = SessionId::internal("bitrix24", "27").unwrap();
    let other_chat = SessionId::internal("bitrix24", "31").unwrap();
    talk(&alice_api, Some("alice-1"), "q-1", Some("slow"));
    talk(&bob_api, Some("bob-2"), "q-2", Some("fine"));
    talk(&alice_chat, Some("27"), "q-3", None);
    // A private dialog from before portal users were recorded: found by its dialog id.
    talk(&alice_private, None, "q-4", None);
    talk(&other_chat, Some("31"), "q-5", None);

    let alice = Customer::user("alice-1").unwrap();
    let portal_alice = Customer::channel_user("bitrix24", "27").unwrap();
    let exported = novapay::assistant::customers::export_from_store(&store, &alice).unwrap();
    assert_eq!(exported.sessions.len(), 1);
    assert_eq!(exported.sessions[0].session_id, "s-alice");
    assert_eq!(exported.sessions[0].messages.len(), 2);
    assert_eq!(
        exported.sessions[0].answers[0]
            .rating
            .as_ref()
            .unwrap()
            .comment
            .as_deref(),
        Some("slow")
    );

    let erased = novapay::assistant::customers::erase_from_store(&store, &alice).unwrap();
    let counts = serde_json::to_value(&erased.removed.conversations).unwrap();
    assert_eq!(
        counts,
        json!({"store": "redis", "sessions": 1, "turns": 2, "answer_records": 1, "ratings": 1,
               "comments": 1})
    );
    let again = novapay::assistant::customers::erase_from_store(&store, &alice).unwrap();
    assert!(!again.removed_anything);
    let portal = novapay::assistant::customers::erase_from_store(&store, &portal_alice).unwrap();
    assert_eq!(portal.removed.conversations.counts.sessions, 2);
    assert_eq!(portal.removed.conversations.counts.answer_records, 2);

    for gone in [&alice_api, &alice_chat, &alice_private] {
        assert_eq!(store.session(gone).unwrap(), None, "{gone}");
        assert!(store.history(gone, 10).unwrap().is_empty(), "{gone}");
    }
    for q in ["q-1", "q-3", "q-4"] {
        assert_eq!(store.answer_record(q).unwrap(), None, "{q}");
    }
    let report: Vec<String> = store
        .answer_records(0, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.query_id)
        .collect();
    assert_eq!(report.len(), 2, "{report:?}");
    assert!(report.contains(&"q-2".to_string()) && report.contains(&"q-5".to_string()));
    assert!(store.session(&bob_api).unwrap().is_some());
    assert!(store.session(&other_chat).unwrap().is_some());
    // No key of Alice's is left in Redis.
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    for key in &keys {
        assert!(
            !key.contains("s-alice") && !key.contains("chat1157") && !key.ends_with(":27"),
            "{key}"
        );
        assert!(
            !key.contains("q-1") && !key.contains("q-3") && !key.contains("q-4"),
            "{key}"
        );
    }
}
