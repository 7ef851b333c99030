//! Flags of the Bitrix24 chat bot (`serve --bitrix24 ...`) and of `novapay bitrix24`.

use clap::{Args, Subcommand};

/// The Bitrix24 chat bot in `serve`.
#[derive(Args, Debug, Clone)]
pub struct Bitrix24Args {
    /// off; handler (Bitrix24 posts events to /integrations/bitrix24/events); or poll (novapay pulls
    /// bot API v2 events, for servers without a public URL).
    #[arg(
        long = "bitrix24",
        env = "NOVAPAY_BITRIX24_MODE",
        value_enum,
        default_value = "off"
    )]
    pub mode: Bitrix24Mode,
    /// Handler mode: the application token events must carry (default: the one sent at ONAPPINSTALL,
    /// kept in <state-dir>/bitrix24_application_token).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_APPLICATION_TOKEN",
        hide_env_values = true
    )]
    pub bitrix24_application_token: Option<String>,
    /// Incoming-webhook URL (https://PORTAL/rest/USER/SECRET/): polling mode, and handler mode for a
    /// bot registered with `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_WEBHOOK_URL", hide_env_values = true)]
    pub bitrix24_webhook_url: Option<String>,
    /// Handler mode with an incoming webhook: the CLIENT_ID printed by `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_CLIENT_ID", hide_env_values = true)]
    pub bitrix24_client_id: Option<String>,
    /// Handler mode with a local application: novapay's public event URL
    /// (https://HOST/integrations/bitrix24/events); installing the application then registers the bot.
    #[arg(long, env = "NOVAPAY_BITRIX24_HANDLER_URL")]
    pub bitrix24_handler_url: Option<String>,
    /// Handler mode: the portal's address (https://PORTAL.bitrix24.ru). Replies go only to its REST
    /// endpoint (never to an address an event names), and without an application token an
    /// installation is accepted only from this portal, once.
    #[arg(long, env = "NOVAPAY_BITRIX24_PORTAL")]
    pub bitrix24_portal: Option<String>,
    /// Handler mode: the portal's member_id; when set, an installation must carry it.
    #[arg(long, env = "NOVAPAY_BITRIX24_MEMBER_ID", hide_env_values = true)]
    pub bitrix24_member_id: Option<String>,
    /// Allow plain http:// for the portal and the webhook URL (a test portal only; https otherwise).
    #[arg(long, env = "NOVAPAY_BITRIX24_ALLOW_HTTP", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub bitrix24_allow_http: bool,
    /// Polling mode: the bot id printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_ID")]
    pub bitrix24_bot_id: Option<u64>,
    /// Polling mode: the bot token printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_TOKEN", hide_env_values = true)]
    pub bitrix24_bot_token: Option<String>,
    /// Polling mode: milliseconds to wait once there are no more events (Bitrix24 recommends 5-30 s).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_POLL_INTERVAL_MS",
        default_value_t = 5000
    )]
    pub bitrix24_poll_interval_ms: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitrix24Mode {
    Off,
    Handler,
    Poll,
}

#[derive(Subcommand, Debug)]
pub enum Bitrix24Command {
    /// Register the chat bot on a portal through an incoming webhook (scopes imbot, imopenlines) and
    /// print the settings `serve` needs.
    Register {
        /// Incoming-webhook URL: https://PORTAL/rest/USER/SECRET/
        #[arg(long, env = "NOVAPAY_BITRIX24_WEBHOOK_URL", hide_env_values = true)]
        webhook_url: String,
        /// Public URL of novapay's event handler, e.g. https://novapay.example.com/integrations/bitrix24/events.
        #[arg(long, required_unless_present = "poll", conflicts_with = "poll")]
        handler_url: Option<String>,
        /// Register a bot API v2 bot whose events `serve --bitrix24 poll` pulls (no public URL needed).
        #[arg(long)]
        poll: bool,
        /// Bot code, unique on the portal.
        #[arg(long, default_value = "novapay_assistant")]
        code: String,
        #[arg(long, default_value = "NovaPay")]
        name: String,
        #[arg(long, default_value = "Помощник службы поддержки")]
        work_position: String,
        /// Do not offer the bot to Open Lines (no customer chats, no operator hand-off).
        #[arg(long)]
        no_open_lines: bool,
    },
}
