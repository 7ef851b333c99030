//! The Bitrix24 chat bot against a fake portal: an HTTP server on 127.0.0.1:0 that records the REST
//! calls novapay makes and answers them as Bitrix24 does. Events are sent in Bitrix24's real format
//! (PHP-style form fields for handler mode, `imbot.v2.Event.get` JSON for polling mode), with the
//! real small models answering from the repository's knowledge base.

use crate::support::assert_success;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novapay::engine::SamplingParams;
use novapay::http::ServerConfig;
use novapay::integrations::bitrix24::{
    BotTexts, PollConfig, Poller, RetryPolicy, WebhookConfig, WebhookHandler,
};
use novapay::memory::{ConversationStore, SessionId};
use serde_json::{json, Value};

use crate::support::portal::{
    bot_block, install_event, install_event_with_auth, message_event, php_form, APP_TOKEN,
    BOT_ACCESS_TOKEN,
};
use crate::support::{
    index_small_kb, novapay, send, spawn_app, suggesting_assistant, test_assistant, AppOptions,
    FakePortal, ServeProcess, TestApp,
};

const IN_KB_QUESTION: &str = "How much does a domestic transfer cost?";
const OFF_TOPIC_QUESTION: &str = "Как испечь торт с вишней?";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    }
}

fn handler_app(config: WebhookConfig) -> TestApp {
    spawn_app(AppOptions {
        config: ServerConfig {
            bitrix24: Some(Arc::new(WebhookHandler::open(config).unwrap())),
            ..ServerConfig::default()
        },
        sampling: SamplingParams {
            max_new_tokens: 24,
            ..SamplingParams::default()
        },
        ..AppOptions::default()
    })
}

fn webhook_config(
    token: Option<&str>,
    token_file: &std::path::Path,
    portal: &FakePortal,
) -> WebhookConfig {
    WebhookConfig {
        application_token: token.map(str::to_string),
        token_file: token_file.to_path_buf(),
        webhook_url: None,
        client_id: None,
        portal: Some(portal.portal()),
        member_id: None,
        register_on_install: None,
        texts: BotTexts::default(),
        retry: fast_retry(),
    }
}

/// The contents of a Bitrix24 dialog's stored turns (the HTTP API cannot read them).
fn dialog_history(app: &TestApp, dialog_id: &str) -> Vec<String> {
    app.assistant
        .memory()
        .history(&SessionId::internal("bitrix24", dialog_id).unwrap(), 100)
        .unwrap()
        .into_iter()
        .map(|t| t.content)
        .collect()
}

fn post_event(app: &TestApp, event: &Value) -> (u16, Value) {
    send(
        ureq::post(&app.url("/integrations/bitrix24/events"))
            .set("Content-Type", "application/x-www-form-urlencoded"),
        php_form(event).as_bytes(),
    )
}

/// A fake portal and a server in handler mode with the application token configured.
fn portal_and_handler() -> (FakePortal, TestApp, tempfile::TempDir) {
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let app = handler_app(webhook_config(
        Some(APP_TOKEN),
        &dir.path().join("token"),
        &portal,
    ));
    (portal, app, dir)
}

/// A customer's message with the right application token, from `portal`.
fn post_message(
    app: &TestApp,
    portal: &FakePortal,
    dialog_id: &str,
    text: &str,
    open_line: bool,
) -> (u16, Value) {
    post_event(
        app,
        &message_event(
            &portal.client_endpoint(),
            APP_TOKEN,
            dialog_id,
            text,
            open_line,
        ),
    )
}

/// Accepted events whose background work has ended, by `novapay_bitrix24_jobs_total`.
fn jobs_ended(app: &TestApp) -> u64 {
    app.metrics()
        .lines()
        .filter(|l| l.starts_with("novapay_bitrix24_jobs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until `accepted` jobs have ended, and asserts no other job ran. Only an event the server
/// acknowledged as accepted (or an installation that registers the bot) starts background work,
/// so once they have all ended, everything the server will ever send for the events posted so far
/// is in the portal's log: the signal that "nothing else happened", instead of a sleep.
fn wait_for_jobs(portal: &FakePortal, app: &TestApp, accepted: u64) {
    portal.wait_until(&format!("{accepted} Bitrix24 jobs to end"), || {
        jobs_ended(app) >= accepted
    });
    assert_eq!(jobs_ended(app), accepted, "{}", app.metrics());
}

// ---------------------------------------------------------------------------------------------
// Handler mode

#[test]
fn a_message_is_acknowledged_then_answered_with_sources_in_the_same_dialog() {
    let (portal, app, _dir) = portal_and_handler();

    let (status, ack) = post_message(&app, &portal, "27", IN_KB_QUESTION, false);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["result"], "accepted");

    let sent = portal.wait_for("imbot.message.add", 1);
    let reply = &sent[0];
    assert_eq!(reply["BOT_ID"], "567");
    assert_eq!(reply["DIALOG_ID"], "27");
    assert_eq!(
        reply["auth"], BOT_ACCESS_TOKEN,
        "replies use the bot's OAuth token"
    );
    let text = reply["MESSAGE"].as_str().unwrap();
    assert!(text.contains("[B]Sources:[/B]"), "{text}");
    assert!(text.contains("Fees"), "the fee document is cited: {text}");
    let answer = text.split("\n\n[B]Sources").next().unwrap();
    assert!(!answer.trim().is_empty(), "{text}");

    // The dialog is the session: the follow-up is understood from its history.
    let (status, _) = post_message(&app, &portal, "27", "And for international ones?", false);
    assert_eq!(status, 200);
    let sent = portal.wait_for("imbot.message.add", 2);
    let follow_up = sent[1]["MESSAGE"].as_str().unwrap();
    assert!(
        follow_up.contains("[B]Sources:[/B]") && follow_up.contains("International"),
        "{follow_up}"
    );
    let messages = dialog_history(&app, "27");
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0], IN_KB_QUESTION);
    assert_eq!(messages[2], "And for international ones?");
    assert!(
        portal.calls("imopenlines.bot.session.operator").is_empty(),
        "an answered question is not handed off"
    );
}

#[test]
fn a_burst_of_messages_is_answered_instead_of_being_refused() {
    // One generation at a time and one waiting: the HTTP API would answer 429 to the rest, but a
    // chat has nobody to retry, so each message gets an answer with its sources (generated, or
    // quoted from the knowledge base when the queue is full).
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            bitrix24: Some(Arc::new(
                WebhookHandler::open(webhook_config(
                    Some(APP_TOKEN),
                    &dir.path().join("t"),
                    &portal,
                ))
                .unwrap(),
            )),
            ..ServerConfig::default()
        },
        queue_depth: 1,
        sampling: SamplingParams {
            max_new_tokens: 12,
            ..SamplingParams::default()
        },
        ..AppOptions::default()
    });
    let dialogs = ["41", "42", "43", "44"];
    for d in dialogs {
        let (status, _) = post_message(&app, &portal, d, IN_KB_QUESTION, false);
        assert_eq!(status, 200);
    }
    let sent = portal.wait_for("imbot.message.add", dialogs.len());
    let mut answered: Vec<&str> = sent
        .iter()
        .map(|m| {
            let text = m["MESSAGE"].as_str().unwrap();
            // Answered (the fallback cites no sources); not "no Sorry" in the text, which is
            // the model's to say on this CPU (issue 25).
            assert!(text.contains("[B]Sources:[/B]"), "{text}");
            m["DIALOG_ID"].as_str().unwrap()
        })
        .collect();
    answered.sort();
    assert_eq!(answered, dialogs);
}

#[test]
fn a_wrong_or_missing_application_token_is_401_and_nothing_is_done() {
    let (portal, app, _dir) = portal_and_handler();
    let endpoint = portal.client_endpoint();

    let (status, body) = post_event(
        &app,
        &message_event(&endpoint, "not-the-token", "27", OFF_TOPIC_QUESTION, false),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    let mut no_token = message_event(&endpoint, APP_TOKEN, "27", OFF_TOPIC_QUESTION, false);
    no_token["auth"]
        .as_object_mut()
        .unwrap()
        .remove("application_token");
    let (status, body) = post_event(&app, &no_token);
    assert_eq!(status, 401, "{body}");

    // Not an event at all: without a token it is not even parsed (401); with the token, 400.
    let post_raw = |body: &[u8]| {
        send(
            ureq::post(&app.url("/integrations/bitrix24/events"))
                .set("Content-Type", "application/x-www-form-urlencoded"),
            body,
        )
    };
    let (status, body) = post_raw(b"data[PARAMS=1");
    assert_eq!(status, 401, "{body}");
    let (status, body) =
        post_raw(format!("auth[application_token]={APP_TOKEN}&data[PARAMS=1").as_bytes());
    assert_eq!(status, 400, "{body}");

    // 16,000 `[]` keys took 11 s of CPU in the old parser, before any token check.
    for token in ["", APP_TOKEN] {
        let flood = format!(
            "auth[application_token]={token}&{}",
            "a%5B%5D=1&".repeat(16_000)
        );
        let started = Instant::now();
        let (status, body) = post_raw(flood.as_bytes());
        assert!(status == 400 || status == 401, "{status} {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    // A correct event afterwards is answered, and is the only thing the portal ever saw.
    let (status, _) = post_message(&app, &portal, "27", OFF_TOPIC_QUESTION, false);
    assert_eq!(status, 200);
    wait_for_jobs(&portal, &app, 1);
    assert_eq!(portal.all_methods(), ["imbot.message.add"]);
    assert_eq!(
        dialog_history(&app, "27").len(),
        2,
        "rejected events left no trace in memory"
    );
}

#[test]
fn the_application_token_sent_at_install_is_kept_and_required() {
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("state/bitrix24_application_token");
    let app = handler_app(webhook_config(None, &token_file, &portal));
    let endpoint = portal.client_endpoint();

    // Before installation nothing is trusted.
    let (status, body) = post_message(&app, &portal, "27", OFF_TOPIC_QUESTION, false);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("install"),
        "{body}"
    );

    // An installation from another portal is refused, and nothing is stored.
    let (status, body) = post_event(&app, &install_event("attacker-token", "evil.bitrix24.ru"));
    assert_eq!(status, 401, "{body}");
    assert!(!token_file.exists());

    let (status, body) = post_event(&app, &install_event(APP_TOKEN, &portal.domain()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "installed");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), APP_TOKEN);

    // A second "install" with another token does not replace it, even naming the right portal.
    let (status, _) = post_event(&app, &install_event("attacker-token", &portal.domain()));
    assert_eq!(status, 401);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), APP_TOKEN);
    let (status, _) = post_event(
        &app,
        &message_event(&endpoint, "attacker-token", "27", OFF_TOPIC_QUESTION, false),
    );
    assert_eq!(status, 401);

    let (status, body) = post_message(&app, &portal, "27", OFF_TOPIC_QUESTION, false);
    assert_eq!(status, 200, "{body}");
    assert_eq!(portal.wait_for("imbot.message.add", 1).len(), 1);

    // A restarted server still knows the token.
    let again = WebhookHandler::open(webhook_config(None, &token_file, &portal)).unwrap();
    let body = php_form(&message_event(
        &endpoint,
        "attacker-token",
        "27",
        "hi",
        false,
    ));
    assert!(again.accept(body.as_bytes()).is_err());
}

#[test]
fn replies_go_to_the_configured_portal_whatever_address_the_event_names() {
    let (portal, app, _dir) = portal_and_handler();
    let elsewhere = FakePortal::start();
    // A valid event naming another REST endpoint (an internal address, for an attacker).
    let (status, _) = post_event(
        &app,
        &message_event(
            &elsewhere.client_endpoint(),
            APP_TOKEN,
            "27",
            OFF_TOPIC_QUESTION,
            false,
        ),
    );
    assert_eq!(status, 200);
    wait_for_jobs(&portal, &app, 1);
    assert_eq!(portal.all_methods(), ["imbot.message.add"]);
    assert!(
        elsewhere.all_methods().is_empty(),
        "{:?}",
        elsewhere.all_methods()
    );
}

#[test]
fn without_a_token_or_a_portal_no_installation_is_accepted() {
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let handler = WebhookHandler::open(WebhookConfig {
        portal: None,
        ..webhook_config(None, &token_file, &portal)
    })
    .unwrap();
    let install = php_form(&install_event(APP_TOKEN, &portal.domain()));
    let e = handler.accept(install.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("NOVAPAY_BITRIX24_PORTAL"), "{e}");
    assert!(!token_file.exists());

    // With a member id configured, the install must carry it.
    let handler = WebhookHandler::open(WebhookConfig {
        member_id: Some("the-real-member-id".into()),
        ..webhook_config(None, &token_file, &portal)
    })
    .unwrap();
    assert!(handler.accept(install.as_bytes()).is_err());
    assert!(!token_file.exists());
    let mut genuine = install_event(APP_TOKEN, &portal.domain());
    genuine["auth"]["member_id"] = json!("the-real-member-id");
    assert!(handler.accept(php_form(&genuine).as_bytes()).is_ok());
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), APP_TOKEN);
}

#[test]
fn serve_refuses_a_plain_http_portal_unless_allowed() {
    let out = novapay()
        .args(["serve", "--port", "0", "--bitrix24", "handler"])
        .env("NOVAPAY_BITRIX24_PORTAL", "http://novapay.bitrix24.ru")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOVAPAY_BITRIX24_ALLOW_HTTP"), "{err}");
    let out = novapay()
        .args(["serve", "--port", "0", "--bitrix24", "handler"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOVAPAY_BITRIX24_PORTAL"), "{err}");
}

#[test]
fn installing_the_application_registers_the_bot_when_the_handler_url_is_set() {
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let handler_url = "https://novapay.example.ru/integrations/bitrix24/events";
    let app = handler_app(WebhookConfig {
        register_on_install: Some(handler_url.into()),
        ..webhook_config(None, &dir.path().join("token"), &portal)
    });
    let (status, body) = post_event(
        &app,
        &install_event_with_auth(APP_TOKEN, &portal.client_endpoint(), &portal.domain()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "installed");
    let register = portal.wait_for("imbot.register", 1);
    let r = &register[0];
    assert_eq!(r["auth"], "install-access-token");
    assert_eq!(r["CODE"], "novapay_assistant");
    assert_eq!(r["OPENLINE"], "Y");
    assert_eq!(r["EVENT_MESSAGE_ADD"], handler_url);
    assert_eq!(r["EVENT_WELCOME_MESSAGE"], handler_url);
    assert!(
        r.get("CLIENT_ID").is_none(),
        "an application bot has no CLIENT_ID"
    );
}

#[test]
fn an_open_lines_chat_without_an_answer_goes_to_an_operator_after_retries_on_503() {
    let (portal, app, _dir) = portal_and_handler();
    portal.throttle("imbot.message.add", 2);

    let (status, ack) = post_message(&app, &portal, "chat1407", OFF_TOPIC_QUESTION, true);
    assert_eq!(status, 200, "{ack}");

    let handoff = portal.wait_for("imopenlines.bot.session.operator", 1);
    assert_eq!(handoff[0]["CHAT_ID"], 1407);
    assert_eq!(handoff[0]["auth"], BOT_ACCESS_TOKEN);
    // Two 503 QUERY_LIMIT_EXCEEDED answers, then the reply went through.
    let sent = portal.calls("imbot.message.add");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter().all(|c| c == &sent[0]),
        "the same reply is retried"
    );
    let text = sent[2]["MESSAGE"].as_str().unwrap();
    assert!(
        text.contains("оператор") || text.contains("поддержк"),
        "the Russian fallback: {text}"
    );
    assert!(
        !text.contains("Источники"),
        "a fallback cites nothing: {text}"
    );
    assert_eq!(
        portal.all_methods(),
        [
            "imbot.message.add",
            "imbot.message.add",
            "imbot.message.add",
            "imopenlines.bot.session.operator"
        ]
    );
}

#[test]
fn a_suggestion_is_a_numbered_list_with_buttons_a_number_shows_the_section_and_operator_hands_off()
{
    let portal = FakePortal::start();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            bitrix24: Some(Arc::new(
                WebhookHandler::open(webhook_config(
                    Some(APP_TOKEN),
                    &dir.path().join("token"),
                    &portal,
                ))
                .unwrap(),
            )),
            ..ServerConfig::default()
        },
        assistant: Some(suggesting_assistant(dir.path())),
        ..AppOptions::default()
    });
    let session = SessionId::internal("bitrix24", "chat1407").unwrap();

    let (status, _) = post_message(&app, &portal, "chat1407", IN_KB_QUESTION, true);
    assert_eq!(status, 200);
    let sent = portal.wait_for("imbot.message.add", 1);
    let list = sent[0]["MESSAGE"].as_str().unwrap();
    let record = app.assistant.last_answer(&session).unwrap().unwrap();
    assert_eq!(record.outcome(), novapay::memory::FiledOutcome::Suggested);
    let offered = &record.suggestions;
    assert!(!offered.is_empty(), "{record:?}");
    for s in offered {
        assert!(list.contains(&format!("[B]{}.[/B] ", s.id)), "{list}");
    }
    assert!(list.contains("operator"), "{list}");
    assert!(!list.contains("[B]Sources:[/B]"), "{list}");
    // Keyboard buttons: one per section, then the operator; each sends its value as the customer.
    let buttons = sent[0]["KEYBOARD"]["BUTTONS"].as_array().unwrap();
    assert_eq!(buttons.len(), offered.len() + 1, "{:#}", sent[0]);
    for (button, s) in buttons.iter().zip(offered) {
        assert_eq!(button["ACTION"], "SEND");
        assert_eq!(button["ACTION_VALUE"], s.id.to_string());
    }
    assert_eq!(buttons.last().unwrap()["ACTION_VALUE"], "operator");
    assert!(portal.calls("imopenlines.bot.session.operator").is_empty());

    // The customer picks the last section: its text, and the pick is filed as the one that helped.
    let pick = offered.last().unwrap();
    let (status, _) = post_message(&app, &portal, "chat1407", &pick.id.to_string(), true);
    assert_eq!(status, 200);
    let sent = portal.wait_for("imbot.message.add", 2);
    let shown = sent[1]["MESSAGE"].as_str().unwrap();
    assert!(shown.contains(pick.text.trim()), "{shown}");
    let helped = app
        .assistant
        .memory()
        .answer_record(&record.query_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        helped.feedback.as_ref().and_then(|f| f.suggestion),
        Some(pick.id)
    );
    // A number the list did not offer is answered with the list's range.
    let (status, _) = post_message(&app, &portal, "chat1407", "9", true);
    assert_eq!(status, 200);
    let sent = portal.wait_for("imbot.message.add", 3);
    let range = sent[2]["MESSAGE"].as_str().unwrap();
    assert!(
        range.contains(&format!("1 to {}", offered.len())),
        "{range}"
    );

    // "operator": the Open Lines chat goes to an operator, and the suggestion is filed as followed
    // by one.
    let (status, _) = post_message(&app, &portal, "chat1407", "operator", true);
    assert_eq!(status, 200);
    let handoff = portal.wait_for("imopenlines.bot.session.operator", 1);
    assert_eq!(handoff[0]["CHAT_ID"], 1407);
    let after = app
        .assistant
        .memory()
        .answer_record(&record.query_id)
        .unwrap()
        .unwrap();
    assert!(after.feedback.unwrap().operator, "{record:?}");
    let report = app.assistant.support_report(0).unwrap();
    assert_eq!(report.outcomes.suggested_then_operator, 1, "{report:?}");
    wait_for_jobs(&portal, &app, 4);
}

#[test]
fn joining_a_chat_greets_and_bot_messages_are_not_answered() {
    let (portal, app, _dir) = portal_and_handler();
    let endpoint = portal.client_endpoint();

    let join = json!({
        "event": "ONIMBOTJOINCHAT",
        "data": {
            "BOT": bot_block(&endpoint),
            "PARAMS": {"CHAT_TYPE": "P", "MESSAGE_TYPE": "P", "BOT_ID": "567", "USER_ID": "27",
                       "TO_USER_ID": "27", "FROM_USER_ID": "567", "DIALOG_ID": "27", "LANGUAGE": "ru"},
            "USER": {"ID": "27", "NAME": "Emily Smith"},
        },
        "auth": {"application_token": APP_TOKEN},
    });
    let (status, body) = post_event(&app, &join);
    assert_eq!(status, 200, "{body}");
    let greeting = portal.wait_for("imbot.message.add", 1);
    assert_eq!(greeting[0]["DIALOG_ID"], "27");
    assert!(
        greeting[0]["MESSAGE"].as_str().unwrap().contains("NovaPay"),
        "{greeting:?}"
    );

    let mut from_bot = message_event(&endpoint, APP_TOKEN, "27", IN_KB_QUESTION, false);
    from_bot["data"]["USER"]["IS_BOT"] = json!("Y");
    let (status, body) = post_event(&app, &from_bot);
    assert_eq!(status, 200);
    assert_eq!(body["result"], "ignored", "{body}");

    let other = json!({"event": "ONIMBOTMESSAGEUPDATE", "auth": {"application_token": APP_TOKEN}});
    let (status, body) = post_event(&app, &other);
    assert_eq!(status, 200);
    assert_eq!(body["result"], "ignored");
    // The greeting was the only job: the ignored events started none.
    wait_for_jobs(&portal, &app, 1);
    assert_eq!(portal.calls("imbot.message.add").len(), 1);
}

#[test]
fn the_events_route_is_404_when_the_integration_is_off() {
    let app = spawn_app(AppOptions {
        ready: false,
        ..AppOptions::default()
    });
    let (status, body) = post_event(&app, &install_event(APP_TOKEN, "novapay-test.bitrix24.ru"));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NOVAPAY_BITRIX24_MODE"));
}

// ---------------------------------------------------------------------------------------------
// Polling mode

fn v2_message(event_id: u64, dialog_id: &str, chat_id: u64, text: &str, open_line: bool) -> Value {
    json!({
        "eventId": event_id,
        "type": "ONIMBOTV2MESSAGEADD",
        "date": "2026-11-25T10:30:00+03:00",
        "data": {
            "bot": {"id": 456, "code": "novapay_assistant", "type": "bot", "eventMode": "fetch"},
            "message": {"id": 789 + event_id, "chatId": chat_id, "authorId": 27, "text": text,
                        "isSystem": false, "params": {}},
            "chat": {"id": chat_id, "dialogId": dialog_id, "type": "chat",
                     "entityType": if open_line { "LINES" } else { "" }},
            "user": {"id": 27, "active": true, "name": "Emily Smith", "bot": false},
            "language": "ru",
        },
    })
}

#[test]
fn polling_mode_pulls_events_answers_them_and_confirms_them() {
    let portal = FakePortal::start();
    portal.throttle("imbot.v2.Event.get", 1);
    portal.queue_events(vec![
        json!({
            "eventId": 1001,
            "type": "ONIMBOTV2JOINCHAT",
            "data": {"bot": {"id": 456}, "dialogId": "27", "chat": {"id": 5, "dialogId": "27"},
                     "user": {"id": 27}, "language": "en"},
        }),
        v2_message(1002, "27", 5, IN_KB_QUESTION, false),
        v2_message(1003, "chat9", 9, OFF_TOPIC_QUESTION, true),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let assistant = test_assistant(
        dir.path(),
        4,
        SamplingParams {
            max_new_tokens: 24,
            ..SamplingParams::default()
        },
    );
    let poll_config = PollConfig {
        webhook_url: portal.webhook_url(),
        bot_id: 456,
        bot_token: "bot-token-1".into(),
        batch: 50,
        idle_wait: Duration::from_millis(100),
        offset_file: Some(dir.path().join("state/bitrix24_poll_offset_456")),
        texts: BotTexts::default(),
        retry: fast_retry(),
    };
    let mut poller = Poller::new(poll_config.clone()).unwrap();

    let stats = poller.poll_once(&assistant).unwrap();
    assert_eq!(stats.events, 3);
    assert_eq!(stats.answered, 2);
    assert_eq!(stats.handed_off, 1);
    assert_eq!(stats.failed, 0);

    let gets = portal.calls("imbot.v2.Event.get");
    assert_eq!(gets.len(), 2, "one 429 OPERATION_TIME_LIMIT, then a retry");
    assert_eq!(gets[1]["botId"], 456);
    assert_eq!(gets[1]["botToken"], "bot-token-1");
    assert!(gets[1].get("offset").is_none(), "nothing to confirm yet");

    let sent = portal.calls("imbot.v2.Chat.Message.send");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent
        .iter()
        .all(|s| s["botId"] == 456 && s["botToken"] == "bot-token-1"));
    assert_eq!(sent[0]["dialogId"], "27");
    assert!(sent[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("Hello"));
    assert_eq!(sent[1]["dialogId"], "27");
    let answer = sent[1]["fields"]["message"].as_str().unwrap();
    assert!(
        answer.contains("[B]Sources:[/B]") && answer.contains("Fees"),
        "{answer}"
    );
    assert_eq!(sent[2]["dialogId"], "chat9");
    let handoff = portal.calls("imopenlines.bot.session.operator");
    assert_eq!(handoff.len(), 1);
    assert_eq!(handoff[0]["CHAT_ID"], 9);

    // The next poll confirms the three events; nothing is delivered twice.
    let stats = poller.poll_once(&assistant).unwrap();
    assert_eq!(stats.events, 0);
    let gets = portal.calls("imbot.v2.Event.get");
    assert_eq!(gets.last().unwrap()["offset"], 1004);
    assert_eq!(portal.calls("imbot.v2.Chat.Message.send").len(), 3);

    // The dialog is the session here too.
    let history = assistant
        .memory()
        .history(&SessionId::internal("bitrix24", "27").unwrap(), 10)
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].content, IN_KB_QUESTION);

    // A restarted poller confirms from the kept offset instead of starting over.
    portal.queue_events(vec![v2_message(1004, "27", 5, "", false)]);
    let mut restarted = Poller::new(poll_config).unwrap();
    assert_eq!(restarted.offset(), Some(1004));
    let stats = restarted.poll_once(&assistant).unwrap();
    assert_eq!(stats.events, 1);
    assert_eq!(
        portal.calls("imbot.v2.Event.get").last().unwrap()["offset"],
        1004
    );
    assert_eq!(restarted.offset(), Some(1005));
}

#[test]
fn a_reply_refused_with_a_server_error_is_not_sent_twice() {
    // A 500 may come after the message was posted: retrying could show the customer two copies.
    let (portal, app, _dir) = portal_and_handler();
    portal.fail_once("imbot.message.add", 500);
    let (status, _) = post_message(&app, &portal, "27", OFF_TOPIC_QUESTION, false);
    assert_eq!(status, 200);
    wait_for_jobs(&portal, &app, 1);
    assert_eq!(portal.all_methods(), ["imbot.message.add"]);
    // The operator sees the reply that was not delivered.
    assert_eq!(
        crate::support::metric(
            &app.metrics(),
            r#"novapay_bitrix24_jobs_total{outcome="failed"}"#
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// `novapay bitrix24 register`

#[test]
fn register_creates_the_bot_through_an_incoming_webhook_and_prints_the_settings() {
    let portal = FakePortal::start();
    let out = novapay()
        .args(["bitrix24", "register", "--webhook-url"])
        .arg(portal.webhook_url())
        .args([
            "--handler-url",
            "https://novapay.example.ru/integrations/bitrix24/events",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let calls = portal.calls("imbot.register");
    assert_eq!(calls.len(), 1);
    let r = &calls[0];
    assert_eq!(r["CODE"], "novapay_assistant");
    assert_eq!(r["OPENLINE"], "Y");
    for key in [
        "EVENT_MESSAGE_ADD",
        "EVENT_WELCOME_MESSAGE",
        "EVENT_BOT_DELETE",
    ] {
        assert_eq!(
            r[key], "https://novapay.example.ru/integrations/bitrix24/events",
            "{key}"
        );
    }
    assert_eq!(r["PROPERTIES"]["NAME"], "NovaPay");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let client_id = r["CLIENT_ID"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("NOVAPAY_BITRIX24_CLIENT_ID={client_id}")),
        "{stdout}"
    );
    assert!(stdout.contains("NOVAPAY_BITRIX24_MODE=handler"), "{stdout}");

    let out = novapay()
        .args(["bitrix24", "register", "--poll", "--webhook-url"])
        .arg(portal.webhook_url())
        .output()
        .unwrap();
    assert_success(&out);
    let v2 = portal.calls("imbot.v2.Bot.register");
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0]["fields"]["eventMode"], "fetch");
    assert_eq!(v2[0]["fields"]["properties"]["name"], "NovaPay");
    let token = v2[0]["fields"]["botToken"].as_str().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("NOVAPAY_BITRIX24_BOT_ID=456"), "{stdout}");
    assert!(
        stdout.contains(&format!("NOVAPAY_BITRIX24_BOT_TOKEN={token}")),
        "{stdout}"
    );

    // A portal error is a message, not a panic, and the webhook secret is not printed.
    let out = novapay()
        .args([
            "bitrix24",
            "register",
            "--poll",
            "--code",
            "taken",
            "--webhook-url",
        ])
        .arg(portal.webhook_url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BOT_CODE_ALREADY_TAKEN"), "{err}");
    assert!(
        !err.contains("w3bh00ks3cret") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn serve_in_polling_mode_without_a_bot_token_says_what_to_set() {
    let out = novapay()
        .args(["serve", "--bitrix24", "poll"])
        .env(
            "NOVAPAY_BITRIX24_WEBHOOK_URL",
            "https://b24.example.ru/rest/1/s3cret/",
        )
        .env("NOVAPAY_BITRIX24_BOT_ID", "456")
        .env("NOVAPAY_PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOVAPAY_BITRIX24_BOT_TOKEN"), "{err}");
    assert!(err.contains("novapay bitrix24 register --poll"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// `novapay serve` with the integration selected by configuration

fn bitrix24_env(work: &std::path::Path, settings: &[(&str, String)]) -> Vec<(String, OsString)> {
    let mut env = index_small_kb(work);
    env.extend(
        settings
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v))),
    );
    env
}

#[test]
fn serve_in_polling_mode_answers_the_portals_events() {
    let portal = FakePortal::start();
    portal.queue_events(vec![v2_message(2001, "31", 6, IN_KB_QUESTION, false)]);
    let work = tempfile::tempdir().unwrap();
    let env = bitrix24_env(
        work.path(),
        &[
            ("NOVAPAY_BITRIX24_MODE", "poll".into()),
            ("NOVAPAY_BITRIX24_WEBHOOK_URL", portal.webhook_url()),
            ("NOVAPAY_BITRIX24_ALLOW_HTTP", "1".into()),
            ("NOVAPAY_BITRIX24_BOT_ID", "456".into()),
            ("NOVAPAY_BITRIX24_BOT_TOKEN", "bot-token-1".into()),
            ("NOVAPAY_BITRIX24_POLL_INTERVAL_MS", "100".into()),
            ("NOVAPAY_MAX_NEW_TOKENS", "16".into()),
        ],
    );
    let mut serve = ServeProcess::spawn("poll", &env, &work.path().join("state"));
    serve.wait_ready();

    let sent = portal.wait_for("imbot.v2.Chat.Message.send", 1);
    assert_eq!(sent[0]["dialogId"], "31");
    let text = sent[0]["fields"]["message"].as_str().unwrap();
    assert!(
        text.contains("[B]Sources:[/B]") && text.contains("Fees"),
        "{text}"
    );
    // The event is confirmed by the next poll and never answered twice.
    portal.wait_until("the event to be confirmed", || {
        portal
            .calls("imbot.v2.Event.get")
            .iter()
            .any(|c| c["offset"] == 2002)
    });
    assert_eq!(portal.calls("imbot.v2.Chat.Message.send").len(), 1);
    // The dialog's history is kept, and the HTTP API cannot open it.
    let stored =
        novapay::memory::SqliteStore::open(&work.path().join("state/conversations.sqlite"))
            .unwrap();
    let dialog = SessionId::internal("bitrix24", "31").unwrap();
    assert_eq!(stored.history(&dialog, 10).unwrap().len(), 2);
    let (status, body) = serve.get("/api/v1/session/bitrix24:31");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn serve_in_handler_mode_keeps_the_install_token_and_answers() {
    let portal = FakePortal::start();
    let work = tempfile::tempdir().unwrap();
    let env = bitrix24_env(
        work.path(),
        &[
            ("NOVAPAY_BITRIX24_MODE", "handler".into()),
            ("NOVAPAY_BITRIX24_PORTAL", portal.base.clone()),
            ("NOVAPAY_BITRIX24_ALLOW_HTTP", "1".into()),
            ("NOVAPAY_MAX_NEW_TOKENS", "16".into()),
        ],
    );
    let state = work.path().join("state");
    let mut serve = ServeProcess::spawn("handler", &env, &state);
    serve.wait_ready();
    let post = |event: &Value| {
        send(
            ureq::post(&format!("{}/integrations/bitrix24/events", serve.base))
                .set("Content-Type", "application/x-www-form-urlencoded"),
            php_form(event).as_bytes(),
        )
    };
    let endpoint = portal.client_endpoint();
    // Before installation, a token that is not yet trusted is still only logged as a hash.
    let (status, _) = post(&message_event(
        &endpoint,
        "attacker-token-7f3a9c",
        "27",
        IN_KB_QUESTION,
        false,
    ));
    assert_eq!(status, 401);
    let (status, body) = post(&install_event(APP_TOKEN, &portal.domain()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(state.join("bitrix24_application_token")).unwrap(),
        APP_TOKEN
    );
    let (status, _) = post(&message_event(
        &endpoint,
        "attacker-token-7f3a9c",
        "27",
        IN_KB_QUESTION,
        false,
    ));
    assert_eq!(status, 401);
    let (status, body) = post(&message_event(
        &endpoint,
        APP_TOKEN,
        "27",
        IN_KB_QUESTION,
        false,
    ));
    assert_eq!(status, 200, "{body}");
    let sent = portal.wait_for("imbot.message.add", 1);
    assert_eq!(sent[0]["DIALOG_ID"], "27");
    assert!(
        sent[0]["MESSAGE"].as_str().unwrap().contains("Fees"),
        "{sent:?}"
    );
    // The refused token reached the log as a hash only; the real one never did.
    let log = serve.log();
    assert!(log.contains("Bitrix24 event rejected"), "{log}");
    assert!(
        !log.contains("attacker-token-7f3a9c") && !log.contains(APP_TOKEN),
        "{log}"
    );
}
