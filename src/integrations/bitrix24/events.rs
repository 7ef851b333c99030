//! The Bitrix24 events novapay acts on, parsed from the two delivery formats: the classic chat-bot
//! events posted to a handler (`ONIMBOT*`, PHP form fields, upper-case keys, every scalar a string) and
//! bot API v2 events pulled with `imbot.v2.Event.get` (`ONIMBOTV2*`, JSON, camelCase keys).
//! Field names follow Bitrix24's REST documentation (github.com/bitrix24/b24restdocs).

use serde_json::Value;

/// Where and how to call Bitrix24 back on behalf of the bot (classic events carry an OAuth token per
/// bot in `data[BOT][<id>]`).
#[derive(Clone, PartialEq)]
pub struct BotAuth {
    pub bot_id: String,
    /// The portal's REST root, e.g. `https://example.bitrix24.ru/rest/`.
    pub client_endpoint: Option<String>,
    pub access_token: Option<String>,
}

impl std::fmt::Debug for BotAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotAuth")
            .field("bot_id", &self.bot_id)
            .field("client_endpoint", &self.client_endpoint)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// An OAuth token and the portal REST root it works with.
#[derive(Clone, PartialEq)]
pub struct PortalAuth {
    pub client_endpoint: String,
    pub access_token: String,
}

impl std::fmt::Debug for PortalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalAuth")
            .field("client_endpoint", &self.client_endpoint)
            .finish_non_exhaustive()
    }
}

/// A customer's message to the bot.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMessage {
    pub bot: BotAuth,
    /// `27` for a private dialog, `chat1157` for a group chat or an Open Lines chat.
    pub dialog_id: String,
    /// The numeric chat id (`TO_CHAT_ID` / `chat.id`), needed for the Open Lines hand-off.
    pub chat_id: Option<String>,
    pub text: String,
    /// The chat is an Open Lines conversation, where a human operator can take over.
    pub open_line: bool,
    /// Sent by a bot or the system: never answered, so that bots cannot loop.
    pub automated: bool,
    /// The portal user who wrote it (`FROM_USER_ID` / `message.authorId`): recorded with the
    /// dialog's conversation so that an erase of that user finds it.
    pub user_id: Option<String>,
}

/// The bot was added to a chat or a dialog with it was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinChat {
    pub bot: BotAuth,
    pub dialog_id: String,
    /// Bitrix24's interface language (`ru`, `en`, ...), when sent.
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The local application was installed; `auth[application_token]` is its secret, and `auth` holds
    /// an OAuth token to call the portal with (to register the bot).
    AppInstall(Option<PortalAuth>),
    JoinChat(JoinChat),
    Message(IncomingMessage),
    BotDeleted {
        bot_id: String,
    },
    /// Any other event: acknowledged and ignored.
    Other(String),
}

#[derive(Debug, thiserror::Error)]
#[error("Bitrix24 event {event}: missing field {field}")]
pub struct EventError {
    pub event: String,
    pub field: &'static str,
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str()
}

/// A scalar as text whatever its JSON type (v2 events send numbers, classic events strings).
fn scalar(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "Y" || s == "1",
        _ => false,
    }
}

/// A classic event posted to the handler, as parsed by [`super::form::parse_php_form`].
#[derive(Debug, Clone)]
pub struct ClassicEnvelope {
    pub event: String,
    /// `auth[application_token]`: the secret that proves the request comes from the portal.
    pub application_token: Option<String>,
    pub body: Value,
}

impl ClassicEnvelope {
    pub fn from_form(body: Value) -> Result<Self, EventError> {
        let event = text(&body, &["event"])
            .ok_or(EventError {
                event: "(none)".into(),
                field: "event",
            })?
            .to_ascii_uppercase();
        let application_token = text(&body, &["auth", "application_token"])
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(Self {
            event,
            application_token,
            body,
        })
    }

    pub fn parse(&self) -> Result<Event, EventError> {
        let missing = |field| EventError {
            event: self.event.clone(),
            field,
        };
        let data = self.body.get("data").unwrap_or(&Value::Null);
        let params = data.get("PARAMS").unwrap_or(&Value::Null);
        Ok(match self.event.as_str() {
            "ONAPPINSTALL" => Event::AppInstall(
                match (
                    scalar(&self.body, &["auth", "client_endpoint"]),
                    scalar(&self.body, &["auth", "access_token"]),
                ) {
                    (Some(client_endpoint), Some(access_token)) => Some(PortalAuth {
                        client_endpoint,
                        access_token,
                    }),
                    _ => None,
                },
            ),
            "ONIMBOTMESSAGEADD" => {
                let bot = classic_bot(data, params).ok_or_else(|| missing("data[BOT]"))?;
                let dialog_id = scalar(params, &["DIALOG_ID"])
                    .ok_or_else(|| missing("data[PARAMS][DIALOG_ID]"))?;
                let message = text(params, &["MESSAGE"]).unwrap_or("").to_string();
                let chat_id =
                    scalar(params, &["TO_CHAT_ID"]).or_else(|| scalar(params, &["CHAT_ID"]));
                let open_line = text(params, &["CHAT_ENTITY_TYPE"]) == Some("LINES")
                    || text(params, &["MESSAGE_TYPE"]) == Some("L");
                let user = data.get("USER").unwrap_or(&Value::Null);
                let automated = truthy(params.get("SYSTEM"))
                    || truthy(user.get("IS_BOT"))
                    || (scalar(params, &["FROM_USER_ID"]).as_deref() == Some(bot.bot_id.as_str()));
                Event::Message(IncomingMessage {
                    bot,
                    dialog_id,
                    chat_id,
                    text: message,
                    open_line,
                    automated,
                    user_id: scalar(params, &["FROM_USER_ID"])
                        .or_else(|| scalar(params, &["AUTHOR_ID"]))
                        .or_else(|| scalar(user, &["ID"])),
                })
            }
            "ONIMBOTJOINCHAT" => {
                let bot = classic_bot(data, params).ok_or_else(|| missing("data[BOT]"))?;
                let dialog_id = scalar(params, &["DIALOG_ID"])
                    .ok_or_else(|| missing("data[PARAMS][DIALOG_ID]"))?;
                Event::JoinChat(JoinChat {
                    bot,
                    dialog_id,
                    language: scalar(params, &["LANGUAGE"]),
                })
            }
            "ONIMBOTDELETE" => Event::BotDeleted {
                bot_id: scalar(data, &["BOT_ID"]).unwrap_or_default(),
            },
            other => Event::Other(other.to_string()),
        })
    }
}

/// `data[BOT][<id>]`: the bot the event is addressed to (`PARAMS.BOT_ID` in ONIMBOTJOINCHAT,
/// `PARAMS.TO_USER_ID` in a private ONIMBOTMESSAGEADD), else the first one (novapay registers one bot).
fn classic_bot(data: &Value, params: &Value) -> Option<BotAuth> {
    let bots = data.get("BOT")?.as_object()?;
    let wanted = [scalar(params, &["BOT_ID"]), scalar(params, &["TO_USER_ID"])];
    let (key, bot) = wanted
        .iter()
        .flatten()
        .find_map(|id| bots.get_key_value(id.as_str()))
        .or_else(|| bots.iter().next())?;
    let auth = bot.get("AUTH").unwrap_or(bot);
    Some(BotAuth {
        bot_id: scalar(bot, &["BOT_ID"]).unwrap_or_else(|| key.clone()),
        client_endpoint: scalar(auth, &["client_endpoint"])
            .or_else(|| scalar(bot, &["client_endpoint"])),
        access_token: scalar(auth, &["access_token"]).or_else(|| scalar(bot, &["access_token"])),
    })
}

/// One event from `imbot.v2.Event.get`: `{eventId, type, date, data}`.
pub fn parse_v2(event: &Value) -> Result<Event, EventError> {
    let kind = text(event, &["type"]).unwrap_or("").to_ascii_uppercase();
    let missing = |field| EventError {
        event: kind.clone(),
        field,
    };
    let data = event.get("data").unwrap_or(&Value::Null);
    let bot = BotAuth {
        bot_id: scalar(data, &["bot", "id"]).unwrap_or_default(),
        client_endpoint: None,
        access_token: None,
    };
    Ok(match kind.as_str() {
        "ONIMBOTV2MESSAGEADD" => {
            let chat = data.get("chat").ok_or_else(|| missing("data.chat"))?;
            let message = data.get("message").ok_or_else(|| missing("data.message"))?;
            let dialog_id =
                scalar(chat, &["dialogId"]).ok_or_else(|| missing("data.chat.dialogId"))?;
            let user = data.get("user").unwrap_or(&Value::Null);
            Event::Message(IncomingMessage {
                user_id: scalar(message, &["authorId"]).or_else(|| scalar(user, &["id"])),
                automated: truthy(message.get("isSystem"))
                    || truthy(user.get("bot"))
                    || scalar(message, &["authorId"]).as_deref() == Some(bot.bot_id.as_str()),
                bot,
                dialog_id,
                chat_id: scalar(chat, &["id"]),
                text: text(message, &["text"]).unwrap_or("").to_string(),
                open_line: text(chat, &["entityType"]) == Some("LINES"),
            })
        }
        "ONIMBOTV2JOINCHAT" => Event::JoinChat(JoinChat {
            dialog_id: scalar(data, &["dialogId"])
                .or_else(|| scalar(data, &["chat", "dialogId"]))
                .ok_or_else(|| missing("data.dialogId"))?,
            language: scalar(data, &["language"]),
            bot,
        }),
        "ONIMBOTV2DELETE" => Event::BotDeleted { bot_id: bot.bot_id },
        other => Event::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_join_event_is_answered_by_the_bot_named_in_its_params() {
        // In a private dialog TO_USER_ID is the customer; the bot is PARAMS.BOT_ID.
        let body = json!({
            "event": "ONIMBOTJOINCHAT",
            "data": {
                "BOT": {
                    "12": {"BOT_ID": "12", "access_token": "other", "client_endpoint": "https://p/rest/"},
                    "567": {"BOT_ID": "567", "access_token": "ours", "client_endpoint": "https://p/rest/"},
                },
                "PARAMS": {"BOT_ID": "567", "TO_USER_ID": "27", "DIALOG_ID": "27", "LANGUAGE": "en"},
            },
            "auth": {"application_token": "t"},
        });
        let event = ClassicEnvelope::from_form(body).unwrap().parse().unwrap();
        let Event::JoinChat(join) = event else {
            panic!("{event:?}")
        };
        assert_eq!(join.bot.bot_id, "567");
        assert_eq!(join.bot.access_token.as_deref(), Some("ours"));
        assert_eq!(join.language.as_deref(), Some("en"));
    }

    #[test]
    fn a_v2_message_is_from_open_lines_only_when_its_chat_entity_says_so() {
        let event = |entity: &str| {
            json!({"eventId": 1, "type": "ONIMBOTV2MESSAGEADD", "data": {
                "bot": {"id": 456},
                "chat": {"id": 9, "dialogId": "chat9", "type": "chat", "entityType": entity},
                "message": {"id": 1, "authorId": 27, "text": "hi", "isSystem": false},
                "user": {"id": 27, "bot": false},
            }})
        };
        for (entity, open_line) in [("LINES", true), ("", false), ("CRM", false)] {
            let Event::Message(m) = parse_v2(&event(entity)).unwrap() else {
                panic!()
            };
            assert_eq!(m.open_line, open_line, "{entity}");
            assert_eq!(m.chat_id.as_deref(), Some("9"));
            assert!(!m.automated);
        }
    }
}
