//! `novapay export`: prints as JSON every stored turn, answer record and rating of one customer,
//! read from the conversation store (as `GET /api/v1/users/{id}/export`), and writes the read to the
//! audit log.

use anyhow::Context;

use super::options::{AuditArgs, CustomerArgs, KbArgs, MemoryArgs};
use novapay::assistant::customers::export_from_store;
use novapay::audit::{AuditEntry, CLI};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub kb: KbArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    #[command(flatten)]
    pub customer: CustomerArgs,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let customer = a.customer.customer()?;
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
            .user(customer.id(), customer.channel())
            .counts(serde_json::json!({
                "sessions": export.sessions.len(),
                "messages": messages,
                "answer_records": answers,
            })),
    )?;
    println!("{}", serde_json::to_string_pretty(&export)?);
    Ok(())
}
