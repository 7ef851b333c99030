//! Polling mode for servers without a public URL: pull bot API v2 events with `imbot.v2.Event.get`,
//! answer each, and confirm them with the `offset` of the next call. An event is confirmed only after
//! it was handled, so a crash re-delivers it rather than losing it. The offset is also kept in a file,
//! so that a restart confirms what was already answered instead of answering it twice.
//! Pacing follows Bitrix24's advice: a pause of at least two seconds while `hasMore` is set, the
//! configured interval (5-30 s recommended) when there is nothing new.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::bot::{self, BotTexts, Outbox};
use super::events::{parse_v2, Event};
use super::rest::{RestClient, RetryPolicy};
use super::state_file;
use super::Bitrix24Error;
use crate::assistant::Assistant;

#[derive(Debug, Clone)]
pub struct PollConfig {
    /// The incoming-webhook URL the bot was registered through.
    pub webhook_url: String,
    pub bot_id: u64,
    /// The `botToken` given at `imbot.v2.Bot.register`.
    pub bot_token: String,
    /// Events per call (1-1000).
    pub batch: u32,
    /// Pause after a call that brought everything there was.
    pub idle_wait: Duration,
    /// Where the confirmed offset is kept across restarts (`None`: in memory only).
    pub offset_file: Option<PathBuf>,
    pub texts: BotTexts,
    pub retry: RetryPolicy,
}

pub struct Poller {
    config: PollConfig,
    client: RestClient,
    outbox: Outbox,
    /// Confirms every event below it on the next call; none before the first batch.
    offset: Option<u64>,
}

/// Bitrix24 asks for at least this pause between calls while `hasMore` is set.
const HAS_MORE_PAUSE: Duration = Duration::from_secs(2);

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub events: usize,
    pub answered: usize,
    pub handed_off: usize,
    pub failed: usize,
    pub has_more: bool,
}

impl Poller {
    pub fn new(config: PollConfig) -> Result<Self, Bitrix24Error> {
        if config.bot_token.trim().is_empty() {
            return Err(Bitrix24Error::Config(
                "polling needs the bot's token (NOVAPAY_BITRIX24_BOT_TOKEN)".into(),
            ));
        }
        let client = RestClient::new(&config.webhook_url, None, config.retry.clone());
        let outbox = Outbox::V2 {
            client: client.clone(),
            bot_token: config.bot_token.clone(),
        };
        let offset = match &config.offset_file {
            Some(path) => read_offset(path)?,
            None => None,
        };
        Ok(Self {
            config,
            client,
            outbox,
            offset,
        })
    }

    /// The offset the next call sends: every event below it has been handled.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// One `imbot.v2.Event.get` call and the handling of every event it returned. Blocking.
    pub fn poll_once(&mut self, assistant: &Arc<Assistant>) -> Result<PollStats, Bitrix24Error> {
        let mut params = json!({
            "botId": self.config.bot_id,
            "botToken": self.config.bot_token,
            "limit": self.config.batch.clamp(1, 1000),
        });
        if let Some(offset) = self.offset {
            params["offset"] = json!(offset);
        }
        let result = self.client.call("imbot.v2.Event.get", &params)?;
        let events = result
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut stats = PollStats {
            events: events.len(),
            has_more: result
                .get("hasMore")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ..PollStats::default()
        };
        let mut next = self.offset;
        for raw in &events {
            match self.handle(assistant, raw) {
                Ok(Some(handed_off)) => {
                    stats.answered += 1;
                    stats.handed_off += usize::from(handed_off);
                }
                Ok(None) => {}
                Err(e) => {
                    // One bad event must not block the queue: it is logged and confirmed.
                    stats.failed += 1;
                    let id = raw.get("eventId").cloned().unwrap_or(Value::Null);
                    tracing::warn!(error = %crate::logsafe::user_text(&e.to_string()), event = %id, "Bitrix24: event failed");
                }
            }
            if let Some(id) = raw.get("eventId").and_then(Value::as_u64) {
                next = Some(next.map_or(id + 1, |n| n.max(id + 1)));
            }
        }
        if let Some(n) = result.get("nextOffset").and_then(Value::as_u64) {
            next = Some(next.map_or(n, |o| o.max(n)));
        }
        if next != self.offset {
            if let (Some(path), Some(offset)) = (&self.config.offset_file, next) {
                // Not fatal: the events are answered; at worst a restart answers them again.
                if let Err(e) = state_file::replace(path, &offset.to_string()) {
                    tracing::warn!(error = %crate::logsafe::user_text(&e.to_string()), "Bitrix24: cannot keep the polling offset");
                }
            }
        }
        self.offset = next;
        Ok(stats)
    }

    /// `Some(handed_off)` for an answered message.
    fn handle(
        &self,
        assistant: &Arc<Assistant>,
        raw: &Value,
    ) -> Result<Option<bool>, Bitrix24Error> {
        let event = parse_v2(raw).map_err(|e| Bitrix24Error::BadEvent(e.to_string()))?;
        match event {
            Event::Message(mut msg) => {
                if msg.bot.bot_id.is_empty() {
                    msg.bot.bot_id = self.config.bot_id.to_string();
                }
                let outcome =
                    bot::handle_message(assistant, &self.outbox, &self.config.texts, &msg)?;
                Ok(outcome.answer.map(|_| outcome.handed_off))
            }
            Event::JoinChat(mut join) => {
                if join.bot.bot_id.is_empty() {
                    join.bot.bot_id = self.config.bot_id.to_string();
                }
                bot::greet(&self.outbox, &self.config.texts, &join)?;
                Ok(None)
            }
            Event::BotDeleted { .. } => {
                tracing::warn!("Bitrix24: the bot was deleted on the portal");
                Ok(None)
            }
            Event::AppInstall(_) | Event::Other(_) => Ok(None),
        }
    }

    /// Polls until `stop` is set. Failures are logged and retried after a growing pause.
    pub fn run(mut self, assistant: Arc<Assistant>, stop: Arc<AtomicBool>) {
        let mut failures = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let wait = match self.poll_once(&assistant) {
                Ok(stats) => {
                    failures = 0;
                    if stats.has_more {
                        HAS_MORE_PAUSE
                    } else {
                        self.config.idle_wait
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = self
                        .config
                        .idle_wait
                        .saturating_mul(1 << failures.min(5))
                        .min(Duration::from_secs(60));
                    tracing::warn!(error = %crate::logsafe::user_text(&e.to_string()), ?wait, "Bitrix24 polling failed");
                    wait
                }
            };
            sleep_unless_stopped(wait, &stop);
        }
    }
}

fn read_offset(path: &std::path::Path) -> Result<Option<u64>, Bitrix24Error> {
    state_file::read(path)?
        .map(|s| {
            s.parse().map_err(|_| {
                Bitrix24Error::Storage(format!(
                    "{} does not hold a polling offset ({s:?}); delete it to start from the oldest \
                     unconfirmed event",
                    path.display()
                ))
            })
        })
        .transpose()
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step.min(total - slept));
        slept += step;
    }
}
