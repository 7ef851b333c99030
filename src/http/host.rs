//! The Host check of a server without API keys on a loopback address: only requests addressed to a
//! loopback name reach the API. A web page the customer's browser opens can rebind its own DNS name
//! to 127.0.0.1 and then call the API as a same-origin page (DNS rebinding); its requests still
//! carry the page's host name, which this refuses. rmcp applies the same rule to `/mcp`.

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode};

use super::error::ApiError;

/// Whether a request with this `Host` header may reach the API of a keyless loopback server: a
/// loopback name (`localhost`, `127.0.0.0/8`, `[::1]`, any port), or no `Host` at all (no browser
/// sends a request without one).
pub fn is_loopback_host(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [::1]:8080
        Some(rest) => match rest.split_once(']') {
            Some((name, port)) if port.is_empty() || port.starts_with(':') => name,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        "this server has no API keys and serves only requests addressed to localhost, 127.0.0.1 \
         or [::1]; set NOVAPAY_API_KEYS to serve it under another name",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(host: &str) -> bool {
        is_loopback_host(Some(&HeaderValue::from_str(host).unwrap()))
    }

    #[test]
    fn loopback_names_pass_and_any_other_name_is_refused() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:39471",
            "127.8.9.10:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(ok(host), "{host}");
        }
        for host in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost.evil.example.com",
            "127.0.0.1.nip.io:8080",
            "10.0.0.5:8080",
            "[::2]:8080",
            "[::1]x",
            "",
        ] {
            assert!(!ok(host), "{host}");
        }
        assert!(is_loopback_host(None), "not a browser");
    }
}
