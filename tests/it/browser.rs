//! The web chat page in headless Chromium (Debian's chromium, driven by playwright-core; both are
//! installed by scripts/test.sh): type a question, see the streamed answer and its sources.

use std::path::PathBuf;
use std::process::Command;

use crate::http::{spawn_app, AppOptions};

#[test]
fn chat_page_streams_an_answer_with_sources_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/chat.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/test.sh (it installs chromium and playwright-core)"
    );
    let app = spawn_app(AppOptions::default());
    let shot = root.join("target/chat-page.png");
    let out = Command::new("node")
        .arg(&script)
        .arg(&app.base)
        .arg(&shot)
        .output()
        .expect("node is needed for the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert!(shot.is_file());
}
