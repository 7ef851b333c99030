//! Calls to a Bitrix24 portal's REST API: `POST <endpoint>/<method>` with a JSON body, authorised
//! either by the endpoint itself (an incoming-webhook URL) or by an OAuth `auth` token in the body.
//! Bitrix24 answers `503 QUERY_LIMIT_EXCEEDED` when a portal is called too often; such calls (and
//! connection failures) are retried with exponential backoff.

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
    #[error("Bitrix24 {method}: cannot reach the portal: {detail}")]
    Transport { method: String, detail: String },
    #[error("Bitrix24 {method}: unreadable answer: {detail}")]
    BadAnswer { method: String, detail: String },
}

impl RestError {
    fn retryable(&self) -> bool {
        match self {
            RestError::Api { status, code, .. } => {
                *status == 503 || code == "QUERY_LIMIT_EXCEEDED" || *status >= 500
            }
            RestError::Transport { .. } => true,
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
                    tracing::warn!(method, error = %e, ?wait, "Bitrix24 call failed; retrying");
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
            Err(e) => {
                return Err(RestError::Transport {
                    method: method.into(),
                    detail: e
                        .to_string()
                        .replace(&self.endpoint, &redact_url(&self.endpoint)),
                })
            }
        };
        let text = text.map_err(|e| RestError::Transport {
            method: method.into(),
            detail: e.to_string(),
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

    #[test]
    fn webhook_secrets_are_not_shown() {
        assert_eq!(
            redact_url("https://b24.example.ru/rest/1/s3cr3t/"),
            "https://b24.example.ru/rest/..."
        );
    }
}
