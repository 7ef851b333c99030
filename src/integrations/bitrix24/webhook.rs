//! Handler mode: checks and classifies a posted classic event, and prepares the background job that
//! answers it. The HTTP layer acknowledges the event as soon as [`WebhookHandler::accept`] returns.

use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::bot::{self, BotTexts, Outbox, Outcome};
use super::events::{BotAuth, ClassicEnvelope, Event, IncomingMessage, JoinChat};
use super::form::parse_php_form;
use super::register::{register_bot, Registration, RegistrationMode};
use super::rest::{RestClient, RetryPolicy};
use super::state_file;
use super::Bitrix24Error;
use crate::rag::Assistant;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// When set, the only application token accepted (NOVAPAY_BITRIX24_APPLICATION_TOKEN).
    pub application_token: Option<String>,
    /// Where the token that came with ONAPPINSTALL is kept, when none is configured.
    pub token_file: PathBuf,
    /// An incoming-webhook URL: replies go through it (a bot registered with `novapay bitrix24
    /// register`) instead of the per-event OAuth token of an installed application.
    pub webhook_url: Option<String>,
    /// The CLIENT_ID the bot was registered with through the incoming webhook.
    pub client_id: Option<String>,
    /// novapay's public event-handler URL: when set, installing the local application registers the
    /// bot (`imbot.register`) with the installation's OAuth token.
    pub register_on_install: Option<String>,
    pub texts: BotTexts,
    pub retry: RetryPolicy,
}

pub struct WebhookHandler {
    config: WebhookConfig,
    installed_token: Mutex<Option<String>>,
}

impl std::fmt::Debug for WebhookHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookHandler")
            .field("token_file", &self.config.token_file)
            .finish_non_exhaustive()
    }
}

/// What to do after acknowledging an event.
#[derive(Debug)]
pub enum Accepted {
    /// ONAPPINSTALL: the application token is now known; the job registers the bot.
    Installed(Option<Box<Job>>),
    /// Acknowledged, nothing to do (unknown event, bot's own message, bot deleted).
    Ignored(String),
    /// Work for a blocking thread: greet or answer.
    Job(Box<Job>),
}

#[derive(Debug)]
pub struct Job {
    work: Work,
    outbox: Outbox,
    texts: BotTexts,
}

#[derive(Debug)]
enum Work {
    Greet(JoinChat),
    Answer(IncomingMessage),
    Register { handler_url: String },
}

impl Job {
    /// The dialog the job answers in.
    pub fn dialog_id(&self) -> &str {
        match &self.work {
            Work::Greet(j) => &j.dialog_id,
            Work::Answer(m) => &m.dialog_id,
            Work::Register { .. } => "-",
        }
    }

    /// Generates and posts the reply. Blocking.
    pub fn run(self, assistant: &Assistant) -> Result<Option<Outcome>, Bitrix24Error> {
        match &self.work {
            Work::Greet(join) => {
                bot::greet(&self.outbox, &self.texts, join)?;
                Ok(None)
            }
            Work::Answer(msg) => {
                bot::handle_message(assistant, &self.outbox, &self.texts, msg).map(Some)
            }
            Work::Register { handler_url } => {
                let mode = RegistrationMode::Handler {
                    handler_url: handler_url.clone(),
                };
                let bot_id =
                    register_bot(self.outbox.client(), &Registration::novapay(mode, None))?;
                tracing::info!(bot_id, "Bitrix24 bot registered on installation");
                Ok(None)
            }
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Constant-time equality that does not reveal the length either (both sides are hashed first).
fn same_secret(a: &str, b: &str) -> bool {
    digest(a).ct_eq(&digest(b)).into()
}

impl WebhookHandler {
    pub fn open(config: WebhookConfig) -> Result<Self, Bitrix24Error> {
        let installed = state_file::read(&config.token_file)?;
        Ok(Self {
            config,
            installed_token: Mutex::new(installed),
        })
    }

    /// Verifies a posted event and says what to do with it. Nothing is done for an event whose
    /// `auth[application_token]` does not match.
    pub fn accept(&self, body: &[u8]) -> Result<Accepted, Bitrix24Error> {
        let form = parse_php_form(body).map_err(|e| Bitrix24Error::BadEvent(e.to_string()))?;
        let envelope =
            ClassicEnvelope::from_form(form).map_err(|e| Bitrix24Error::BadEvent(e.to_string()))?;
        let presented = envelope.application_token.clone().ok_or_else(|| {
            Bitrix24Error::Unauthorized("the event has no auth[application_token]".into())
        })?;
        let event = envelope
            .parse()
            .map_err(|e| Bitrix24Error::BadEvent(e.to_string()));
        let is_install = matches!(event, Ok(Event::AppInstall(_)));
        self.verify(&presented, is_install)?;
        Ok(match event? {
            Event::AppInstall(auth) => {
                Accepted::Installed(match (&self.config.register_on_install, auth) {
                    (Some(handler_url), Some(auth)) => Some(Box::new(Job {
                        outbox: Outbox::Classic {
                            client: RestClient::new(
                                &auth.client_endpoint,
                                Some(auth.access_token),
                                self.config.retry.clone(),
                            ),
                            client_id: None,
                        },
                        work: Work::Register {
                            handler_url: handler_url.clone(),
                        },
                        texts: self.config.texts.clone(),
                    })),
                    (Some(_), None) => {
                        // Bitrix24 does not always send OAuth tokens with events.
                        tracing::warn!(
                            "Bitrix24 application installed, but the event carried no OAuth token \
                             (auth[access_token], auth[client_endpoint]) to register the bot with: \
                             register it with `novapay bitrix24 register --webhook-url ... --handler-url ...`"
                        );
                        None
                    }
                    (None, _) => None,
                })
            }
            Event::JoinChat(join) => Accepted::Job(Box::new(Job {
                outbox: self.outbox(&join.bot)?,
                work: Work::Greet(join),
                texts: self.config.texts.clone(),
            })),
            Event::Message(msg) if msg.automated => {
                Accepted::Ignored("a message from a bot or the system".into())
            }
            Event::Message(msg) => Accepted::Job(Box::new(Job {
                outbox: self.outbox(&msg.bot)?,
                work: Work::Answer(msg),
                texts: self.config.texts.clone(),
            })),
            Event::BotDeleted { bot_id } => {
                tracing::warn!(bot_id, "Bitrix24: the bot was deleted on the portal");
                Accepted::Ignored("bot deleted".into())
            }
            Event::Other(name) => Accepted::Ignored(format!("event {name} is not handled")),
        })
    }

    fn verify(&self, presented: &str, is_install: bool) -> Result<(), Bitrix24Error> {
        if let Some(expected) = &self.config.application_token {
            return if same_secret(presented, expected) {
                Ok(())
            } else {
                Err(Bitrix24Error::Unauthorized(
                    "the application token does not match NOVAPAY_BITRIX24_APPLICATION_TOKEN"
                        .into(),
                ))
            };
        }
        let mut installed = self
            .installed_token
            .lock()
            .map_err(|_| Bitrix24Error::Storage("token lock poisoned".into()))?;
        match installed.as_deref() {
            Some(expected) if same_secret(presented, expected) => Ok(()),
            Some(_) => Err(Bitrix24Error::Unauthorized(format!(
                "the application token does not match the one stored at installation ({}); \
                 after reinstalling the app, delete that file",
                self.config.token_file.display()
            ))),
            None if is_install => {
                state_file::replace(&self.config.token_file, presented)?;
                *installed = Some(presented.to_string());
                tracing::info!(file = %self.config.token_file.display(), "Bitrix24 application installed");
                Ok(())
            }
            None => {
                // Nothing is trusted yet, so this unverified value is no secret; the operator needs it
                // to configure a bot registered through an incoming webhook (no ONAPPINSTALL there).
                tracing::warn!(
                    presented_application_token = presented,
                    "Bitrix24 event rejected: no application token is configured"
                );
                Err(Bitrix24Error::Unauthorized(
                    "no application token is known yet: install the application on the portal \
                 (ONAPPINSTALL) or set NOVAPAY_BITRIX24_APPLICATION_TOKEN"
                        .into(),
                ))
            }
        }
    }

    fn outbox(&self, bot: &BotAuth) -> Result<Outbox, Bitrix24Error> {
        let client = match (
            &self.config.webhook_url,
            &bot.client_endpoint,
            &bot.access_token,
        ) {
            (Some(url), _, _) => RestClient::new(url, None, self.config.retry.clone()),
            (None, Some(endpoint), Some(token)) => {
                RestClient::new(endpoint, Some(token.clone()), self.config.retry.clone())
            }
            _ => {
                return Err(Bitrix24Error::BadEvent(
                    "the event carries no client_endpoint/access_token for the bot; \
                     set NOVAPAY_BITRIX24_WEBHOOK_URL to reply through an incoming webhook"
                        .into(),
                ))
            }
        };
        Ok(Outbox::Classic {
            client,
            client_id: self.config.client_id.clone(),
        })
    }
}
