//! What every request passes through: header limits, authentication (the caller goes into the
//! request's extensions), the loopback-only rule, request and error counting, the JSON error body on
//! errors axum makes itself, and CORS.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::auth::{self, Caller};
use super::error::{json_error_body, ApiError, ErrorCode};
use super::{extract, host, openai, routes, Shared};

/// Request headers larger than this (in all) are refused with a JSON 431. hyper's own limits, past
/// which it answers 431 without a body, are set well above ours.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// More request header fields than this are refused with a JSON 431.
pub const MAX_HEADERS: usize = 100;

/// Header limits, auth on non-public routes (the caller goes into the request's extensions), then
/// request counting by route and status. Every error leaves with the documented JSON body, also the
/// ones axum makes itself (405, a path that is not UTF-8, ...).
pub(super) async fn observe(
    State(state): State<Shared>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Bitrix24 cannot send an API key; its events are checked against the application token.
    let public = routes::PUBLIC.contains(&route.as_str())
        || route == routes::BITRIX24_EVENTS
        || route == "unmatched";
    let openai_path = request.uri().path().starts_with(routes::OPENAI_PREFIX);
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let caller = auth::authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        &state.config.api_keys,
        &state.config.admin_keys,
    );
    let response = if header_bytes > MAX_HEADER_BYTES || request.headers().len() > MAX_HEADERS {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "request headers are limited to {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes"
            ),
        )
        .into_response()
    } else if public || request.method() == Method::OPTIONS {
        next.run(request).await
    } else if state.loopback_only && !host::is_loopback_host(request.headers().get(header::HOST)) {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        host::refused().into_response()
    } else if let Some(caller) = caller {
        request.extensions_mut().insert::<Caller>(caller);
        next.run(request).await
    } else {
        extract::drain(request.into_body(), state.config.body_read_timeout).await;
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>, or Basic)",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer, Basic realm=\"novapay\""),
        );
        r
    };
    let response = json_error_body(response).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.metrics.errors.with_label_values(&[code.0]).inc();
    }
    if openai_path {
        return openai::reshape_error(response).await;
    }
    response
}

pub(super) fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT]),
    )
}
