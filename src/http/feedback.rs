//! `POST /api/v1/feedback` (a customer rates an answer of their own session) and `GET /api/v1/stats`
//! (the support report, administrator keys only: it contains customers' questions).
//!
//! Logged: the query id, the rating and the caller's key fingerprint; never the comment or question.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::auth::Caller;
use super::error::{blocking, ApiError};
use super::extract::JsonBody;
use super::wire::{FeedbackRequest, FeedbackStored, StatsQuery};
use super::Shared;
use crate::assistant::feedback::{query_id_ok, Rate, RateOutcome, MAX_COMMENT_CHARS};
use crate::assistant::{parse_session_id, Access};

pub async fn feedback(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<FeedbackRequest>,
) -> Result<Response, ApiError> {
    if !query_id_ok(&req.query_id) {
        return Err(ApiError::bad_request(
            "invalid_query_id",
            "`query_id` must be the `query_id` of an answer (1-64 letters, digits, '-', '_' or '.')",
        ));
    }
    let comment = match req.comment.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c)
            if c.chars().count() > MAX_COMMENT_CHARS
                || c.chars().any(|ch| ch.is_control() && ch != '\n') =>
        {
            return Err(ApiError::bad_request(
                "invalid_comment",
                format!(
                    "`comment` must be at most {MAX_COMMENT_CHARS} characters without control \
                     characters"
                ),
            ))
        }
        Some(c) => Some(c.to_string()),
    };
    if req.suggestion == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_suggestion",
            "`suggestion` is the 1-based id of an offered section",
        ));
    }
    let session = req
        .session_id
        .as_deref()
        .map(parse_session_id)
        .transpose()?;
    let assistant = state.services()?.assistant.clone();
    let field = req.rating;
    let operator = req.operator.unwrap_or(false);
    let rate = Rate {
        query_id: req.query_id.clone(),
        rating: field.into(),
        comment,
        suggestion: req.suggestion,
        operator,
        session,
    };
    let who = caller.owner.clone();
    // The session's owner only (with its user_id when it has one); not even an administrator rates
    // someone else's answer.
    let access = Access {
        owner: caller.owner.clone(),
        user_id: req.user_id.clone(),
        admin: false,
    };
    let outcome =
        blocking(move || Ok(assistant.rate_answer(rate, |info| access.may_use(info, false))?))
            .await?;
    match outcome {
        RateOutcome::Stored => {}
        RateOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "no answer {} in your conversations",
                req.query_id
            )))
        }
        RateOutcome::OtherSession => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_mismatch",
                format!(
                    "answer {} was given in another session than `session_id`; nothing was stored",
                    req.query_id
                ),
            ))
        }
        RateOutcome::NoSuchSuggestion { offered } => {
            let offered = match offered {
                0 => "it offered no suggestions".to_string(),
                n => format!("it offered suggestions 1-{n}"),
            };
            return Err(ApiError::bad_request(
                "invalid_suggestion",
                format!(
                    "answer {} has no suggestion {}: {offered}; nothing was stored",
                    req.query_id,
                    req.suggestion.unwrap_or_default()
                ),
            ));
        }
    }
    tracing::info!(query_id = %req.query_id, rating = ?field, suggestion = ?req.suggestion, operator, caller = %who, "feedback");
    Ok(Json(FeedbackStored {
        query_id: req.query_id,
        rating: field,
        suggestion: req.suggestion,
        operator,
        stored: true,
    })
    .into_response())
}

pub async fn stats(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    if !caller.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the support report shows customers' questions: it needs an administrator key \
             (NOVAPAY_ADMIN_KEYS)",
        ));
    }
    let days = q.days.unwrap_or(30).clamp(1, 3650);
    let since_ms = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
    let assistant = state.services()?.assistant.clone();
    let audit = state.config.audit.clone();
    let who = caller.owner.clone();
    let report = blocking(move || {
        let report = assistant.support_report(since_ms)?;
        if let Some(log) = &audit {
            log.record(
                &crate::audit::AuditEntry::new(&who, "stats.read", "GET /api/v1/stats").counts(
                    serde_json::json!({"days": days, "answers": report.questions_answered}),
                ),
            )?;
        }
        Ok(report)
    })
    .await?;
    tracing::info!(caller = %caller.owner, days, "support report read");
    Ok(Json(report).into_response())
}
