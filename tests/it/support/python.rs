//! The official Python clients (`openai`, `mcp`) from the venv `scripts/dev/python-test-env.sh` makes
//! from tests/requirements.txt (scripts/dev/test.sh runs it first).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The venv's python.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("NOVAPAY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/dev/python-test-env.sh (scripts/dev/test.sh does)",
        python.display()
    );
    python
}

/// A script of tests/python.
pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs tests/python/mcp_client.py (the official MCP Python SDK client) with `plan`; returns what
/// it printed.
pub fn mcp_client(plan: &Value) -> Value {
    let out = Command::new(python())
        .arg(python_script("mcp_client.py"))
        .arg(plan.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcp client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("mcp client printed no JSON ({e}): {stdout}"))
}
