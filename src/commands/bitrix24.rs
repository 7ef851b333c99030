//! `novapay bitrix24 register`: registers the bot and prints the settings for `serve`.

use anyhow::Context;
use novapay::integrations::bitrix24::{
    register_bot, rest::redact_url, Registration, RegistrationMode, RestClient, RetryPolicy,
};

use crate::cli::Bitrix24Command;

pub fn run(what: Bitrix24Command) -> anyhow::Result<()> {
    match what {
        Bitrix24Command::Register {
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
