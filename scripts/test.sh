#!/usr/bin/env bash
# The test command: fetches the small real test models (cached), builds in release mode (model code is
# ~30x slower unoptimized) and runs every test. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust from rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed to fetch the test models" >&2; exit 1; }

scripts/fetch-test-models.sh
# One inference thread per model and two tests at a time: candle's quantized kernels busy-wait, and
# several models each wanting every core slow down tenfold (see ../shared/FINDINGS.md).
export RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1
cargo test --release --locked "$@" -- --test-threads=2
