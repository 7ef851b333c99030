//! `POST /integrations/bitrix24/events`: acknowledges a Bitrix24 event at once and answers it in the
//! background (Bitrix24 never retries an event and calls slow handlers less often).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::FormBody;
use super::Shared;
use crate::assistant::Assistant;
use crate::integrations::bitrix24::{Accepted, Job};

/// How long a job accepted during start-up waits for the models before it is dropped.
const WAIT_FOR_MODELS: Duration = Duration::from_secs(600);

pub async fn events(
    State(state): State<Shared>,
    FormBody(body): FormBody,
) -> Result<Json<Value>, ApiError> {
    let handler = state.config.bitrix24.clone().ok_or_else(|| {
        ApiError::not_found(
            "the Bitrix24 integration is off; start with NOVAPAY_BITRIX24_MODE=handler",
        )
    })?;
    // Parsing is quick, but ONAPPINSTALL writes the token file: keep file I/O off the async workers.
    let accepted = tokio::task::spawn_blocking(move || handler.accept(&body))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    Ok(Json(match accepted {
        Accepted::Installed(registration) => {
            if let Some(job) = registration {
                tokio::spawn(run_when_ready(state, job));
            }
            json!({ "result": "installed" })
        }
        Accepted::Ignored(reason) => json!({ "result": "ignored", "reason": reason }),
        Accepted::Job(job) => {
            tokio::spawn(run_when_ready(state, job));
            json!({ "result": "accepted" })
        }
    }))
}

/// Runs an accepted event's job, then counts how it ended in `novapay_bitrix24_jobs_total` (the
/// operator's view of the background work, and the signal that nothing more will be sent for it).
async fn run_when_ready(state: Shared, job: Box<Job>) {
    let outcome = run_job(&state, job).await;
    state
        .metrics
        .bitrix24_jobs
        .with_label_values(&[outcome])
        .inc();
}

async fn run_job(state: &Shared, job: Box<Job>) -> &'static str {
    let dialog = crate::logsafe::user_text(job.dialog_id());
    let Some(assistant) = wait_for_assistant(state).await else {
        tracing::error!(dialog, "Bitrix24 event dropped: models did not load");
        return "dropped";
    };
    match tokio::task::spawn_blocking(move || job.run(&assistant)).await {
        Ok(Ok(Some(outcome))) => {
            tracing::info!(
                dialog,
                fallback = outcome.answer.as_ref().map(|a| a.fallback()),
                handed_off = outcome.handed_off,
                "Bitrix24 message answered"
            );
            if outcome.handed_off {
                "handed_off"
            } else {
                "answered"
            }
        }
        Ok(Ok(None)) => "done",
        Ok(Err(e)) => {
            tracing::error!(dialog, error = %crate::logsafe::user_text(&e.to_string()), "Bitrix24 reply failed");
            "failed"
        }
        Err(e) => {
            tracing::error!(dialog, error = %crate::logsafe::user_text(&e.to_string()), "Bitrix24 job panicked");
            "failed"
        }
    }
}

async fn wait_for_assistant(state: &Shared) -> Option<Arc<Assistant>> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_MODELS;
    loop {
        if let Ok(services) = state.services() {
            return Some(services.assistant.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
