//! Prometheus metrics (`/metrics`), all prefixed `novapay_`: the HTTP server's own request and error
//! counters, rendered together with the assistant's answer metrics (`rag::metrics`), which count every
//! answer whatever door it left through.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

/// `GET /metrics`: the server's counters and the assistant's answer metrics, in Prometheus text.
pub(super) async fn metrics_text(State(state): State<super::Shared>) -> Response {
    let answers = state
        .services
        .get()
        .map(|s| s.assistant.metrics().gather())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(answers),
    )
        .into_response()
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    /// Bitrix24 events handled in the background, by how the handling ended.
    pub bitrix24_jobs: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "novapay_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("novapay_errors_total", "Error responses by code"),
            &["code"],
        )?;
        let bitrix24_jobs = IntCounterVec::new(
            Opts::new(
                "novapay_bitrix24_jobs_total",
                "Accepted Bitrix24 events whose background work (answer, greeting, registration) \
                 has ended, by outcome (answered, handed_off, done, failed, dropped)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(bitrix24_jobs.clone()))?;
        Ok(Self {
            registry,
            requests,
            errors,
            bitrix24_jobs,
        })
    }

    /// The text exposition of the server's metrics and `answers` (the assistant's, once loaded).
    pub fn render(&self, answers: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        families.extend(answers);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
