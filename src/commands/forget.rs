//! `novapay forget`: erases one customer's data from the conversation store (the state directory's
//! SQLite file, or Redis) — sessions, turns, answer records, ratings and comments — and writes the
//! erase to the audit log. Works while the server is down or up (a running server drops the cached
//! answers of the erased conversations at their next use); `DELETE /api/v1/users/{id}` does the same
//! through the API, with the answer cache and answers in flight.

use anyhow::Context;

use super::options::{AuditArgs, KbArgs, MemoryArgs};
use novapay::assistant::customers::{erase_from_store, Customer};
use novapay::audit::{AuditEntry, CLI};

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user_id", "bitrix24_user"])))]
pub struct Args {
    #[command(flatten)]
    pub kb: KbArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// The customer's `user_id`, as the integrator sent it to /api/v1/query or /api/v1/session.
    #[arg(long)]
    pub user_id: Option<String>,
    /// A Bitrix24 portal user id (FROM_USER_ID of the bot's events): their dialogs with the bot.
    #[arg(long)]
    pub bitrix24_user: Option<String>,
}

/// The customer `--user-id` / `--bitrix24-user` names, or what to type instead.
pub fn customer(user_id: Option<&str>, bitrix24_user: Option<&str>) -> anyhow::Result<Customer> {
    match (user_id, bitrix24_user) {
        (Some(u), None) => Customer::user(u).with_context(|| {
            "--user-id: give the user_id exactly as the integrator sent it".to_string()
        }),
        (None, Some(b)) => Customer::channel_user("bitrix24", b)
            .context("--bitrix24-user: give the portal's numeric user id (FROM_USER_ID)"),
        _ => anyhow::bail!("give exactly one of --user-id or --bitrix24-user"),
    }
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let customer = customer(a.user_id.as_deref(), a.bitrix24_user.as_deref())?;
    // The audit log first: an erase that cannot be recorded is not done.
    let audit = a
        .audit
        .open(&a.kb)
        .context("set --audit-log / NOVAPAY_AUDIT_LOG to a writable file")?;
    let store = a.memory.open(&a.kb)?;
    let erased = erase_from_store(store.as_ref(), &customer)?;
    audit
        .record(
            &AuditEntry::new(CLI, "customer.erase", "novapay forget")
                .customer(&customer)
                .counts(serde_json::to_value(&erased.removed)?),
        )
        .context("the data was erased, but the audit log could not record it")?;
    println!("{}", serde_json::to_string_pretty(&erased)?);
    if !erased.removed_anything {
        eprintln!("novapay: nothing stored for this customer (already erased, expired or unknown)");
    }
    Ok(())
}
