#!/usr/bin/env bash
# Concurrent clients, novapay against llama.cpp's llama-server, in one run on one host (issue: continuous
# batching). For each N: `novapay bench llm --parallel N` and `llama-server -np N` on the same GGUF, the
# same threads, distinct 500-token prompts, 128 greedy tokens each. One JSON line per engine and N.
#
#   scripts/bench/concurrent.sh MODEL.gguf [CLIENTS (1,2,4,8)] [LLAMA_SERVER_BIN]
#
# LLAMA_SERVER_BIN defaults to $LLAMA_SERVER or /work/tools/llama.cpp-src/build/bin/llama-server (how to
# build it: scripts/bench/llama-server-parallel.py); without one, only novapay runs. Run it on a quiet
# host: both engines use every thread given (NOVAPAY_THREADS, default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
model=${1:?usage: scripts/bench/concurrent.sh MODEL.gguf [CLIENTS] [LLAMA_SERVER_BIN]}
clients=${2:-1,2,4,8}
server=${3:-${LLAMA_SERVER:-/work/tools/llama.cpp-src/build/bin/llama-server}}
threads=${NOVAPAY_THREADS:-2}
bin=target/release/novapay
[ -x "$bin" ] || cargo build --release
echo "# host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads $threads, $(date -u +%FT%TZ)" >&2
for n in ${clients//,/ }; do
  NOVAPAY_THREADS=$threads "$bin" bench llm --llm "$model" --prompt-tokens 500 --generate-tokens 128 \
    --parallel "$n" 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); d["engine"]="novapay"; print(json.dumps(d))'
done
if [ -x "$server" ]; then
  python3 scripts/bench/llama-server-parallel.py --server-bin "$server" --model "$model" \
    --threads "$threads" --clients "$clients" --prompt-tokens 500 --generate-tokens 128
else
  echo "no llama-server at $server: novapay only" >&2
fi
