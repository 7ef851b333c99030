//! A fake Bitrix24 portal: an HTTP server on 127.0.0.1:0 that records the REST calls novapay makes
//! and answers them as Bitrix24 does, and events in Bitrix24's wire format (PHP-style form fields
//! for handler mode).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use novapay::integrations::bitrix24::Portal;
use serde_json::{json, Value};

pub const APP_TOKEN: &str = "831c76b092f9f135d9b6b36c3a720757";
pub const BOT_ACCESS_TOKEN: &str = "a98b9d690000071b0000084400000237f0f107589d1e";

// ---------------------------------------------------------------------------------------------
// The fake portal

#[derive(Default)]
struct PortalState {
    calls: Vec<(String, Value)>,
    /// Method -> how many more calls are refused as over the rate limit.
    throttled: HashMap<String, usize>,
    /// Method -> a status to answer once (a server error after which nobody knows if it was done).
    failing: HashMap<String, u16>,
    /// Bot API v2 events not yet confirmed.
    events: Vec<Value>,
}

pub struct FakePortal {
    _rt: tokio::runtime::Runtime,
    pub base: String,
    state: Arc<Mutex<PortalState>>,
}

impl FakePortal {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(PortalState::default()));
        let app = axum::Router::new()
            .route("/rest/{*path}", axum::routing::post(rest_call))
            .with_state(state.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await });
        Self {
            _rt: rt,
            base,
            state,
        }
    }

    /// `host:port`, what the portal sends as `auth[domain]`.
    pub fn domain(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// The portal as configured (plain http allowed: it is a local test portal).
    pub fn portal(&self) -> Portal {
        Portal::parse(&self.base, true).unwrap()
    }

    /// The portal's REST root, as sent in events' `client_endpoint`.
    pub fn client_endpoint(&self) -> String {
        format!("{}/rest/", self.base)
    }

    /// An incoming-webhook URL.
    pub fn webhook_url(&self) -> String {
        format!("{}/rest/1/w3bh00ks3cret/", self.base)
    }

    pub fn fail_once(&self, method: &str, status: u16) {
        self.state
            .lock()
            .unwrap()
            .failing
            .insert(method.into(), status);
    }

    pub fn throttle(&self, method: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .throttled
            .insert(method.into(), times);
    }

    pub fn queue_events(&self, events: Vec<Value>) {
        self.state.lock().unwrap().events.extend(events);
    }

    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, body)| body.clone())
            .collect()
    }

    pub fn all_methods(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.calls.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Waits (polling) until `method` was called `count` times; background replies take a while on
    /// two CPU cores.
    pub fn wait_for(&self, method: &str, count: usize) -> Vec<Value> {
        self.wait_until(&format!("{count} calls of {method}"), || {
            self.calls(method).len() >= count
        });
        self.calls(method)
    }

    pub fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; calls: {:?}",
                self.all_methods()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn rest_call(
    State(state): State<Arc<Mutex<PortalState>>>,
    Path(path): Path<String>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let method = path.rsplit('/').next().unwrap_or("").to_string();
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    s.calls.push((method.clone(), params.clone()));
    if let Some(left) = s.throttled.get_mut(&method).filter(|n| **n > 0) {
        *left -= 1;
        // As documented: classic methods answer 503, the bot API v2 answers 429.
        return if method.starts_with("imbot.v2.") {
            (
                StatusCode::TOO_MANY_REQUESTS,
                Json(
                    json!({"error": "OPERATION_TIME_LIMIT", "error_description": "Rate limit exceeded"}),
                ),
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
                ),
            )
        };
    }
    if let Some(status) = s.failing.remove(&method) {
        return (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal error"})),
        );
    }
    let ok = |result: Value| (StatusCode::OK, Json(json!({ "result": result })));
    match method.as_str() {
        "imbot.message.add" => ok(json!(84331)),
        "imbot.v2.Chat.Message.send" => ok(json!({"id": 790, "uuidMap": {}})),
        "imopenlines.bot.session.operator" => ok(json!(true)),
        "imbot.register" => ok(json!(567)),
        "imbot.v2.Bot.register" if params["fields"]["code"] == "taken" => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "BOT_CODE_ALREADY_TAKEN", "error_description": "Bot code is already taken"}),
            ),
        ),
        "imbot.v2.Bot.register" => {
            ok(json!({"bot": {"id": 456, "code": params["fields"]["code"]}}))
        }
        "imbot.v2.Event.get" => {
            // Events below `offset` are confirmed and gone, as on a real portal.
            if let Some(offset) = params["offset"].as_u64() {
                s.events
                    .retain(|e| e["eventId"].as_u64().unwrap() >= offset);
            }
            let limit = params["limit"].as_u64().unwrap_or(100) as usize;
            let batch: Vec<Value> = s.events.iter().take(limit).cloned().collect();
            let next = batch
                .last()
                .map(|e| e["eventId"].as_u64().unwrap() + 1)
                .or(params["offset"].as_u64())
                .unwrap_or(0);
            ok(
                json!({"events": batch, "nextOffset": next, "hasMore": s.events.len() > batch.len()}),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}),
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Events in Bitrix24's wire format

/// Encodes JSON the way PHP's `http_build_query` does: `data[PARAMS][MESSAGE]=...`.
pub fn php_form(v: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut form_urlencoded::Serializer<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}[{k}]")
                    };
                    walk(&key, child, out);
                }
            }
            Value::String(s) => {
                out.append_pair(prefix, s);
            }
            other => {
                out.append_pair(prefix, &other.to_string());
            }
        }
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    walk("", v, &mut out);
    out.finish()
}

pub fn bot_block(endpoint: &str) -> Value {
    let auth = json!({
        "access_token": BOT_ACCESS_TOKEN,
        "expires_in": "3600",
        "scope": "imbot",
        "domain": "novapay-test.bitrix24.ru",
        "client_endpoint": endpoint,
        "member_id": "bac1cd5c8940947a75e0d71b1a84e348",
        "user_id": "567",
        "application_token": APP_TOKEN,
    });
    let mut bot = auth.clone();
    bot["AUTH"] = auth;
    bot["BOT_ID"] = json!("567");
    bot["BOT_CODE"] = json!("novapay_assistant");
    json!({ "567": bot })
}

/// ONIMBOTMESSAGEADD as in Bitrix24's documentation; `open_line` makes it an Open Lines chat.
pub fn message_event(
    endpoint: &str,
    token: &str,
    dialog_id: &str,
    text: &str,
    open_line: bool,
) -> Value {
    let mut params = json!({
        "MESSAGE": text,
        "MESSAGE_TYPE": "P",
        "FROM_USER_ID": "27",
        "DIALOG_ID": dialog_id,
        "TO_CHAT_ID": "1407",
        "AUTHOR_ID": "27",
        "SYSTEM": "N",
        "TO_USER_ID": "567",
        "MESSAGE_ID": "84331",
        "CHAT_TYPE": "P",
        "LANGUAGE": "ru",
    });
    if open_line {
        params["MESSAGE_TYPE"] = json!("L");
        params["CHAT_TYPE"] = json!("L");
        params["CHAT_ENTITY_TYPE"] = json!("LINES");
        params["CHAT_ID"] = json!("1407");
    }
    json!({
        "event": "ONIMBOTMESSAGEADD",
        "event_handler_id": "403",
        "data": {
            "BOT": bot_block(endpoint),
            "PARAMS": params,
            "USER": {"ID": "27", "NAME": "Emily Smith", "IS_BOT": "N"},
        },
        "ts": "1771928985",
        "auth": {
            "access_token": "user-token",
            "domain": "novapay-test.bitrix24.ru",
            "client_endpoint": endpoint,
            "member_id": "bac1cd5c8940947a75e0d71b1a84e348",
            "application_token": token,
        },
    })
}

/// ONAPPINSTALL from the portal at `domain`.
pub fn install_event(token: &str, domain: &str) -> Value {
    json!({
        "event": "ONAPPINSTALL",
        "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"},
        "ts": "1771928000",
        "auth": {"application_token": token, "domain": domain,
                 "member_id": "bac1cd5c8940947a75e0d71b1a84e348"},
    })
}

/// ONAPPINSTALL with the installing user's OAuth token, as a local application receives it.
pub fn install_event_with_auth(token: &str, endpoint: &str, domain: &str) -> Value {
    let mut event = install_event(token, domain);
    event["auth"]["access_token"] = json!("install-access-token");
    event["auth"]["client_endpoint"] = json!(endpoint);
    event["auth"]["scope"] = json!("imbot,imopenlines");
    event
}
