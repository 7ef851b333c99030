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
use crate::assistant::feedback::{query_id_ok, RateOutcome, MAX_COMMENT_CHARS};
use crate::assistant::Access;

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
    let assistant = state.services()?.assistant.clone();
    let field = req.rating;
    let rating = field.into();
    let query_id = req.query_id.clone();
    let who = caller.owner.clone();
    // The session's owner only (with its user_id when it has one); not even an administrator rates
    // someone else's answer.
    let access = Access {
        owner: caller.owner.clone(),
        user_id: req.user_id.clone(),
        admin: false,
    };
    let outcome = blocking(move || {
        Ok(assistant.rate_answer(&query_id, rating, comment, |info| {
            access.may_use(info, false)
        })?)
    })
    .await?;
    if outcome == RateOutcome::NotFound {
        return Err(ApiError::not_found(format!(
            "no answer {} in your conversations",
            req.query_id
        )));
    }
    tracing::info!(query_id = %req.query_id, rating = ?field, caller = %who, "feedback");
    Ok(Json(FeedbackStored {
        query_id: req.query_id,
        rating: field,
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
    let report = blocking(move || Ok(assistant.support_report(since_ms)?)).await?;
    tracing::info!(caller = %caller.owner, days, "support report read");
    Ok(Json(report).into_response())
}
