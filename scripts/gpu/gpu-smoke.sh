#!/usr/bin/env bash
# Checks a GPU host end to end, unchanged on any Linux x86_64 machine with an NVIDIA GPU, its driver
# (CUDA 13: >= 580), Rust (rustup) and python3 with pip: no CUDA toolkit needed (scripts/gpu/cuda-env.sh
# brings NVIDIA's compiler and libraries from PyPI). Run from the repository root:
#
#     scripts/gpu/gpu-smoke.sh                       # the product's default model, downloaded (~2 GB)
#     NOVAPAY_LLM=/path/to/model.gguf scripts/gpu/gpu-smoke.sh    # a GGUF already on disk
#
# Steps (each timed): build with --features cuda for this GPU's compute capability; get the models; `bench
# llm --device cuda` (500-token prompt, 128 generated tokens, the CPU figures in README "Sizing" use the
# same) and `bench llm --parallel 1/4/8` (concurrent clients); index data/; serve on the GPU and ask one question over HTTP. After the build (minutes, by
# cores), the checks take under 5 minutes. The JSON lines printed are what to report back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started ))s] $*"; }

step "GPU"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}

step "build (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
. scripts/gpu/cuda-env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda-sm$CUDA_COMPUTE_CAP}
cargo build --release --locked --features cuda
bin="$CARGO_TARGET_DIR/release/novapay"
# The wheels' run-time libraries; libcuda.so.1 is the driver's own (the link stub is not on this path).
export LD_LIBRARY_PATH="$NOVAPAY_CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NOVAPAY_DEVICE=cuda
"$bin" --version

step "models"
export NOVAPAY_MODELS_DIR=${NOVAPAY_MODELS_DIR:-$PWD/models/hub}
"$bin" download
llm=${NOVAPAY_LLM:-bartowski/Llama-3.2-3B-Instruct-GGUF:Llama-3.2-3B-Instruct-Q4_K_M.gguf}
# `download` pinned the default models; a GGUF given in NOVAPAY_LLM is pinned here (serve checks the lock).
"$bin" verify-models --pin --llm "$llm" >/dev/null

step "bench llm --device cuda"
"$bin" bench llm --device cuda --llm "$llm" --prompt-tokens 500 --generate-tokens 128 --rounds 2 \
  | tee target/gpu-bench.json

step "bench llm --device cuda --parallel N (concurrent clients, batched decode steps)"
# The same workload as the CPU table in docs/operations.md "Several conversations at once".
for n in 1 4 8; do
  "$bin" bench llm --device cuda --llm "$llm" --prompt-tokens 500 --generate-tokens 128 --parallel "$n" \
    | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'
done | tee target/gpu-bench-parallel.jsonl

step "index + serve on the GPU + one question"
state=$(mktemp -d)
"$bin" index --state-dir "$state"
port=${NOVAPAY_SMOKE_PORT:-18080}
"$bin" serve --state-dir "$state" --host 127.0.0.1 --port "$port" --llm "$llm" > "$state/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/health" > /dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$state/serve.log"; exit 1; }
  sleep 1
done
curl -fsS "http://127.0.0.1:$port/health"; echo
time curl -fsS "http://127.0.0.1:$port/api/v1/query" -H 'Content-Type: application/json' \
  -d '{"query": "How much does an international transfer cost?"}'
echo
step "done: report target/gpu-bench.json, target/gpu-bench-parallel.jsonl and the answer above"
