//! `GET /health`: "loading" (503) until the models and the index are handed over, then what is
//! loaded and how full the generation queue is.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{wire, Shared};

pub(super) async fn health(State(state): State<Shared>) -> Response {
    let demo_model = state.config.demo_model;
    match state.services.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(wire::Health {
                status: "loading".into(),
                demo_model,
                models_pinned: None,
                llm: None,
                embedder: None,
                index: None,
                queue: None,
            }),
        )
            .into_response(),
        Some(s) => {
            let status = s.assistant.status();
            axum::Json(wire::Health {
                status: "ok".into(),
                demo_model,
                models_pinned: Some(s.models_pinned),
                llm: Some(s.llm_name.clone()),
                embedder: Some(s.embedder_name.clone()),
                index: Some(wire::HealthIndex {
                    chunks: status.chunks,
                    files: status.files,
                    generation: status.generation,
                }),
                queue: Some(wire::HealthQueue {
                    waiting: status.queue_waiting,
                    depth: status.queue_depth,
                }),
            })
            .into_response()
        }
    }
}
