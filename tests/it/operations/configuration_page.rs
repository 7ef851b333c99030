//! `docs/configuration.md` is generated from the command line's definitions (`novapay docs
//! configuration`): a flag added, removed or changed (its help, default or environment variable)
//! without regenerating the page fails here, with the command that regenerates it.

use std::path::Path;
use std::process::Command;

#[test]
fn configuration_page_matches_the_command_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_novapay"))
        .args(["docs", "configuration"])
        // No ./.env of the repository's may change what the command line looks like.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    crate::support::assert_success(&out);
    let generated = String::from_utf8(out.stdout).unwrap();
    let page = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap_or_default();
    if generated != page {
        let first = generated
            .lines()
            .zip(page.lines())
            .position(|(g, p)| g != p)
            .unwrap_or_else(|| generated.lines().count().min(page.lines().count()));
        panic!(
            "docs/configuration.md is stale: it differs from the command line's definitions at line {}\n  \
             page:      {:?}\n  generated: {:?}\nregenerate it: cargo run --release -- docs configuration > \
             docs/configuration.md",
            first + 1,
            page.lines().nth(first).unwrap_or("<end of page>"),
            generated.lines().nth(first).unwrap_or("<end of output>"),
        );
    }
}
