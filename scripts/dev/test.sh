#!/usr/bin/env bash
# The test command: fetches the small real test models (cached), builds in release mode (model code is
# ~30x slower unoptimized) and runs every test. Used as-is by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust from rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed to fetch the test models" >&2; exit 1; }

scripts/fetch-test-models.sh
# The OpenAI-compatible API and the MCP server are tested with the official Python clients (tests/requirements.txt), in a
# venv under target/ that is reinstalled only when the requirements change.
scripts/dev/python-test-env.sh

# The browser test drives the web page in Debian's Chromium with playwright-core.
if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package) for the browser test ..."
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# The Redis memory tests start their own redis-server on a free port (no system service is used).
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (Debian package) for the Redis memory tests ..."
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
command -v node >/dev/null || { echo "error: node (with npm) is needed for the browser test" >&2; exit 1; }
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

# One inference thread per model and two tests at a time: candle's quantized kernels busy-wait, and
# several models each wanting every core slow down tenfold (see ../shared/FINDINGS.md).
export RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1
cargo test --release --locked "$@" -- --test-threads=2
