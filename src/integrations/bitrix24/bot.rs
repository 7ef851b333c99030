//! What the bot does with an event, whichever way it arrived: answer a customer's message from the
//! knowledge base (the Bitrix24 dialog is the novapay session), greet on joining a chat, and hand an
//! Open Lines chat to a human operator when the knowledge base has no answer.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::events::{IncomingMessage, JoinChat};
use super::rest::{RestClient, RestError};
use super::Bitrix24Error;
use crate::assistant::{
    detect_language, Answer, AnswerError, AnswerEvent, Ask, Assistant, Conversation, Door,
    Language, SessionId, WhenBusy,
};

/// Bitrix24 refuses longer messages (the v2 API truncates at 20,000 characters).
const MAX_MESSAGE_CHARS: usize = 20_000;

/// How long a chat message waits for conversation storage to come back before the customer is told
/// to ask again. (A full generation queue does not make it wait: the customer gets the extractive
/// answer at once, quoted from the knowledge base and marked as such.)
const BUSY_WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct BotTexts {
    pub greeting_ru: String,
    pub greeting_en: String,
    /// Sent when no answer could be produced (model busy or failing).
    pub unavailable_ru: String,
    pub unavailable_en: String,
}

impl Default for BotTexts {
    fn default() -> Self {
        Self {
            greeting_ru:
                "Здравствуйте! Я помощник NovaPay. Отвечаю на вопросы о тарифах, лимитах, \
                          переводах и картах по базе знаний NovaPay. Задайте вопрос."
                    .into(),
            greeting_en:
                "Hello! I am the NovaPay assistant. I answer questions about fees, limits, \
                          transfers and cards from NovaPay's knowledge base. Ask away."
                    .into(),
            unavailable_ru: "Извините, сейчас я не могу ответить. Пожалуйста, повторите вопрос \
                             чуть позже или дождитесь оператора."
                .into(),
            unavailable_en:
                "Sorry, I cannot answer right now. Please ask again in a moment or wait \
                             for an operator."
                    .into(),
        }
    }
}

/// How replies leave: the classic chat-bot API or the bot API v2.
#[derive(Debug, Clone)]
pub enum Outbox {
    /// `imbot.message.add`. `client_id` is the CLIENT_ID a bot registered through an incoming webhook
    /// must send with every call.
    Classic {
        client: RestClient,
        client_id: Option<String>,
    },
    /// `imbot.v2.Chat.Message.send` through an incoming webhook, authorised by the bot's token.
    V2 {
        client: RestClient,
        bot_token: String,
    },
}

impl Outbox {
    pub fn send(&self, bot_id: &str, dialog_id: &str, message: &str) -> Result<(), RestError> {
        let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        match self {
            Outbox::Classic { client, client_id } => {
                let mut params = json!({
                    "BOT_ID": bot_id,
                    "DIALOG_ID": dialog_id,
                    "MESSAGE": message,
                });
                if let Some(id) = client_id {
                    params["CLIENT_ID"] = json!(id);
                }
                client.call("imbot.message.add", &params)?;
            }
            Outbox::V2 { client, bot_token } => {
                client.call(
                    "imbot.v2.Chat.Message.send",
                    &json!({
                        "botId": numeric(bot_id),
                        "botToken": bot_token,
                        "dialogId": dialog_id,
                        "fields": { "message": message },
                    }),
                )?;
            }
        }
        Ok(())
    }

    pub fn client(&self) -> &RestClient {
        match self {
            Outbox::Classic { client, .. } | Outbox::V2 { client, .. } => client,
        }
    }

    /// `imopenlines.bot.session.operator`: the Open Lines chat goes to the next free operator.
    pub fn hand_off(&self, chat_id: &str) -> Result<(), RestError> {
        self.client().call(
            "imopenlines.bot.session.operator",
            &json!({ "CHAT_ID": numeric(chat_id) }),
        )?;
        Ok(())
    }
}

/// Bitrix24 ids are integers in the v2 API; pass them as numbers when they are.
fn numeric(id: &str) -> serde_json::Value {
    id.parse::<u64>()
        .map(|n| json!(n))
        .unwrap_or_else(|_| json!(id))
}

/// What handling one message did.
#[derive(Debug)]
pub struct Outcome {
    pub answer: Option<Answer>,
    pub handed_off: bool,
}

/// The novapay session of a Bitrix24 dialog, so that follow-ups keep their context. It lives in the
/// `bitrix24:` channel namespace, which the HTTP API can neither name nor open.
pub fn session_for(dialog_id: &str) -> Result<SessionId, Bitrix24Error> {
    SessionId::internal("bitrix24", dialog_id).map_err(|_| {
        Bitrix24Error::BadEvent(format!(
            "unusable DIALOG_ID {:?}",
            crate::logsafe::truncate_chars(dialog_id, 80)
        ))
    })
}

/// Removes BB codes (`[USER=567]NovaPay[/USER]`, `[B]`) and the punctuation a mention leaves behind.
pub fn clean_question(text: &str) -> String {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"(?i)\[USER=\d+\][^\[]*\[/USER\]|\[/?[a-z]+(=[^\]]*)?\]")
            .expect("valid BB-code regex")
    });
    let text = re.replace_all(text, "");
    text.trim()
        .trim_start_matches([',', ':', ';'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer as a chat message: its text, then the documents it came from.
pub fn format_reply(answer: &Answer, language: Language) -> String {
    let mut reply = answer.text.trim().to_string();
    let mut names: Vec<&str> = Vec::new();
    for s in &answer.sources {
        let name = if s.title.is_empty() {
            s.source.as_str()
        } else {
            s.title.as_str()
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if !answer.fallback() && !names.is_empty() {
        let label = match language {
            Language::Ru => "Источники",
            Language::En => "Sources",
        };
        reply.push_str(&format!("\n\n[B]{label}:[/B] {}", names.join("; ")));
    }
    reply
}

/// Answers one customer message and posts the reply. Blocking: runs on a blocking thread.
pub fn handle_message(
    assistant: &Arc<Assistant>,
    outbox: &Outbox,
    texts: &BotTexts,
    msg: &IncomingMessage,
) -> Result<Outcome, Bitrix24Error> {
    let question = clean_question(&msg.text);
    if msg.automated || question.is_empty() {
        return Ok(Outcome {
            answer: None,
            handed_off: false,
        });
    }
    let session = session_for(&msg.dialog_id)?;
    let language = detect_language(&question);
    let answer = match answer_when_possible(assistant, &session, &question, BUSY_WAIT) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %crate::logsafe::user_text(&e.to_string()), dialog = %crate::logsafe::user_text(&msg.dialog_id), "Bitrix24: no answer");
            let sorry = match language {
                Language::Ru => &texts.unavailable_ru,
                Language::En => &texts.unavailable_en,
            };
            outbox.send(&msg.bot.bot_id, &msg.dialog_id, sorry)?;
            let handed_off = hand_off_if_open_line(outbox, msg)?;
            return match e {
                AnswerError::InvalidQuestion(_) => Ok(Outcome {
                    answer: None,
                    handed_off,
                }),
                other => Err(other.into()),
            };
        }
    };
    outbox.send(
        &msg.bot.bot_id,
        &msg.dialog_id,
        &format_reply(&answer, language),
    )?;
    let handed_off = answer.kind == crate::assistant::AnswerKind::HandedOff
        && hand_off_if_open_line(outbox, msg)?;
    Ok(Outcome {
        answer: Some(answer),
        handed_off,
    })
}

/// Answers through the one entry point (door `bitrix24`; extractively when the model queue is full),
/// retrying while conversation storage is unreachable (or even the places for extractive answers
/// are taken). Safe to repeat: a turn is recorded only once the answer is
/// complete.
fn answer_when_possible(
    assistant: &Arc<Assistant>,
    session: &SessionId,
    question: &str,
    patience: Duration,
) -> Result<Answer, AnswerError> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(250);
    loop {
        // A full generation queue gets the extractive answer at once (marked as a quote from the
        // knowledge base); only unreachable conversation storage makes the message wait.
        let ask = Ask::new(
            question,
            Conversation::Trusted(session.clone()),
            Door::Bitrix24,
        )
        .when_busy(WhenBusy::Extract);
        match assistant.ask_blocking(ask, &mut |_: &AnswerEvent| {}) {
            Err(e) if is_temporary(&e) && Instant::now() + pause < deadline => {
                tracing::debug!(error = %crate::logsafe::user_text(&e.to_string()), ?pause, "Bitrix24: busy, the message waits");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            other => return other.map(|answered| answered.answer),
        }
    }
}

fn is_temporary(e: &AnswerError) -> bool {
    matches!(
        e,
        AnswerError::Overloaded { .. } | AnswerError::StorageUnavailable(_)
    )
}

fn hand_off_if_open_line(outbox: &Outbox, msg: &IncomingMessage) -> Result<bool, RestError> {
    match (&msg.chat_id, msg.open_line) {
        (Some(chat_id), true) => {
            outbox.hand_off(chat_id)?;
            tracing::info!(dialog = %crate::logsafe::user_text(&msg.dialog_id), "Bitrix24: chat handed to an operator");
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub fn greet(outbox: &Outbox, texts: &BotTexts, join: &JoinChat) -> Result<(), RestError> {
    let greeting = match join.language.as_deref() {
        Some("en") | Some("de") | Some("es") | Some("pt") | Some("fr") | Some("pl") => {
            &texts.greeting_en
        }
        _ => &texts.greeting_ru,
    };
    outbox.send(&join.bot.bot_id, &join.dialog_id, greeting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_bb_codes_are_removed_from_questions() {
        assert_eq!(
            clean_question("[USER=567]NovaPay[/USER] , какая [B]комиссия[/B]?"),
            "какая комиссия?"
        );
        assert_eq!(clean_question(", how to   set limits"), "how to set limits");
    }
}
