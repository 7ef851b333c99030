//! Creates the bot on a portal, either as a classic bot whose events are posted to novapay
//! (`imbot.register`), or as a bot API v2 bot whose events novapay pulls (`imbot.v2.Bot.register` with
//! `eventMode: fetch`). Used by `novapay bitrix24 register` (through an incoming webhook) and when a
//! local application is installed (with the installation's OAuth token).

use serde_json::{json, Value};

use super::rest::RestClient;
use super::Bitrix24Error;

#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationMode {
    /// Events are posted to `handler_url` (novapay's `/integrations/bitrix24/events`).
    Handler { handler_url: String },
    /// Events are pulled by `novapay serve` in polling mode.
    Poll,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub mode: RegistrationMode,
    /// The bot's code, unique on the portal.
    pub code: String,
    pub name: String,
    pub work_position: String,
    /// Serve Open Lines too (customers' chats, with hand-off to operators).
    pub open_lines: bool,
    /// CLIENT_ID (handler mode) or botToken (polling mode): the bot's secret for calls through an
    /// incoming webhook; `None` with an application's OAuth token.
    pub secret: Option<String>,
}

/// Registers the bot and returns its id. `client` is an incoming webhook or an OAuth endpoint.
pub fn register_bot(client: &RestClient, r: &Registration) -> Result<u64, Bitrix24Error> {
    match &r.mode {
        RegistrationMode::Handler { handler_url } => {
            let mut params = json!({
                    "CODE": r.code,
                    // A plain bot that also serves Open Lines (TYPE O would serve only those).
                    "TYPE": "B",
                    "OPENLINE": if r.open_lines { "Y" } else { "N" },
                    "EVENT_HANDLER": handler_url,
                    "EVENT_MESSAGE_ADD": handler_url,
                    "EVENT_WELCOME_MESSAGE": handler_url,
                    "EVENT_BOT_DELETE": handler_url,
                    "PROPERTIES": {
                        "NAME": r.name,
                        "WORK_POSITION": r.work_position,
                        "COLOR": "AQUA",
                    },
            });
            if let Some(client_id) = &r.secret {
                params["CLIENT_ID"] = json!(client_id);
            }
            let result = client.call("imbot.register", &params)?;
            id_from(&result).ok_or_else(|| {
                Bitrix24Error::BadEvent(format!("imbot.register returned no bot id: {result}"))
            })
        }
        RegistrationMode::Poll => {
            let result = client.call(
                "imbot.v2.Bot.register",
                &json!({
                    "fields": {
                        "code": r.code,
                        "botToken": r.secret.as_deref().unwrap_or(""),
                        "type": "bot",
                        "eventMode": "fetch",
                        "isSupportOpenline": r.open_lines,
                        "properties": {
                            "name": r.name,
                            "workPosition": r.work_position,
                        },
                    }
                }),
            )?;
            result.get("bot").and_then(id_from).ok_or_else(|| {
                Bitrix24Error::BadEvent(format!(
                    "imbot.v2.Bot.register returned no bot id: {result}"
                ))
            })
        }
    }
}

/// `567`, `"567"` or `{"id": 567}`.
fn id_from(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        Value::Object(m) => m.get("id").and_then(id_from),
        _ => None,
    }
}

impl Registration {
    /// novapay's bot with its default profile.
    pub fn novapay(mode: RegistrationMode, secret: Option<String>) -> Self {
        Self {
            mode,
            code: "novapay_assistant".into(),
            name: "NovaPay".into(),
            work_position: "Помощник службы поддержки".into(),
            open_lines: true,
            secret,
        }
    }
}
