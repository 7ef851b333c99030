//! Calls to a Bitrix24 portal's REST API: `POST <endpoint>/<method>` with a JSON body, authorised
//! either by the endpoint itself (an incoming-webhook URL) or by an OAuth `auth` token in the body.
//! Bitrix24 answers `503 QUERY_LIMIT_EXCEEDED` (classic methods) or `429` (bot API v2,
//! `OPERATION_TIME_LIMIT`) when a portal is called too often; such calls, and calls that never reached
//! the portal, are retried with exponential backoff. Nothing else is retried: a reply whose answer was
//! lost may have been posted, and sending it again would show the customer the same message twice.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each next one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Bitrix24 refused the call: its `error` code and `error_description`.
    #[error("Bitrix24 {method}: {code} ({description}), HTTP {status}")]
    Api {
        method: String,
        status: u16,
        code: String,
        description: String,
    },
    /// No answer came. `not_sent`: the request never left (DNS or connect failure), so repeating it
    /// cannot post anything twice; otherwise the portal may have carried it out.
    #[error("Bitrix24 {method}: cannot reach the portal: {detail}")]
    Transport {
        method: String,
        detail: String,
        not_sent: bool,
    },
    #[error("Bitrix24 {method}: unreadable answer: {detail}")]
    BadAnswer { method: String, detail: String },
}

impl RestError {
    /// Whether the call was certainly not carried out, so that it is safe to make it again.
    fn retryable(&self) -> bool {
        match self {
            RestError::Api { status, code, .. } => {
                matches!(*status, 429 | 503)
                    || matches!(
                        code.as_str(),
                        "QUERY_LIMIT_EXCEEDED" | "OPERATION_TIME_LIMIT"
                    )
            }
            RestError::Transport { not_sent, .. } => *not_sent,
            RestError::BadAnswer { .. } => false,
        }
    }
}

#[derive(Clone)]
pub struct RestClient {
    endpoint: String,
    access_token: Option<String>,
    retry: RetryPolicy,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The webhook URL holds a secret: show the host only.
        f.debug_struct("RestClient")
            .field("endpoint", &redact_url(&self.endpoint))
            .finish_non_exhaustive()
    }
}

/// The Bitrix24 portal novapay works with (`NOVAPAY_BITRIX24_PORTAL`): every REST call of handler mode
/// goes to its `/rest/` endpoint, whatever address an event names, and installations are accepted only
/// from it. https only, unless plain http is explicitly allowed (a test portal on the same machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// `scheme://host[:port]`.
    base: String,
    /// `host[:port]`, lower case: what Bitrix24 sends as `auth[domain]`.
    domain: String,
}

impl Portal {
    /// `novapay.bitrix24.ru`, `https://novapay.bitrix24.ru` or `https://novapay.bitrix24.ru/`.
    pub fn parse(address: &str, allow_http: bool) -> Result<Self, String> {
        let address = address.trim();
        let with_scheme = if address.contains("://") {
            address.to_string()
        } else {
            format!("https://{address}")
        };
        let url = url::Url::parse(&with_scheme)
            .map_err(|e| format!("{address:?} is not a portal address: {e}"))?;
        check_scheme(&url, allow_http)?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{address:?} has no host"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the portal address must not contain credentials".into());
        }
        if !matches!(url.path(), "" | "/" | "/rest" | "/rest/") || url.query().is_some() {
            return Err(format!(
                "{address:?}: give the portal's address only, e.g. https://novapay.bitrix24.ru"
            ));
        }
        let domain = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
        .to_ascii_lowercase();
        Ok(Self {
            base: format!("{}://{domain}", url.scheme()),
            domain,
        })
    }

    /// The REST root calls go to: `https://host/rest/`.
    pub fn rest_endpoint(&self) -> String {
        format!("{}/rest/", self.base)
    }

    /// `host[:port]`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether an event's `auth[domain]` names this portal.
    pub fn is(&self, domain: &str) -> bool {
        domain
            .trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(&self.domain)
    }
}

fn check_scheme(url: &url::Url, allow_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(
            "plain http is refused (set NOVAPAY_BITRIX24_ALLOW_HTTP=1 only for a test portal)"
                .into(),
        ),
        other => Err(format!(
            "the scheme {other}:// is not allowed; use https://"
        )),
    }
}

/// Checks an incoming-webhook URL: https (http only when allowed). The error never shows its secret.
pub fn check_webhook_url(webhook_url: &str, allow_http: bool) -> Result<(), String> {
    let url = url::Url::parse(webhook_url.trim()).map_err(|e| {
        format!(
            "the webhook URL {} is not a URL: {e}",
            redact_url(webhook_url)
        )
    })?;
    check_scheme(&url, allow_http)?;
    if url.host_str().unwrap_or("").is_empty() {
        return Err(format!(
            "the webhook URL {} has no host",
            redact_url(webhook_url)
        ));
    }
    Ok(())
}

/// `https://host/rest/1/secret/` -> `https://host/rest/...`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    match url.find("/rest/") {
        Some(i) => format!("{}/rest/...", &url[..i]),
        None => url.split('?').next().unwrap_or(url).to_string(),
    }
}

impl RestClient {
    /// `endpoint`: an incoming-webhook URL (`https://host/rest/<user>/<secret>/`) or a portal's
    /// `client_endpoint` (`https://host/rest/`) used with `access_token`.
    pub fn new(endpoint: &str, access_token: Option<String>, retry: RetryPolicy) -> Self {
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build();
        Self {
            endpoint,
            access_token,
            retry,
            agent,
        }
    }

    /// Calls `method` and returns its `result`. Blocking.
    pub fn call(&self, method: &str, params: &Value) -> Result<Value, RestError> {
        let mut body = params.clone();
        if let (Some(token), Value::Object(map)) = (&self.access_token, &mut body) {
            map.insert("auth".into(), Value::String(token.clone()));
        }
        let mut attempt = 0;
        loop {
            match self.call_once(method, &body) {
                Err(e) if e.retryable() && attempt + 1 < self.retry.attempts => {
                    let wait = self.retry.delay(attempt);
                    tracing::warn!(method, error = %crate::logsafe::user_text(&e.to_string()), ?wait, "Bitrix24 call failed; retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn call_once(&self, method: &str, body: &Value) -> Result<Value, RestError> {
        let url = format!("{}/{}", self.endpoint, method);
        let response = self
            .agent
            .post(&url)
            .set("Accept", "application/json")
            .send_json(body);
        let (status, text) = match response {
            Ok(r) => (r.status(), r.into_string()),
            Err(ureq::Error::Status(status, r)) => (status, r.into_string()),
            Err(ureq::Error::Transport(t)) => {
                return Err(RestError::Transport {
                    method: method.into(),
                    not_sent: matches!(
                        t.kind(),
                        ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed
                    ),
                    detail: t
                        .to_string()
                        .replace(&self.endpoint, &redact_url(&self.endpoint)),
                })
            }
        };
        let text = text.map_err(|e| RestError::Transport {
            method: method.into(),
            detail: e.to_string(),
            not_sent: false,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| {
            if status >= 400 {
                RestError::Api {
                    method: method.into(),
                    status,
                    code: format!("HTTP_{status}"),
                    description: text.chars().take(200).collect(),
                }
            } else {
                RestError::BadAnswer {
                    method: method.into(),
                    detail: e.to_string(),
                }
            }
        })?;
        if let Some(code) = json.get("error").and_then(Value::as_str) {
            return Err(RestError::Api {
                method: method.into(),
                status,
                code: code.to_string(),
                description: json
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        if status >= 400 {
            return Err(RestError::Api {
                method: method.into(),
                status,
                code: format!("HTTP_{status}"),
                description: String::new(),
            });
        }
        json.get("result")
            .cloned()
            .ok_or_else(|| RestError::BadAnswer {
                method: method.into(),
                detail: "no `result` field".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (0..5).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    fn api_error(status: u16, code: &str) -> RestError {
        RestError::Api {
            method: "imbot.message.add".into(),
            status,
            code: code.into(),
            description: String::new(),
        }
    }

    #[test]
    fn only_calls_that_certainly_did_nothing_are_retried() {
        assert!(api_error(503, "QUERY_LIMIT_EXCEEDED").retryable());
        assert!(api_error(429, "OPERATION_TIME_LIMIT").retryable());
        assert!(api_error(429, "HTTP_429").retryable());
        // A server error may come after the message was posted.
        assert!(!api_error(500, "INTERNAL_SERVER_ERROR").retryable());
        assert!(!api_error(504, "HTTP_504").retryable());
        assert!(!api_error(400, "ERROR_METHOD_NOT_FOUND").retryable());
    }

    #[test]
    fn an_unreachable_portal_is_retried_then_reported() {
        // A port nobody listens on: connecting fails, so every attempt is safe to repeat.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RestClient::new(
            &format!("http://127.0.0.1:{port}/rest/1/secret/"),
            None,
            RetryPolicy {
                attempts: 3,
                first_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
        );
        let e = client
            .call("imbot.message.add", &serde_json::json!({}))
            .unwrap_err();
        assert!(
            matches!(e, RestError::Transport { not_sent: true, .. }),
            "{e:?}"
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn the_portal_is_https_unless_http_is_allowed() {
        let p = Portal::parse("NovaPay.Bitrix24.ru", false).unwrap();
        assert_eq!(p.rest_endpoint(), "https://novapay.bitrix24.ru/rest/");
        assert!(p.is("novapay.bitrix24.ru") && !p.is("evil.example"));
        assert!(Portal::parse("http://novapay.bitrix24.ru", false).is_err());
        assert!(Portal::parse("ftp://novapay.bitrix24.ru", true).is_err());
        assert!(Portal::parse("https://u:p@novapay.bitrix24.ru", false).is_err());
        assert!(Portal::parse("https://novapay.bitrix24.ru/other/path", false).is_err());
        let local = Portal::parse("http://127.0.0.1:8099/", true).unwrap();
        assert_eq!(local.rest_endpoint(), "http://127.0.0.1:8099/rest/");
        assert_eq!(local.domain(), "127.0.0.1:8099");
        assert!(
            check_webhook_url("http://b24.example.ru/rest/1/s3cret/", false)
                .unwrap_err()
                .contains("http")
        );
        assert!(!check_webhook_url("gopher://b24/rest/1/s3cret/", false)
            .unwrap_err()
            .contains("s3cret"));
        assert!(check_webhook_url("https://b24.example.ru/rest/1/s3cret/", false).is_ok());
    }

    #[test]
    fn webhook_secrets_are_not_shown() {
        assert_eq!(
            redact_url("https://b24.example.ru/rest/1/s3cr3t/"),
            "https://b24.example.ru/rest/..."
        );
    }
}
