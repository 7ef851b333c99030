#!/usr/bin/env bash
# A long run of the OpenAPI-driven fuzz test (the test command runs 300 cases).
#   scripts/dev/fuzz-api.sh [CASES] [SEED]      defaults: 20000 cases, seed from the clock
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
scripts/fetch-test-models.sh
export NOVAPAY_FUZZ_CASES="${1:-20000}" NOVAPAY_FUZZ_SEED="${2:-$(date +%s)}"
export RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1
echo "fuzz: $NOVAPAY_FUZZ_CASES cases, seed $NOVAPAY_FUZZ_SEED (rerun a failure with the same seed)"
cargo test --release --locked --test it fuzz_api -- --nocapture --test-threads=1
