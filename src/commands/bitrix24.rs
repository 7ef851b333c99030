//! `novapay bitrix24 register`: registers the bot and prints the settings for `serve`.

use anyhow::Context;
use novapay::integrations::bitrix24::{
    register_bot, rest::redact_url, Registration, RegistrationMode, RestClient, RetryPolicy,
};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
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

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register {
            webhook_url,
            handler_url,
            poll,
            code,
            name,
            work_position,
            no_open_lines,
        } => {
            if !webhook_url.starts_with("http://") && !webhook_url.starts_with("https://") {
                anyhow::bail!(
                    "--webhook-url must be the incoming webhook's URL, like \
                     https://PORTAL.bitrix24.ru/rest/1/SECRET/ (Developer resources > Other > Incoming webhook)"
                );
            }
            let mode = match handler_url {
                Some(url) if !poll => RegistrationMode::Handler { handler_url: url },
                _ => RegistrationMode::Poll,
            };
            // The bot's secret for later webhook calls: CLIENT_ID (handler) or botToken (poll).
            let secret = uuid::Uuid::new_v4().simple().to_string();
            let registration = Registration {
                mode: mode.clone(),
                code,
                name,
                work_position,
                open_lines: !no_open_lines,
                secret: Some(secret.clone()),
            };
            let client = RestClient::new(&webhook_url, None, RetryPolicy::default());
            let bot_id = register_bot(&client, &registration)
                .with_context(|| format!("registering the bot on {}", redact_url(&webhook_url)))?;
            eprintln!("novapay: bot {bot_id} registered. Add to the server's .env:");
            match mode {
                RegistrationMode::Handler { .. } => {
                    println!("NOVAPAY_BITRIX24_MODE=handler");
                    println!("NOVAPAY_BITRIX24_WEBHOOK_URL={webhook_url}");
                    println!("NOVAPAY_BITRIX24_CLIENT_ID={secret}");
                    eprintln!(
                        "Events carry the portal's application token. Set NOVAPAY_BITRIX24_APPLICATION_TOKEN \
                         to it: until one is known, novapay rejects events and logs the token the first \
                         one carried, so send the bot a test message and copy it from the log."
                    );
                }
                RegistrationMode::Poll => {
                    println!("NOVAPAY_BITRIX24_MODE=poll");
                    println!("NOVAPAY_BITRIX24_WEBHOOK_URL={webhook_url}");
                    println!("NOVAPAY_BITRIX24_BOT_ID={bot_id}");
                    println!("NOVAPAY_BITRIX24_BOT_TOKEN={secret}");
                }
            }
            Ok(())
        }
    }
}
