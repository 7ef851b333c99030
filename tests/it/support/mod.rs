//! What the integration tests share: the real small models, the server in-process
//! ([`spawn_app`]) or as a `novapay serve` process ([`ServeProcess`]) over a temporary knowledge
//! base, the fake Bitrix24 portal, the official Python clients, and reading `/metrics`.

mod app;
mod models;
pub mod portal;
mod python;
mod serve;

pub use app::{
    error_code, response, send, spawn_app, sse_events, suggesting_assistant, test_assistant,
    test_assistant_configured, test_assistant_in_mode, AppOptions, TestApp,
};
pub use models::{fixture, gemma3_270m_path, load_smollm2, minilm_dir, smollm2_path};
pub use portal::FakePortal;
pub use python::{mcp_client, python, python_script};
pub use serve::{index_small_kb, novapay, run_index, ServeProcess};

/// Asserts that a finished `novapay` process succeeded, showing its stderr when it did not.
#[track_caller]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of one series in a `/metrics` text, e.g.
/// `novapay_answers_total{door="rest",kind="generated"}` (labels in the order Prometheus writes
/// them: alphabetical); `None` when the series is not there.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// The figures of a served answer that the knowledge base in `data` (every file), the question and
/// the default support contacts do not state. What the model says differs between CPUs (issue 25);
/// that no served figure is absent from these holds on every host.
pub fn figures_absent_from_the_knowledge_base(
    data: &std::path::Path,
    question: &str,
    answer: &str,
) -> Vec<String> {
    use novapay::assistant::checks::figures::FigurePool;
    let texts: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .filter(|f| f.path().is_file())
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect();
    let mut pool = FigurePool::new(&texts);
    let config = novapay::assistant::RagConfig::default();
    for t in [question, &config.fallback_en, &config.fallback_ru] {
        pool.add_non_source(t);
    }
    pool.unsupported(answer)
        .iter()
        .map(ToString::to_string)
        .collect()
}
