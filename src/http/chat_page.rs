//! The web chat page (`GET /`): one static HTML file served with a Content-Security-Policy that allows
//! only its own inline script and style.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const CHAT_HTML: &str = include_str!("static/index.html");

/// The chat page's Content-Security-Policy: only its own inline script and style (by hash) and calls
/// to this server; no framing.
pub fn chat_page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash_between = |open: &str, close: &str| {
            use base64::Engine;
            use sha2::Digest;
            let start = CHAT_HTML.find(open).map_or(0, |i| i + open.len());
            let end = CHAT_HTML[start..].find(close).map_or(start, |i| start + i);
            let digest = sha2::Sha256::digest(&CHAT_HTML.as_bytes()[start..end]);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_between("<script>", "</script>"),
            hash_between("<style>", "</style>"),
        )
    })
}

pub(super) async fn chat_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, chat_page_csp()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CHAT_HTML,
    )
        .into_response()
}
