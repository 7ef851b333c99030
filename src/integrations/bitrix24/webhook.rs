//! Handler mode: checks and classifies a posted classic event, and prepares the background job that
//! answers it. The HTTP layer acknowledges the event as soon as [`WebhookHandler::accept`] returns.
//!
//! The route is open to the internet, so the order matters: a cheap scan reads the application token
//! and the event name, the token is checked, and only then is the body parsed. Replies go to the
//! configured portal (or incoming webhook) only, never to an address an event names; an installation
//! (ONAPPINSTALL) is accepted once, and only from the configured portal when no token is configured.

use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::bot::{self, BotTexts, Outbox, Outcome};
use super::events::{BotAuth, ClassicEnvelope, Event, IncomingMessage, JoinChat};
use super::form::{parse_php_form, scan_head, EventHead};
use super::register::{register_bot, Registration, RegistrationMode};
use super::rest::{Portal, RestClient, RetryPolicy};
use super::state_file;
use super::Bitrix24Error;
use crate::assistant::Assistant;
use crate::logsafe;

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
    /// The portal (NOVAPAY_BITRIX24_PORTAL): replies with an event's OAuth token go to its REST
    /// endpoint, and without a configured token an installation is accepted only from it.
    pub portal: Option<Portal>,
    /// The portal's `member_id` (NOVAPAY_BITRIX24_MEMBER_ID): when set, an installation must carry it.
    pub member_id: Option<String>,
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
    pub fn run(
        self,
        assistant: &std::sync::Arc<Assistant>,
    ) -> Result<Option<Outcome>, Bitrix24Error> {
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
    /// `auth[application_token]` does not match, and such a body is not even parsed.
    pub fn accept(&self, body: &[u8]) -> Result<Accepted, Bitrix24Error> {
        let bad = |e: &dyn std::fmt::Display| Bitrix24Error::BadEvent(e.to_string());
        let head = scan_head(body).map_err(|e| bad(&e))?;
        let presented = head.application_token.clone().ok_or_else(|| {
            Bitrix24Error::Unauthorized("the event has no auth[application_token]".into())
        })?;
        let is_install = head
            .event
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("ONAPPINSTALL"));
        self.verify(&presented, is_install, &head)?;
        let form = parse_php_form(body).map_err(|e| bad(&e))?;
        let envelope = ClassicEnvelope::from_form(form).map_err(|e| bad(&e))?;
        Ok(match envelope.parse().map_err(|e| bad(&e))? {
            Event::AppInstall(auth) => {
                Accepted::Installed(
                    match (&self.config.register_on_install, auth, &self.config.portal) {
                        (Some(handler_url), Some(auth), Some(portal)) => Some(Box::new(Job {
                            outbox: Outbox::Classic {
                                // The configured portal, not the event's client_endpoint.
                                client: RestClient::new(
                                    &portal.rest_endpoint(),
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
                        (Some(_), Some(_), None) => {
                            tracing::warn!(
                            "Bitrix24 application installed, but NOVAPAY_BITRIX24_PORTAL is not set, so \
                             the bot is not registered: set it, or register the bot with \
                             `novapay bitrix24 register --webhook-url ... --handler-url ...`"
                        );
                            None
                        }
                        (Some(_), None, _) => {
                            // Bitrix24 does not always send OAuth tokens with events.
                            tracing::warn!(
                            "Bitrix24 application installed, but the event carried no OAuth token \
                             (auth[access_token]) to register the bot with: register it with \
                             `novapay bitrix24 register --webhook-url ... --handler-url ...`"
                        );
                            None
                        }
                        (None, _, _) => None,
                    },
                )
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
                tracing::warn!(
                    bot_id = %logsafe::user_text(&bot_id),
                    "Bitrix24: the bot was deleted on the portal"
                );
                Accepted::Ignored("bot deleted".into())
            }
            Event::Other(_) => Accepted::Ignored("event not handled".into()),
        })
    }

    fn verify(
        &self,
        presented: &str,
        is_install: bool,
        head: &EventHead,
    ) -> Result<(), Bitrix24Error> {
        // Only a hash of a refused token is logged: a valid token must never reach a log.
        let refuse = |why: String| {
            tracing::warn!(
                token = %logsafe::secret_hint(presented),
                event = %head.event.as_deref().map(logsafe::user_text).unwrap_or_default(),
                "Bitrix24 event rejected: {why}"
            );
            Err(Bitrix24Error::Unauthorized(why))
        };
        if let Some(expected) = &self.config.application_token {
            return if same_secret(presented, expected) {
                Ok(())
            } else {
                refuse(
                    "the application token does not match NOVAPAY_BITRIX24_APPLICATION_TOKEN"
                        .into(),
                )
            };
        }
        let mut installed = self
            .installed_token
            .lock()
            .map_err(|_| Bitrix24Error::Storage("token lock poisoned".into()))?;
        match installed.as_deref() {
            Some(expected) if same_secret(presented, expected) => Ok(()),
            Some(_) => refuse(format!(
                "the application token does not match the one stored at installation ({}); \
                 after reinstalling the app, delete that file",
                self.config.token_file.display()
            )),
            None if is_install => {
                if let Err(why) = self.install_origin_ok(head) {
                    return refuse(why);
                }
                state_file::replace(&self.config.token_file, presented)?;
                *installed = Some(presented.to_string());
                tracing::info!(
                    file = %self.config.token_file.display(),
                    portal = %head.domain.as_deref().map(logsafe::user_text).unwrap_or_default(),
                    "Bitrix24 application installed"
                );
                Ok(())
            }
            None => refuse(
                "no application token is known yet: install the application on the portal \
                 (ONAPPINSTALL) or set NOVAPAY_BITRIX24_APPLICATION_TOKEN"
                    .into(),
            ),
        }
    }

    /// Without a configured token, the first installation would own the bot: accept it only from the
    /// configured portal (and member id, when configured).
    fn install_origin_ok(&self, head: &EventHead) -> Result<(), String> {
        let Some(portal) = &self.config.portal else {
            return Err(
                "an installation is accepted only when NOVAPAY_BITRIX24_PORTAL (or \
                 NOVAPAY_BITRIX24_APPLICATION_TOKEN) is set"
                    .into(),
            );
        };
        if !head.domain.as_deref().is_some_and(|d| portal.is(d)) {
            return Err(format!(
                "an installation from another portal than {} was refused",
                portal.domain()
            ));
        }
        if let Some(member_id) = &self.config.member_id {
            if !head
                .member_id
                .as_deref()
                .is_some_and(|m| same_secret(m, member_id))
            {
                return Err("an installation with another member_id was refused".into());
            }
        }
        Ok(())
    }

    fn outbox(&self, bot: &BotAuth) -> Result<Outbox, Bitrix24Error> {
        // The event's client_endpoint is never used: replies go to the configured portal only.
        let client =
            match (
                &self.config.webhook_url,
                &self.config.portal,
                &bot.access_token,
            ) {
                (Some(url), _, _) => RestClient::new(url, None, self.config.retry.clone()),
                (None, Some(portal), Some(token)) => RestClient::new(
                    &portal.rest_endpoint(),
                    Some(token.clone()),
                    self.config.retry.clone(),
                ),
                (None, None, Some(_)) => return Err(Bitrix24Error::Config(
                    "set NOVAPAY_BITRIX24_PORTAL: replies go only to the configured portal, never \
                     to an address an event names"
                        .into(),
                )),
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
