//! The web chat page in headless Chromium (Debian's chromium, driven by playwright-core; both are
//! installed by scripts/dev/test.sh): type a question, see the streamed answer and its sources; and the
//! banner that warns when a demo model answers.

use std::path::{Path, PathBuf};
use std::process::Command;

use novapay::http::ServerConfig;

use crate::support::{spawn_app, suggesting_assistant, AppOptions};

/// Runs tests/browser/chat.mjs against `base`; returns its stdout.
fn chat_page_script(base: &str, shot: &Path, mode: Option<&str>) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/dev/test.sh (it installs chromium and playwright-core)"
    );
    let out = Command::new("node")
        .arg(root.join("tests/browser/chat.mjs"))
        .arg(base)
        .arg(shot)
        .args(mode)
        .output()
        .expect("node is needed for the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(shot.is_file());
    stdout.into_owned()
}

#[test]
fn chat_page_streams_an_answer_with_sources_in_chromium() {
    let app = spawn_app(AppOptions::default());
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chat-page.png");
    let stdout = chat_page_script(&app.base, &shot, None);
    assert!(stdout.starts_with("OK "), "{stdout}");
    let report = app.assistant.support_report(0).unwrap();
    assert_eq!(
        report.feedback.down, 1,
        "the thumbs-down was stored: {report:?}"
    );
    assert_eq!(
        report.thumbs_down[0].question,
        "How much does a domestic transfer cost?"
    );
}

#[test]
fn chat_page_warns_when_a_demo_model_answers_in_chromium() {
    let app = spawn_app(AppOptions {
        config: ServerConfig {
            demo_model: true,
            ..ServerConfig::default()
        },
        ..AppOptions::default()
    });
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chat-page-demo.png");
    let stdout = chat_page_script(&app.base, &shot, Some("demo"));
    assert!(stdout.starts_with("OK demo banner"), "{stdout}");
}

#[test]
fn chat_page_shows_suggestions_as_cards_that_expand_and_take_feedback_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions {
        assistant: Some(suggesting_assistant(dir.path())),
        ..AppOptions::default()
    });
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chat-page-suggest.png");
    let stdout = chat_page_script(&app.base, &shot, Some("suggest"));
    assert!(stdout.starts_with("OK suggest"), "{stdout}");
    let report = app.assistant.support_report(0).unwrap();
    assert_eq!(report.outcomes.suggested, 2, "{report:?}");
    assert_eq!(report.outcomes.suggested_and_helped, 1, "{report:?}");
    assert_eq!(report.outcomes.suggested_then_operator, 1, "{report:?}");
    assert_eq!(report.outcomes_by_language["ru"].suggested_then_operator, 1);
}
