//! Bitrix24 chat bot. Two ways to receive events, chosen by configuration:
//! - handler mode: Bitrix24 posts classic `ONIMBOT*` events to `POST /integrations/bitrix24/events`;
//!   each is checked against the application token, acknowledged at once, and answered in the
//!   background with `imbot.message.add` (Bitrix24 never retries an event and throttles slow handlers);
//! - polling mode, for servers without a public URL: novapay pulls bot API v2 events with
//!   `imbot.v2.Event.get` and replies with `imbot.v2.Chat.Message.send`.
//!
//! `novapay bitrix24 register` registers the bot through an incoming-webhook URL.

mod bot;
pub mod events;
pub mod form;
mod poll;
mod register;
pub mod rest;
mod state_file;
mod webhook;

pub use bot::{clean_question, format_reply, session_for, BotTexts, Outbox, Outcome};
pub use events::{Event, IncomingMessage, JoinChat};
pub use poll::{PollConfig, PollStats, Poller};
pub use register::{register_bot, Registration, RegistrationMode};
pub use rest::{check_webhook_url, Portal, RestClient, RestError, RetryPolicy};
pub use webhook::{Accepted, Job, WebhookConfig, WebhookHandler};

use crate::assistant::AnswerError;

#[derive(Debug, thiserror::Error)]
pub enum Bitrix24Error {
    /// The event's application token is missing or wrong: nothing is done.
    #[error("{0}")]
    Unauthorized(String),
    #[error("bad Bitrix24 event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("Bitrix24 settings: {0}")]
    Storage(String),
    #[error("Bitrix24 configuration: {0}")]
    Config(String),
}
