//! `novapay export`: prints as JSON every stored turn, answer record and rating of one customer,
//! read from the conversation store (as `GET /api/v1/users/{id}/export`), and writes the read to the
//! audit log.

use anyhow::Context;

use super::options::{AuditArgs, KbArgs, MemoryArgs};
use novapay::assistant::customers::export_from_store;
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

pub fn run(a: &Args) -> anyhow::Result<()> {
    let customer = super::forget::customer(a.user_id.as_deref(), a.bitrix24_user.as_deref())?;
    let audit = a
        .audit
        .open(&a.kb)
        .context("set --audit-log / NOVAPAY_AUDIT_LOG to a writable file")?;
    let store = a.memory.open(&a.kb)?;
    let export = export_from_store(store.as_ref(), &customer)?;
    let messages: usize = export.sessions.iter().map(|s| s.messages.len()).sum();
    let answers: usize = export.sessions.iter().map(|s| s.answers.len()).sum();
    // Recorded before anything is printed: a read that cannot be audited is not shown.
    audit.record(
        &AuditEntry::new(CLI, "customer.export", "novapay export")
            .customer(&customer)
            .counts(serde_json::json!({
                "sessions": export.sessions.len(),
                "messages": messages,
                "answer_records": answers,
            })),
    )?;
    println!("{}", serde_json::to_string_pretty(&export)?);
    Ok(())
}
