//! The Redis conversation store on a real `redis-server` (started here on a free port): its contract,
//! an outage and recovery, and two `novapay serve` replicas sharing one conversation.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use novapay::memory::{
    self, ConversationStore, MemoryError, MemorySpec, RedisStore, SessionId, SessionOwner, Speaker,
    Turn,
};
use serde_json::json;

use crate::support::{index_small_kb, novapay, ServeProcess};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child without persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    fn start_with_password(password: Option<&str>) -> Self {
        let mut server = Self {
            port: free_port(),
            password: password.map(str::to_string),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: run scripts/dev/test.sh, which installs Debian's \
                 redis-server package"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ready.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "redis-server exited at start-up ({status}) on port {}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 20 s: {ready:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn turn(role: Speaker, content: &str, at: i64) -> Turn {
    Turn {
        role,
        content: content.to_string(),
        sources: if role == Speaker::Assistant {
            vec!["fees-and-limits.md".into()]
        } else {
            vec![]
        },
        created_at_ms: at,
    }
}

fn contents(turns: &[Turn]) -> Vec<&str> {
    turns.iter().map(|t| t.content.as_str()).collect()
}

#[test]
fn redis_store_keeps_sessions_in_order_and_refreshes_their_ttl() {
    let redis = RedisServer::start();
    let store = RedisStore::open(&redis.url(), Some(Duration::from_secs(3600))).unwrap();
    let id = SessionId::parse("chat-42").unwrap();

    assert_eq!(store.session(&id).unwrap(), None);
    let owner = |key: &str, user: &str| SessionOwner {
        owner: Some(key.into()),
        user_id: Some(user.into()),
    };
    let created = store.create_session(&id, &owner("key-a", "u-7")).unwrap();
    assert_eq!(created.user_id.as_deref(), Some("u-7"));
    assert_eq!(created.owner.as_deref(), Some("key-a"));
    // Creating again keeps the owner and the start time.
    let again = store
        .create_session(&id, &owner("key-b", "someone-else"))
        .unwrap();
    assert_eq!(again, created);
    assert_eq!(store.session(&id).unwrap(), Some(created.clone()));

    for i in 0..5 {
        let role = if i % 2 == 0 {
            Speaker::User
        } else {
            Speaker::Assistant
        };
        store
            .append(&id, &turn(role, &format!("turn {i}"), 1000 + i))
            .unwrap();
    }
    let all = store.history(&id, 100).unwrap();
    assert_eq!(
        contents(&all),
        ["turn 0", "turn 1", "turn 2", "turn 3", "turn 4"]
    );
    assert_eq!(all[1], turn(Speaker::Assistant, "turn 1", 1001));
    assert_eq!(
        contents(&store.history(&id, 2).unwrap()),
        ["turn 3", "turn 4"]
    );
    assert!(store.history(&id, 0).unwrap().is_empty());

    let mut raw = redis.raw();
    for key in ["novapay:session:chat-42", "novapay:turns:chat-42"] {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut raw).unwrap();
        assert!(ttl > 3500 && ttl <= 3600, "{key}: TTL {ttl}");
    }
    // A write refreshes the TTL of a conversation that has been idle.
    let _: () = redis::cmd("EXPIRE")
        .arg("novapay:turns:chat-42")
        .arg(10)
        .query(&mut raw)
        .unwrap();
    store
        .append(&id, &turn(Speaker::User, "turn 5", 1005))
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("novapay:turns:chat-42")
        .query(&mut raw)
        .unwrap();
    assert!(ttl > 3500, "TTL {ttl}");

    // Appending to an unknown session creates it, as with SQLite.
    let other = SessionId::parse("fresh").unwrap();
    store
        .append(&other, &turn(Speaker::User, "hello", 77))
        .unwrap();
    let info = store.session(&other).unwrap().unwrap();
    assert_eq!((info.user_id, info.created_at_ms), (None, 77));
    assert_eq!(info.owner, None, "a channel's session has no API owner");

    // TTL 0 keeps conversations forever, also ones written while a TTL was set.
    let forever = RedisStore::open(&redis.url(), None).unwrap();
    forever
        .append(&id, &turn(Speaker::Assistant, "turn 6", 1006))
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("novapay:turns:chat-42")
        .query(&mut raw)
        .unwrap();
    assert_eq!(ttl, -1);

    assert!(store.delete_session(&id).unwrap());
    assert_eq!(store.session(&id).unwrap(), None);
    assert!(store.history(&id, 10).unwrap().is_empty());
    assert!(!store.delete_session(&id).unwrap());
}

fn assert_unavailable_quickly<T: std::fmt::Debug>(
    what: &str,
    f: impl FnOnce() -> Result<T, MemoryError>,
    port: u16,
) {
    let started = Instant::now();
    let result = f();
    let took = started.elapsed();
    match result {
        Err(MemoryError::Unavailable(m)) => {
            assert!(
                m.contains("Redis") && m.contains(&format!("127.0.0.1:{port}")),
                "{what}: {m}"
            );
            assert!(!m.contains("s3cret"), "{what} shows the password: {m}");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
}

#[test]
fn a_redis_outage_is_reported_quickly_and_the_same_store_recovers() {
    let mut redis = RedisServer::start_with_password(Some("s3cret"));
    let port = redis.port;
    let store = RedisStore::open(&redis.url(), Some(Duration::from_secs(600))).unwrap();
    let id = SessionId::parse("outage-1").unwrap();
    store
        .append(&id, &turn(Speaker::User, "before", 1))
        .unwrap();
    assert_eq!(store.address(), format!("redis://127.0.0.1:{port}/0"));

    redis.stop();
    assert_unavailable_quickly("history", || store.history(&id, 10), port);
    assert_unavailable_quickly(
        "append",
        || store.append(&id, &turn(Speaker::User, "during", 2)),
        port,
    );
    assert_unavailable_quickly("session", || store.session(&id), port);
    // Opening while Redis is down fails at once with the address, as `serve` does at start-up.
    let spec: MemorySpec = redis.url().parse().unwrap();
    assert_unavailable_quickly(
        "open",
        || memory::open(&spec, Path::new("unused.sqlite"), None).map(|_| ()),
        port,
    );

    // Back on the same port (empty: the test server keeps nothing on disk).
    redis.restart();
    store.append(&id, &turn(Speaker::User, "after", 3)).unwrap();
    assert_eq!(contents(&store.history(&id, 10).unwrap()), ["after"]);

    // A wrong password is refused at open, with the address and without the password.
    let wrong = format!("redis://:wrong-s3cret@127.0.0.1:{port}");
    match RedisStore::open(&wrong, None) {
        Err(MemoryError::Unavailable(m)) => {
            assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
            assert!(!m.contains("s3cret"), "{m}");
        }
        Ok(_) => panic!("a wrong password was accepted"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn serve_refuses_to_start_without_redis_and_rejects_a_bad_memory_setting() {
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let out = novapay()
        .current_dir(state.path())
        .args(["serve", "--port", "0"])
        .env("NOVAPAY_STATE_DIR", state.path())
        .env(
            "NOVAPAY_MEMORY",
            format!("redis://:s3cret@127.0.0.1:{port}"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(
        !err.contains("s3cret") && !err.contains("panicked"),
        "{err}"
    );

    let out = novapay()
        .current_dir(state.path())
        .args(["serve", "--memory", "mysql://db"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("sqlite://PATH") && err.contains("redis://"),
        "{err}"
    );
}

#[test]
fn a_conversation_begun_on_one_replica_continues_on_another() {
    let mut redis = RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let mut env = index_small_kb(work.path());
    env.push(("NOVAPAY_MEMORY".into(), redis.url().into()));

    // Separate state directories: nothing is shared but Redis (and the read-only index).
    let (state_a, state_b) = (work.path().join("a"), work.path().join("b"));
    for s in [&state_a, &state_b] {
        std::fs::create_dir_all(s).unwrap();
    }
    let mut a = ServeProcess::spawn("A", &env, &state_a);
    let mut b = ServeProcess::spawn("B", &env, &state_b);
    a.wait_ready();
    b.wait_ready();

    let q1 = "How much does a domestic transfer cost?";
    let (status, first) = a.post("/api/v1/query", &json!({ "query": q1 }));
    assert_eq!(status, 200, "{first}");
    let session = first["session_id"].as_str().unwrap().to_string();

    let q2 = "And for international ones?";
    let (status, second) = b.post(
        "/api/v1/query",
        &json!({ "query": q2, "session_id": session }),
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["session_id"], session.as_str());

    let expected = [
        ("user", q1),
        ("assistant", first["response"].as_str().unwrap()),
        ("user", q2),
        ("assistant", second["response"].as_str().unwrap()),
    ];
    for replica in [&b, &a] {
        let (status, got) = replica.get(&format!("/api/v1/session/{session}"));
        assert_eq!(status, 200, "{got}");
        let messages: Vec<(&str, &str)> = got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(messages, expected, "{got}");
    }
    assert!(
        !state_a.join("conversations.sqlite").exists(),
        "replica A wrote SQLite history"
    );

    // Redis down: a clear 503 at once, and the replica stays up.
    redis.stop();
    let started = Instant::now();
    let (status, err) = a.post("/api/v1/query", &json!({ "query": q1 }));
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "storage_unavailable", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conversation storage is unavailable"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (status, err) = b.get(&format!("/api/v1/session/{session}"));
    assert_eq!(status, 503, "{err}");

    // Redis back: both replicas answer again without a restart.
    redis.restart();
    for replica in [&a, &b] {
        let (status, v) = replica.post("/api/v1/query", &json!({ "query": q1 }));
        assert_eq!(status, 200, "{v}");
    }
}
