//! What the bot does with an event, whichever way it arrived: answer a customer's message from the
//! knowledge base (the Bitrix24 dialog is the novapay session), greet on joining a chat, offer the
//! closest sections as a numbered list (with keyboard buttons where the chat API has them) when no
//! answer can be trusted, show the section a customer picks ("2"), and hand an Open Lines chat to a
//! human operator when the customer asks for one or the knowledge base has nothing.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::events::{IncomingMessage, JoinChat};
use super::rest::{RestClient, RestError};
use super::Bitrix24Error;
use crate::assistant::feedback::{Rate, Rating};
use crate::assistant::{
    detect_language, Answer, AnswerError, AnswerEvent, AnswerKind, Ask, Assistant, Conversation,
    Door, Language, SessionId, WhenBusy,
};
use crate::memory::{AnswerRecord, FiledOutcome};

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

/// A keyboard button that sends `value` to the chat as the customer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub text: String,
    pub value: String,
}

impl Outbox {
    pub fn send(&self, bot_id: &str, dialog_id: &str, message: &str) -> Result<(), RestError> {
        self.send_with_buttons(bot_id, dialog_id, message, &[])
    }

    /// Sends `message` with keyboard `buttons` under it where the API has keyboards (the classic
    /// `imbot.message.add`); through the v2 API the message goes without them (its text says what
    /// to write).
    pub fn send_with_buttons(
        &self,
        bot_id: &str,
        dialog_id: &str,
        message: &str,
        buttons: &[Button],
    ) -> Result<(), RestError> {
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
                if !buttons.is_empty() {
                    let buttons: Vec<serde_json::Value> = buttons
                        .iter()
                        .map(|b| {
                            json!({
                                "TEXT": b.text,
                                "ACTION": "SEND",
                                "ACTION_VALUE": b.value,
                                "DISPLAY": "LINE",
                            })
                        })
                        .collect();
                    params["KEYBOARD"] = json!({ "BUTTONS": buttons });
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

/// Whether a customer's message asks for a human ("оператор", "operator", "/operator", ...).
pub fn asks_for_operator(text: &str) -> bool {
    let t = text
        .trim()
        .trim_start_matches('/')
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_lowercase();
    const WORDS: [&str; 10] = [
        "operator",
        "оператор",
        "оператора",
        "позовите оператора",
        "соедините с оператором",
        "talk to an operator",
        "talk to a human",
        "human",
        "agent",
        "support agent",
    ];
    WORDS.contains(&t.as_str())
}

/// The number a customer picks from an offered list ("2", "2.", "№2").
fn picked_number(text: &str) -> Option<usize> {
    let t = text
        .trim()
        .trim_start_matches('№')
        .trim_end_matches(['.', ')'])
        .trim();
    if t.is_empty() || t.len() > 2 || !t.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// What the operator button and word are, in the customer's language.
fn operator_word(language: Language) -> &'static str {
    match language {
        Language::Ru => "оператор",
        Language::En => "operator",
    }
}

/// A suggestion as a chat message: a numbered list of the sections (BB codes), and what to write.
fn format_suggestions(answer: &Answer, language: Language) -> String {
    let (intro, outro) = match language {
        Language::Ru => (
            "Точного ответа я не нашёл. Возможно, поможет один из этих разделов:",
            "Напишите номер раздела, чтобы прочитать его, или «оператор» — вас переключат на \
             сотрудника поддержки.",
        ),
        Language::En => (
            "I could not find an exact answer; these sections look closest:",
            "Write the number of a section to read it, or \"operator\" to talk to a support agent.",
        ),
    };
    let mut reply = String::from(intro);
    for s in &answer.suggestions {
        let title = if s.title.trim().is_empty() || s.title == s.label() {
            String::new()
        } else {
            format!(" ({})", s.title)
        };
        reply.push_str(&format!(
            "\n[B]{}.[/B] {}{title}\n{}",
            s.id,
            s.label(),
            s.snippet
        ));
    }
    reply.push_str("\n\n");
    reply.push_str(outro);
    reply
}

/// The buttons under a suggestion: one per section, then the operator.
fn suggestion_buttons(answer: &Answer, language: Language) -> Vec<Button> {
    let mut buttons: Vec<Button> = answer
        .suggestions
        .iter()
        .map(|s| Button {
            text: format!(
                "{}. {}",
                s.id,
                crate::logsafe::truncate_chars(s.label(), 40)
            ),
            value: s.id.to_string(),
        })
        .collect();
    let word = operator_word(language);
    buttons.push(Button {
        text: match language {
            Language::Ru => "Позвать оператора".into(),
            Language::En => "Talk to an operator".into(),
        },
        value: word.into(),
    });
    buttons
}

/// The answer as a chat message: its text, then the documents it came from; a suggestion as a
/// numbered list of sections.
pub fn format_reply(answer: &Answer, language: Language) -> String {
    if answer.kind == AnswerKind::Suggested && !answer.suggestions.is_empty() {
        return format_suggestions(answer, language);
    }
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
    // The writer's portal user id goes with the dialog: `novapay forget --bitrix24-user` finds it.
    if let Some(user) = msg
        .user_id
        .as_deref()
        .filter(|u| crate::memory::Customer::channel_user("bitrix24", u).is_ok())
    {
        assistant.claim_channel_session(&session, user)?;
    }
    let language = detect_language(&question);
    if asks_for_operator(&question) {
        return operator_requested(assistant, outbox, msg, &session, language);
    }
    if let Some(n) = picked_number(&question) {
        if let Some(outcome) = show_picked(assistant, outbox, msg, &session, n)? {
            return Ok(outcome);
        }
    }
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
    let buttons = if answer.kind == AnswerKind::Suggested {
        suggestion_buttons(&answer, language)
    } else {
        Vec::new()
    };
    outbox.send_with_buttons(
        &msg.bot.bot_id,
        &msg.dialog_id,
        &format_reply(&answer, language),
        &buttons,
    )?;
    let handed_off = answer.kind == crate::assistant::AnswerKind::HandedOff
        && hand_off_if_open_line(outbox, msg)?;
    Ok(Outcome {
        answer: Some(answer),
        handed_off,
    })
}

/// The session's latest answer, when it offered sections. Blocking.
fn last_suggestion(
    assistant: &Assistant,
    session: &SessionId,
) -> Result<Option<AnswerRecord>, Bitrix24Error> {
    let last = assistant.last_answer(session)?;
    Ok(last.filter(|r| r.outcome() == FiledOutcome::Suggested))
}

/// Records on the session's latest answer what the customer did after it (a trusted channel: no
/// ownership check).
fn note_feedback(
    assistant: &Assistant,
    record: &AnswerRecord,
    suggestion: Option<usize>,
    operator: bool,
) -> Result<(), Bitrix24Error> {
    let rate = Rate {
        query_id: record.query_id.clone(),
        rating: if operator { Rating::Down } else { Rating::Up },
        comment: None,
        suggestion,
        operator,
        session: Some(record.session.clone()),
    };
    assistant.rate_answer(rate, |_| true)?;
    Ok(())
}

/// The customer answered a list of sections with a number: the section's text, or (for a number
/// not offered) the list's range. `None` when the last answer offered no sections (the number is
/// then asked as a question).
fn show_picked(
    assistant: &Assistant,
    outbox: &Outbox,
    msg: &IncomingMessage,
    session: &SessionId,
    n: usize,
) -> Result<Option<Outcome>, Bitrix24Error> {
    let Some(record) = last_suggestion(assistant, session)? else {
        return Ok(None);
    };
    let language = if record.language == "ru" {
        Language::Ru
    } else {
        Language::En
    };
    let offered = record.suggestions.len();
    let reply = match record.suggestions.iter().find(|s| s.id == n) {
        Some(s) => {
            note_feedback(assistant, &record, Some(n), false)?;
            let label = if s.section.trim().is_empty() {
                &s.title
            } else {
                &s.section
            };
            let outro = match language {
                Language::Ru => "Если это не ответ на ваш вопрос, напишите «оператор».",
                Language::En => "If this does not answer your question, write \"operator\".",
            };
            format!("[B]{label}[/B]\n{}\n\n{outro}", s.text.trim())
        }
        None => match language {
            Language::Ru => {
                format!("Выберите раздел от 1 до {offered} или напишите «оператор».")
            }
            Language::En => {
                format!("Please pick a section from 1 to {offered}, or write \"operator\".")
            }
        },
    };
    let buttons = vec![Button {
        text: match language {
            Language::Ru => "Позвать оператора".into(),
            Language::En => "Talk to an operator".into(),
        },
        value: operator_word(language).into(),
    }];
    outbox.send_with_buttons(&msg.bot.bot_id, &msg.dialog_id, &reply, &buttons)?;
    Ok(Some(Outcome {
        answer: None,
        handed_off: false,
    }))
}

/// The customer asked for a human: the Open Lines chat goes to an operator (other chats are told
/// how to reach support), and the last suggestion, if any, is marked as followed by an operator.
fn operator_requested(
    assistant: &Assistant,
    outbox: &Outbox,
    msg: &IncomingMessage,
    session: &SessionId,
    language: Language,
) -> Result<Outcome, Bitrix24Error> {
    if let Some(record) = assistant.last_answer(session)? {
        note_feedback(assistant, &record, None, true)?;
    }
    let open_line = msg.open_line && msg.chat_id.is_some();
    let reply = match (language, open_line) {
        (Language::Ru, true) => "Переключаю вас на оператора, подождите, пожалуйста.".to_string(),
        (Language::En, true) => "Connecting you to an operator, please wait.".to_string(),
        (Language::Ru, false) => assistant.config.fallback_ru.clone(),
        (Language::En, false) => assistant.config.fallback_en.clone(),
    };
    outbox.send(&msg.bot.bot_id, &msg.dialog_id, &reply)?;
    let handed_off = hand_off_if_open_line(outbox, msg)?;
    Ok(Outcome {
        answer: None,
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

    #[test]
    fn operator_requests_and_picked_numbers_are_recognised() {
        for yes in ["оператор", "Оператор!", "/operator", "Talk to an operator."] {
            assert!(asks_for_operator(yes), "{yes}");
        }
        for no in [
            "operator fees?",
            "как связаться с оператором связи по тарифам",
        ] {
            assert!(!asks_for_operator(no), "{no}");
        }
        assert_eq!(picked_number("2"), Some(2));
        assert_eq!(picked_number(" 3. "), Some(3));
        assert_eq!(picked_number("№1"), Some(1));
        assert_eq!(picked_number("2 cards"), None);
        assert_eq!(picked_number("12345"), None);
    }
}
