//! `novapay forget`: erases one customer's data from the conversation store (the state directory's
//! SQLite file, or Redis) — sessions, turns, answer records, ratings and comments — and writes the
//! erase to the audit log. Works while the server is down or up (a running server drops the cached
//! answers of the erased conversations at their next use); `DELETE /api/v1/users/{id}` does the same
//! through the API, with the answer cache and answers in flight.

use anyhow::Context;

use super::options::{AuditArgs, CustomerArgs, KbArgs, MemoryArgs};
use novapay::assistant::customers::erase_from_store;
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
                .user(customer.id(), customer.channel())
                .counts(serde_json::to_value(&erased.removed)?),
        )
        .context("the data was erased, but the audit log could not record it")?;
    println!("{}", serde_json::to_string_pretty(&erased)?);
    if !erased.removed_anything {
        eprintln!("novapay: nothing stored for this customer (already erased, expired or unknown)");
    }
    Ok(())
}
