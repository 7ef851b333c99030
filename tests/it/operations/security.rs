//! Regression tests for the security review's findings: each fails on the code before it. Cheap by
//! design: most use routes that never reach the model, or an off-topic question the fallback answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use novapay::http::ServerConfig;
use novapay::memory::{SessionId, Speaker, Turn};
use serde_json::{json, Value};

use crate::support::novapay;
use crate::support::{error_code, response, send, spawn_app, AppOptions, TestApp};

const OFF_TOPIC: &str = "How do I bake a chocolate cake?";

fn keyed_app() -> TestApp {
    spawn_app(AppOptions {
        config: ServerConfig {
            api_keys: vec!["key-a".into(), "key-b".into()],
            admin_keys: vec!["key-admin".into()],
            ..ServerConfig::default()
        },
        ..AppOptions::default()
    })
}

#[test]
fn a_bitrix24_dialog_cannot_be_read_or_written_through_the_api() {
    let app = spawn_app(AppOptions::default());
    let dialog = SessionId::internal("bitrix24", "chat936962").unwrap();
    app.assistant
        .memory()
        .append(
            &dialog,
            &Turn {
                role: Speaker::User,
                content: "my card is blocked".into(),
                sources: vec![],
                created_at_ms: 1,
            },
        )
        .unwrap();
    for path in [
        "/api/v1/session/bitrix24:chat936962",
        "/api/v1/session/bitrix24%3Achat936962",
    ] {
        let (s, v) = app.get(path);
        assert_eq!(
            (s, error_code(&v)),
            (400, "invalid_session_id"),
            "{path}: {v}"
        );
        let (s, _) = response(ureq::delete(&app.url(path)).call());
        assert_eq!(s, 400, "{path}");
    }
    let (s, v) = app.post_json(
        "/api/v1/query",
        &json!({"query": OFF_TOPIC, "session_id": "bitrix24:chat936962"}),
    );
    assert_eq!((s, error_code(&v)), (400, "invalid_session_id"), "{v}");
    let turns = app.assistant.memory().history(&dialog, 10).unwrap();
    assert_eq!(turns.len(), 1, "nothing was appended to the dialog");
}

#[test]
fn a_session_is_served_only_to_the_key_that_created_it_and_to_admins_for_reading() {
    let app = keyed_app();
    let (s, created) = app.post_json_as("key-a", "/api/v1/session", &json!({"user_id": "u-1"}));
    assert_eq!(s, 200, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/session/{id}");
    let (s, v) = app.post_json_as(
        "key-a",
        "/api/v1/query",
        &json!({"query": OFF_TOPIC, "session_id": id, "user_id": "u-1"}),
    );
    assert_eq!(s, 200, "{v}");

    // Another key: as if the session did not exist (404, not 403), for reading, writing, deleting.
    let (s, v) = app.get_as("key-b", &path);
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = app.post_json_as(
        "key-b",
        "/api/v1/query",
        &json!({"query": OFF_TOPIC, "session_id": id}),
    );
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    let (s, _) = app.delete_as("key-b", &path);
    assert_eq!(s, 404);
    // The same key naming another end user.
    let (s, _) = app.get_as("key-a", &format!("{path}?user_id=u-2"));
    assert_eq!(s, 404);
    let (s, _) = app.post_json_as(
        "key-a",
        "/api/v1/query",
        &json!({"query": OFF_TOPIC, "session_id": id, "user_id": "u-2"}),
    );
    assert_eq!(s, 404);

    // Support staff read it, but cannot change it.
    let (s, v) = app.get_as("key-admin", &path);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    let (s, _) = app.delete_as("key-admin", &path);
    assert_eq!(s, 404);

    // The owner still has it whole, and may delete it.
    let (s, v) = app.get_as("key-a", &format!("{path}?user_id=u-1"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    assert_eq!(app.delete_as("key-a", &path).0, 200);
    assert_eq!(app.get_as("key-a", &path).0, 404);
}

#[test]
fn fields_are_bounded() {
    let app = spawn_app(AppOptions::default());
    for (body, code) in [
        (
            json!({"query": OFF_TOPIC, "user_id": "u".repeat(129)}),
            "invalid_user_id",
        ),
        (
            json!({"query": OFF_TOPIC, "user_id": ""}),
            "invalid_user_id",
        ),
        (
            json!({"query": OFF_TOPIC, "user_id": "a\nb"}),
            "invalid_user_id",
        ),
        (
            json!({"query": OFF_TOPIC, "metadata": {"x": "y".repeat(5000)}}),
            "invalid_metadata",
        ),
    ] {
        let (s, v) = app.post_json("/api/v1/query", &body);
        assert_eq!((s, error_code(&v)), (400, code), "{v}");
    }
    let (s, v) = app.post_json("/api/v1/session", &json!({"user_id": "u".repeat(60_000)}));
    assert_eq!((s, error_code(&v)), (400, "invalid_user_id"), "{v}");
    assert_eq!(app.session_count(), 0);
}

#[test]
fn every_error_is_the_documented_json() {
    let app = spawn_app(AppOptions::default());
    let check = |(s, v): (u16, Value), status: u16, code: &str| {
        assert_eq!(s, status, "{v}");
        assert_eq!(error_code(&v), code, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    };
    // 405 from the router, with its Allow header.
    let r = ureq::get(&app.url("/api/v1/query")).call();
    let Err(ureq::Error::Status(405, resp)) = r else {
        panic!("{r:?}")
    };
    assert!(resp.header("Allow").unwrap_or("").contains("POST"));
    check(
        response(Err(ureq::Error::Status(405, resp))),
        405,
        "method_not_allowed",
    );
    // A path that is not UTF-8.
    check(app.get("/api/v1/session/%FF%FE"), 400, "bad_request");
    // Headers over the limit.
    check(
        response(
            ureq::get(&app.url("/health"))
                .set("X-Padding", &"p".repeat(20_000))
                .call(),
        ),
        431,
        "headers_too_large",
    );
    // 413 on the Bitrix24 route (its body limit), as JSON.
    check(
        send(
            ureq::post(&app.url("/integrations/bitrix24/events"))
                .set("Content-Type", "application/x-www-form-urlencoded"),
            &vec![b'a'; 300 * 1024],
        ),
        413,
        "payload_too_large",
    );
}

#[test]
fn a_large_non_json_upload_gets_415_after_it_was_read() {
    let app = spawn_app(AppOptions {
        ready: false,
        ..AppOptions::default()
    });
    // 1 MB, written fully before the answer is read: a broken pipe here was the bug.
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).unwrap();
    let body = vec![b'x'; 1024 * 1024];
    write!(
        conn,
        "POST /api/v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body).expect("the whole body was accepted");
    let mut answer = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while !answer.contains("}}") {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // Within the size limit, the type is what is wrong.
    let (s, v) = send(
        ureq::post(&app.url("/api/v1/query")).set("Content-Type", "text/plain"),
        &vec![b'x'; 32 * 1024],
    );
    assert_eq!((s, error_code(&v)), (415, "unsupported_media_type"), "{v}");
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
        ready: false,
        ..AppOptions::default()
    });
    let addr = app.base.trim_start_matches("http://").to_string();
    // Two half-sent requests take every connection slot.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (s, _) = app.get("/health");
    let waited = started.elapsed();
    assert_eq!(s, 503, "served once a slot was free");
    assert!(
        waited >= Duration::from_millis(600),
        "the third connection waited for a slot: {waited:?}"
    );
    // The slow ones were closed by the header timeout.
    for c in &mut slow {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "a half-sent request was answered"
        );
    }
    // A body that stops half-way is 408 within the body timeout.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(
        b"POST /api/v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    let n = c.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[test]
fn the_chat_page_sends_security_headers() {
    let app = spawn_app(AppOptions {
        ready: false,
        ..AppOptions::default()
    });
    let page = ureq::get(&app.url("/")).call().unwrap();
    let csp = page.header("Content-Security-Policy").unwrap().to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    let html = page.into_string().unwrap();
    assert!(html.contains("sessionStorage") && html.contains("id=\"remember\""));
    assert!(
        !html.contains("store.set(\"key\""),
        "the key is not put in localStorage unless asked"
    );
}

#[test]
fn serve_refuses_a_public_address_without_keys_and_reads_only_the_local_env_file() {
    let work = tempfile::tempdir().unwrap();
    let child = work.path().join("child");
    std::fs::create_dir_all(&child).unwrap();
    // A .env in a parent directory: never read.
    std::fs::write(
        work.path().join(".env"),
        "NOVAPAY_MEMORY=mysql://from-parent\n",
    )
    .unwrap();
    let run = |dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = novapay();
        cmd.current_dir(dir)
            .args(["serve", "--host", "0.0.0.0", "--port", "0"])
            .args(extra)
            .env("NOVAPAY_STATE_DIR", dir.join("state"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&child, &[], &[]);
    assert!(!ok);
    assert!(
        err.contains("refusing to serve") && err.contains("NOVAPAY_API_KEYS"),
        "{err}"
    );
    assert!(err.contains("NOVAPAY_ALLOW_ANONYMOUS"), "{err}");
    assert!(
        !err.contains("from-parent"),
        "the parent's .env was read: {err}"
    );

    // --env-file names it explicitly: then it is read.
    let parent_env = work.path().join(".env");
    let (ok, err) = run(&child, &["--env-file", parent_env.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("sqlite://PATH"), "{err}");
    // The working directory's .env is read.
    std::fs::write(child.join(".env"), "NOVAPAY_MEMORY=mysql://from-here\n").unwrap();
    let (ok, err) = run(&child, &[], &[]);
    assert!(!ok && err.contains("sqlite://PATH"), "{err}");
    std::fs::remove_file(child.join(".env")).unwrap();

    // Keys, or an explicit NOVAPAY_ALLOW_ANONYMOUS, get past the check (and on to loading models,
    // which fails here for lack of them: the error is then about the model, not about keys).
    for env in [
        [
            ("NOVAPAY_API_KEYS", "k-1"),
            ("NOVAPAY_LLM", "/nonexistent.gguf"),
            ("HF_HUB_OFFLINE", "1"),
        ],
        [
            ("NOVAPAY_ALLOW_ANONYMOUS", "1"),
            ("NOVAPAY_LLM", "/nonexistent.gguf"),
            ("HF_HUB_OFFLINE", "1"),
        ],
    ] {
        let (ok, err) = run(&child, &[], &env);
        assert!(!ok);
        assert!(!err.contains("refusing to serve"), "{err}");
    }
    // The state directory (conversations, tokens) is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(child.join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[test]
fn logged_customer_text_is_escaped_and_card_numbers_are_masked_everywhere() {
    let work = tempfile::tempdir().unwrap();
    let mut env = crate::support::index_small_kb(work.path());
    env.push(("NOVAPAY_LOG_QUERIES".into(), "1".into()));
    env.push(("RUST_LOG".into(), "warn,novapay=debug".into()));
    let mut serve = crate::support::ServeProcess::spawn("logs", &env, &work.path().join("state"));
    serve.wait_ready();
    let (s, v) = serve.post(
        "/api/v1/query",
        &json!({
            "query": "cake recipe 4111.1111.1111.1111?\nFORGED novapay: admin logged in\u{1b}[2J",
            "user_id": "client-5500_0000_0000_0004",
            "metadata": {"card": "card4111111111111111", "note": "x\ny"},
        }),
    );
    assert_eq!(s, 200, "{v}");
    let log = serve.log();
    assert!(log.contains("question"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line reached the log: {log}"
    );
    assert!(!log.contains('\u{1b}'), "a terminal escape reached the log");
    for digits in ["4111", "5500"] {
        assert!(!log.contains(&format!("{digits}.1111")) && !log.contains("4111111111111111"));
        assert!(!log.contains(&format!("{digits}_0000")), "{log}");
    }
    assert!(log.contains("[card number]"), "{log}");
}

/// One request over a raw connection with this `Host` header; (status, JSON body).
fn with_host(app: &TestApp, method: &str, path: &str, host: &str) -> (u16, Value) {
    let mut c = TcpStream::connect(app.base.trim_start_matches("http://")).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {raw}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

#[test]
fn a_keyless_loopback_server_answers_only_requests_addressed_to_a_loopback_name() {
    // DNS rebinding: a page from evil.example.com re-resolves its name to 127.0.0.1 and calls the
    // API as its own origin; the request still says `Host: evil.example.com`.
    let app = spawn_app(AppOptions::default());
    let port = app.base.rsplit(':').next().unwrap().to_string();
    for (method, path) in [
        ("POST", "/api/v1/session"),
        ("GET", "/api/v1/session/some-session"),
    ] {
        let (s, v) = with_host(&app, method, path, &format!("evil.example.com:{port}"));
        assert_eq!(
            (s, error_code(&v)),
            (403, "host_not_allowed"),
            "{path}: {v}"
        );
    }
    // The OpenAI paths refuse it in OpenAI's shape, and so does /mcp.
    let (s, v) = with_host(&app, "GET", "/v1/models", "evil.example.com");
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "host_not_allowed", "{v}");
    let (s, _) = with_host(&app, "POST", "/mcp", "evil.example.com");
    assert_eq!(s, 403);
    // Loopback names pass; the public routes (health, the page) serve any name.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (s, v) = with_host(&app, "POST", "/api/v1/session", &host);
        assert_eq!(s, 200, "{host}: {v}");
        let (s, v) = with_host(&app, "GET", "/v1/models", &host);
        assert_eq!(s, 200, "{host}: {v}");
    }
    let (s, v) = with_host(&app, "GET", "/health", "evil.example.com");
    assert_eq!(s, 200, "{v}");
    assert!(
        app.metrics()
            .contains("novapay_errors_total{code=\"host_not_allowed\"} 4"),
        "{}",
        app.metrics()
    );

    // With API keys the key keeps others out, whatever name the server is reached under.
    let keyed = keyed_app();
    let mut c = TcpStream::connect(keyed.base.trim_start_matches("http://")).unwrap();
    c.write_all(
        b"POST /api/v1/session HTTP/1.1\r\nHost: novapay.bank.internal\r\nAuthorization: Bearer key-a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
}
