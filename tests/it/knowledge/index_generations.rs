//! Index generations with real processes: a running `novapay serve` keeps the generation it answers
//! from (also against `kill -9`), switches to a newly published one by itself, and two replicas on one
//! state folder and one Redis follow a new generation while a conversation moves between them.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::operations::redis_memory::RedisServer;
use crate::support::{index_small_kb, run_index, ServeProcess};

const VOUCHERS: &str = "# NovaPay Gift Vouchers\n\n\
NovaPay gift vouchers can be bought in the NovaPay app for 10, 25 or 50 euros and sent to anyone by \
e-mail. A gift voucher is valid for 12 months from the day it is bought. Redeem a gift voucher under \
Payments > Gift vouchers; the amount is added to your NovaPay balance.\n";
const VOUCHER_QUESTION: &str = "How long is a NovaPay gift voucher valid?";

fn current(index_dir: &Path) -> String {
    std::fs::read_to_string(index_dir.join("CURRENT"))
        .unwrap()
        .trim()
        .to_string()
}

fn generations(index_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(index_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    names.sort();
    names
}

fn with(env: &[(String, OsString)], extra: &[(&str, &str)]) -> Vec<(String, OsString)> {
    let mut env = env.to_vec();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v))),
    );
    env
}

fn sources(answer: &Value) -> Vec<String> {
    answer["source_documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["source"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for_generation(server: &ServeProcess, generation: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = server.get("/health");
        if health["index"]["generation"] == generation {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still answers from {} 60 s after {generation} was published: {}",
            server.base,
            health["index"]["generation"],
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_generation_a_server_answers_from_is_kept_until_it_lets_go_also_after_kill_9() {
    let work = tempfile::tempdir().unwrap();
    let env = index_small_kb(work.path());
    let index_dir = work.path().join("index");
    let first = current(&index_dir);

    // This server never switches: it holds the first generation for as long as it runs.
    let mut server = ServeProcess::spawn(
        "holder",
        &with(&env, &[("NOVAPAY_INDEX_POLL_SECS", "0")]),
        &work.path().join("state"),
    );
    server.wait_ready();

    let out = run_index(work.path(), &env);
    let second = current(&index_dir);
    assert_ne!(second, first);
    assert!(
        out.contains(&format!(
            "kept 1 older generation(s) that a running server still answers from ({first})"
        )),
        "{out}"
    );
    assert_eq!(generations(&index_dir), [first.clone(), second.clone()]);

    // The next run deletes the generation nobody holds, never the one in use.
    run_index(work.path(), &env);
    let third = current(&index_dir);
    assert_eq!(generations(&index_dir), [first.clone(), third.clone()]);
    let (status, health) = server.get("/health");
    assert_eq!(status, 200);
    assert_eq!(health["index"]["generation"], first.as_str());
    let (status, answer) = server.post(
        "/api/v1/query",
        &json!({ "query": "How much does a domestic transfer cost?" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(sources(&answer)[0], "fees-and-limits.md", "{answer}");

    // kill -9 runs no clean-up, but the operating system drops its lock: the generation can go.
    server.kill_hard();
    let out = run_index(work.path(), &env);
    assert!(!out.contains("kept"), "{out}");
    assert_eq!(generations(&index_dir), [current(&index_dir)]);
}

#[test]
fn replicas_on_one_state_folder_follow_a_new_generation_and_share_a_conversation() {
    let redis = RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let env = index_small_kb(work.path());
    let index_dir = work.path().join("index");
    let first = current(&index_dir);
    let env = with(
        &env,
        &[
            ("NOVAPAY_MEMORY", redis.url().as_str()),
            ("NOVAPAY_INDEX_POLL_SECS", "1"),
        ],
    );
    // One state folder (and index) for both, as replicas on a shared volume have.
    let state = work.path().join("state");
    let mut a = ServeProcess::spawn("A", &env, &state);
    let mut b = ServeProcess::spawn("B", &env, &state);
    a.wait_ready();
    b.wait_ready();
    let (_, before) = a.post("/api/v1/query", &json!({ "query": VOUCHER_QUESTION }));
    assert!(!sources(&before).contains(&"gift-vouchers.md".to_string()));

    // A new document, indexed by a separate process while a question is being answered.
    std::fs::write(work.path().join("data/gift-vouchers.md"), VOUCHERS).unwrap();
    let in_flight = std::thread::scope(|s| {
        let asking = s.spawn(|| {
            b.post(
                "/api/v1/query",
                &json!({ "query": "How much does an international transfer cost?" }),
            )
        });
        run_index(work.path(), &env);
        asking.join().unwrap()
    });
    assert_eq!(in_flight.0, 200, "{}", in_flight.1);
    let second = current(&index_dir);
    assert_ne!(second, first);
    wait_for_generation(&a, &second);
    wait_for_generation(&b, &second);

    // Both answer from the new generation; the conversation begun on A continues on B.
    let (status, first_answer) = a.post("/api/v1/query", &json!({ "query": VOUCHER_QUESTION }));
    assert_eq!(status, 200, "{first_answer}");
    assert_eq!(
        sources(&first_answer)[0],
        "gift-vouchers.md",
        "{first_answer}"
    );
    let session = first_answer["session_id"].as_str().unwrap().to_string();
    let follow_up = "Where do I redeem a gift voucher?";
    let (status, second_answer) = b.post(
        "/api/v1/query",
        &json!({ "query": follow_up, "session_id": session }),
    );
    assert_eq!(status, 200, "{second_answer}");
    assert!(
        sources(&second_answer).contains(&"gift-vouchers.md".to_string()),
        "{second_answer}"
    );
    let (status, history) = a.get(&format!("/api/v1/session/{session}"));
    assert_eq!(status, 200, "{history}");
    let said: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        said,
        [
            VOUCHER_QUESTION,
            first_answer["response"].as_str().unwrap(),
            follow_up,
            second_answer["response"].as_str().unwrap()
        ]
    );
    // The first generation is no longer used by either replica: the next run deletes it.
    run_index(work.path(), &env);
    assert!(!index_dir.join(&first).exists());
}
