//! `DELETE /api/v1/users/{user_id}` (erase a customer's data) and
//! `GET /api/v1/users/{user_id}/export` (a copy of it): administrator keys only, each call written to
//! the audit log. The work is the assistant's (`assistant::customers`); this file parses the path,
//! checks the key and writes the audit line.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::wire::CustomerQuery;
use super::Shared;
use crate::assistant::customers::Customer;
use crate::audit::AuditEntry;

const CHANNELS: &str =
    "`channel` is `bitrix24` (a Bitrix24 portal user id) or absent (the API's user_id)";

/// The customer a path names. Beyond the `user_id` rule of the query API, a path segment may not
/// hold `/` or `\` (percent-encoded or not) nor be `.` or `..`: ids with those are erased and
/// exported with the command line.
fn customer(user_id: &str, channel: Option<&str>) -> Result<Customer, ApiError> {
    let pathlike = user_id.contains(['/', '\\']) || user_id == "." || user_id == "..";
    let parsed = match channel {
        None | Some("") if !pathlike => Customer::user(user_id).ok(),
        Some("bitrix24") => Customer::channel_user("bitrix24", user_id).ok(),
        None | Some("") => None,
        Some(_) => return Err(ApiError::bad_request("invalid_channel", CHANNELS)),
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_user_id",
            match channel {
                Some("bitrix24") => {
                    "a Bitrix24 user id is 1-64 letters, digits, '-', '_' or '.'".to_string()
                }
                _ => format!(
                    "`user_id` in the path must be 1-{} characters without control characters, \
                     '/' or '\\', and not '.' or '..'; for other ids use `novapay forget --user-id` \
                     or `novapay export --user-id`",
                    crate::assistant::customers::MAX_USER_ID_CHARS
                ),
            },
        )
    })
}

fn admin_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.admin {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{what} needs an administrator key (NOVAPAY_ADMIN_KEYS)"),
    ))
}

/// `DELETE /api/v1/users/{user_id}`: removes the customer's conversations, answer records,
/// feedback and cached answers (and any answer of theirs still in flight); 200 with the counts,
/// zeros for an unknown or already erased id.
pub async fn erase(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
    Query(q): Query<CustomerQuery>,
) -> Result<Response, ApiError> {
    admin_only(&caller, "erasing a customer's data")?;
    let customer = customer(&user_id, q.channel.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let audit = state.config.audit.clone();
    let erased = blocking(move || {
        let erased = assistant.erase_customer(&customer)?;
        if let Some(log) = &audit {
            log.record(
                &AuditEntry::new(
                    &caller.owner,
                    "customer.erase",
                    "DELETE /api/v1/users/{user_id}",
                )
                .user(customer.id(), customer.channel())
                .counts(serde_json::to_value(&erased.removed).unwrap_or_default()),
            )?;
        }
        Ok(erased)
    })
    .await?;
    Ok(Json(erased).into_response())
}

/// `GET /api/v1/users/{user_id}/export`: every stored turn, answer record and rating of the customer.
pub async fn export(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
    Query(q): Query<CustomerQuery>,
) -> Result<Response, ApiError> {
    admin_only(&caller, "exporting a customer's data")?;
    let customer = customer(&user_id, q.channel.as_deref())?;
    let assistant = state.services()?.assistant.clone();
    let audit = state.config.audit.clone();
    let export = blocking(move || {
        let export = assistant.export_customer(&customer)?;
        if let Some(log) = &audit {
            let messages: usize = export.sessions.iter().map(|s| s.messages.len()).sum();
            let answers: usize = export.sessions.iter().map(|s| s.answers.len()).sum();
            log.record(
                &AuditEntry::new(
                    &caller.owner,
                    "customer.export",
                    "GET /api/v1/users/{user_id}/export",
                )
                .user(customer.id(), customer.channel())
                .counts(serde_json::json!({
                    "sessions": export.sessions.len(),
                    "messages": messages,
                    "answer_records": answers,
                })),
            )?;
        }
        Ok(export)
    })
    .await?;
    Ok(Json(export).into_response())
}
