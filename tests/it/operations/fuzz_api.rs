//! A fuzz test driven by the OpenAPI document: every operation in it, every field of its request
//! body and every parameter, with wrong types, boundaries, unicode, oversized and missing values,
//! broken JSON and wrong content types. Every answer must have a status the document lists for that
//! operation, and every error must be the documented JSON body.
//!
//! The test command runs a bounded number of cases (NOVAPAY_FUZZ_CASES, default 300);
//! `scripts/dev/fuzz-api.sh` runs many more. NOVAPAY_FUZZ_SEED picks another sequence.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use novapay::engine::SamplingParams;
use novapay::http::{openapi_json, ServerConfig};
use novapay::integrations::bitrix24::{
    BotTexts, Portal, RetryPolicy, WebhookConfig, WebhookHandler,
};
use serde_json::{json, Map, Value};

use crate::support::{spawn_app, AppOptions};

const KEY: &str = "fuzz-key";

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Strings that tend to break parsers, loggers and storage.
fn nasty_string(rng: &mut Rng, max_len: Option<u64>) -> String {
    let max = max_len.unwrap_or(64) as usize;
    let options: Vec<String> = vec![
        String::new(),
        " ".into(),
        "a".repeat(max),
        "a".repeat(max + 1),
        "я".repeat(max + 1),
        "😀".repeat(max.min(300)),
        "\u{0}\u{1}\u{7f}".into(),
        "line\nforged INFO line\r\n\u{1b}[31mred".into(),
        "\u{202e}evil\u{2066}".into(),
        "e\u{301}\u{200b}\u{feff}".into(),
        "bitrix24:27".into(),
        "../../etc/passwd".into(),
        "%00%ff".into(),
        "card 4111 1111 1111 1111".into(),
        "<script>alert(1)</script>".into(),
        "How much does a domestic transfer cost?".into(),
        "SELECT * FROM sessions; --".into(),
        "x".repeat(70 * 1024),
        format!("{:x}", rng.next()),
    ];
    rng.pick(&options).clone()
}

fn nasty_value(rng: &mut Rng, schema: &Value) -> Option<Value> {
    let max_len = schema["maxLength"].as_u64();
    Some(match rng.below(11) {
        0 => return None, // missing
        1 => Value::Null,
        2 => json!(rng.next() as i64),
        3 => json!(1.5e308),
        4 => json!(rng.below(2) == 0),
        5 => json!([nasty_string(rng, max_len), 1]),
        6 => json!({"nested": {"deep": [nasty_string(rng, max_len)]}}),
        _ => match schema["type"].as_str() {
            Some("boolean") => json!(rng.below(2) == 0),
            Some("object") => {
                let mut m = Map::new();
                for _ in 0..rng.below(5) {
                    m.insert(
                        nasty_string(rng, Some(8)),
                        json!(nasty_string(rng, Some(8))),
                    );
                }
                Value::Object(m)
            }
            _ => json!(nasty_string(rng, max_len)),
        },
    })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or("");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// One request body for an operation's JSON schema.
fn json_body(rng: &mut Rng, schema: &Value) -> Vec<u8> {
    match rng.below(12) {
        0 => b"{not json".to_vec(),
        1 => b"".to_vec(),
        2 => b"[]".to_vec(),
        3 => b"null".to_vec(),
        4 => {
            let mut with_bom = vec![0xEF, 0xBB, 0xBF];
            with_bom.extend_from_slice(br#"{"query":"fees"}"#);
            with_bom
        }
        5 => vec![0xff, 0xfe, b'{', b'}'],
        _ => {
            let mut m = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    if let Some(v) = nasty_value(rng, prop) {
                        m.insert(name.clone(), v);
                    }
                }
            }
            if rng.below(4) == 0 {
                m.insert("unexpected".into(), json!(nasty_string(rng, None)));
            }
            Value::Object(m).to_string().into_bytes()
        }
    }
}

fn form_body(rng: &mut Rng) -> Vec<u8> {
    let opts: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"event=ONIMBOTMESSAGEADD&auth[application_token]=wrong".to_vec(),
        b"event=ONAPPINSTALL&auth[application_token]=x&auth[domain]=evil.example".to_vec(),
        "a[]=1&".repeat(2000).into_bytes(),
        b"data[PARAMS=1".to_vec(),
        b"a[1][2][3][4][5][6][7][8][9]=1".to_vec(),
        b"event=ONIMBOTMESSAGEADD&auth[application_token]=fuzz-app-token&data[PARAMS][DIALOG_ID]=bad id&data[BOT][1][BOT_ID]=1".to_vec(),
        b"event=%ff%fe&auth[application_token]=%00".to_vec(),
        vec![b'a'; 300 * 1024],
        nasty_string(rng, None).into_bytes(),
    ];
    rng.pick(&opts).clone()
}

fn path_value(rng: &mut Rng) -> String {
    let opts = [
        "abc-123",
        "bitrix24:27",
        "bitrix24%3A27",
        "%FF%FE",
        "%00",
        "..",
        "a%20b",
        "%F0%9F%98%80",
    ];
    let long = "x".repeat(65);
    if rng.below(9) == 0 {
        long
    } else {
        rng.pick(&opts).to_string()
    }
}

#[test]
fn the_api_answers_every_fuzzed_request_with_a_documented_status_and_json_errors() {
    let cases: usize = std::env::var("NOVAPAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("NOVAPAY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let dir = tempfile::tempdir().unwrap();
    let handler = WebhookHandler::open(WebhookConfig {
        application_token: Some("fuzz-app-token".into()),
        token_file: dir.path().join("token"),
        webhook_url: None,
        client_id: None,
        // Nothing listens there: replies fail quietly in the background.
        portal: Some(Portal::parse("http://127.0.0.1:9", true).unwrap()),
        member_id: None,
        register_on_install: None,
        texts: BotTexts::default(),
        retry: RetryPolicy {
            attempts: 1,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
    })
    .unwrap();
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            api_keys: vec![KEY.into()],
            bitrix24: Some(Arc::new(handler)),
            ..ServerConfig::default()
        },
        queue_depth: 2,
        sampling: SamplingParams {
            max_new_tokens: 2,
            ..SamplingParams::default()
        },
        ..AppOptions::default()
    });
    let doc: Value = serde_json::from_str(openapi_json()).unwrap();
    let mut operations: Vec<(String, String, Value, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                operations.push((path.clone(), method.clone(), op.clone(), item.clone()));
            }
        }
    }
    let mut rng = Rng(seed);
    let mut seen: BTreeSet<(String, String, u16)> = BTreeSet::new();
    let mut failures: Vec<String> = Vec::new();
    for case in 0..cases {
        let (path, method, op, _item) = &operations[case % operations.len()];
        let mut url_path = path.replace("{id}", &path_value(&mut rng));
        if path.contains("{id}") && rng.below(3) == 0 {
            url_path.push_str(&format!("?user_id={}", path_value(&mut rng)));
        }
        let url = app.url(&url_path);
        let mut req = ureq::request(&method.to_uppercase(), &url).timeout(Duration::from_secs(120));
        match rng.below(8) {
            0 => {}
            1 => req = req.set("Authorization", "Bearer wrong"),
            2 => req = req.set("Authorization", "Basic !!!"),
            _ => req = req.set("Authorization", &format!("Bearer {KEY}")),
        }
        if rng.below(25) == 0 {
            req = req.set("X-Big", &"h".repeat(20_000));
        }
        let body_schema = &op["requestBody"]["content"];
        let result = if let Some(schema) = body_schema.get("application/json") {
            let body = json_body(&mut rng, resolve(&doc, &schema["schema"]));
            let ct = *rng.pick(&[
                "application/json",
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                "",
            ]);
            if !ct.is_empty() {
                req = req.set("Content-Type", ct);
            }
            req.send_bytes(&body)
        } else if body_schema
            .get("application/x-www-form-urlencoded")
            .is_some()
        {
            req.set("Content-Type", "application/x-www-form-urlencoded")
                .send_bytes(&form_body(&mut rng))
        } else {
            req.call()
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                failures.push(format!("{method} {url_path}: transport error {e}"));
                continue;
            }
        };
        let status = resp.status();
        let content_type = resp.content_type().to_string();
        let mut text = String::new();
        let _ = resp.into_reader().take(4 << 20).read_to_string(&mut text);
        seen.insert((path.clone(), method.clone(), status));
        let documented = op["responses"].get(status.to_string()).is_some();
        if !documented {
            failures.push(format!(
                "{method} {url_path}: status {status} is not documented: {}",
                text.chars().take(200).collect::<String>()
            ));
            continue;
        }
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let ok = v["error"]["code"].is_string() && v["error"]["message"].is_string();
            let loading_health = path == "/health" && status == 503;
            if !(ok || loading_health) {
                failures.push(format!(
                    "{method} {url_path}: {status} without the JSON error body: {}",
                    text.chars().take(200).collect::<String>()
                ));
            }
        } else if content_type == "application/json"
            && serde_json::from_str::<Value>(&text).is_err()
        {
            failures.push(format!("{method} {url_path}: {status} with invalid JSON"));
        }
    }
    // Methods a route does not have: 405 with the JSON body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = app.url(&path.replace("{id}", "abc"));
        for method in ["PUT", "PATCH"] {
            if item.get(method.to_lowercase()).is_none() {
                let r = ureq::request(method, &url)
                    .set("Authorization", &format!("Bearer {KEY}"))
                    .call();
                let Err(ureq::Error::Status(405, resp)) = r else {
                    failures.push(format!("{method} {path}: expected 405, got {r:?}"));
                    continue;
                };
                let v: Value = resp.into_json().unwrap_or(Value::Null);
                if !v["error"]["code"].is_string() {
                    failures.push(format!("{method} {path}: 405 without the JSON body"));
                }
            }
        }
    }
    eprintln!("fuzz: {cases} cases, statuses seen: {seen:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The cases reached every operation, and more than one outcome of each body-taking one.
    let ops_seen: BTreeSet<(&String, &String)> = seen.iter().map(|(p, m, _)| (p, m)).collect();
    assert_eq!(ops_seen.len(), operations.len());
}
