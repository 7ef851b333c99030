#!/usr/bin/env bash
# Proves that `cargo build --release --features cuda` compiles AND links on a machine without a GPU, a
# driver or a CUDA toolkit, using only NVIDIA's CUDA wheels from PyPI (scripts/gpu/cuda-requirements.txt).
# Not part of the test command: it took 56 minutes on a shared 2-core machine (4 once candle is built). Run it after changing engine code,
# candle or the CUDA pins:
#
#     scripts/gpu/check-cuda-build.sh                  # kernels for sm_80 (A100, A10, L4...), full link
#     CUDA_COMPUTE_CAPS="80 90" scripts/gpu/check-cuda-build.sh   # + the static kernels for sm_90 (H100)
#
# What it does, and why each step is honest:
# 1-2. scripts/gpu/cuda-env.sh: the pinned wheels in a cache folder, unversioned library names and a link-only
#    libcuda.so stub with the real SONAME (as the toolkit's lib64/stubs has). At run time the driver's own
#    libcuda.so.1 is loaded; the stub is never used on a GPU host;
# 3. builds novapay with `--features cuda` into target/cuda (its own target folder);
# 4. checks the binary: it needs libcuda.so.1 and the CUDA 13 libraries (all but the driver's found in the
#    wheels), starts on CPU (`--device cpu`)
#    with the small test model when models/test is present, and gives the clear "no CUDA device" error
#    for `--device cuda` (the stub stands in for a driver without GPUs);
# 5. for every further compute capability in CUDA_COMPUTE_CAPS, compiles candle's CUDA kernels
#    (PTX and the statically linked quantized-matmul kernels) for it.
# Environment: CARGO_BUILD_JOBS (default 1), NICE (default 19) keep a shared machine usable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

CAPS=(${CUDA_COMPUTE_CAPS:-80})
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
# nvcc runs in cudaforge's rayon pool: one file at a time unless told otherwise.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$CARGO_BUILD_JOBS}
NICE=${NICE:-19}
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started ))s] $*"; }

step "1-2. CUDA wheels, link folder (scripts/gpu/cuda-env.sh)"
. scripts/gpu/cuda-env.sh
nvcc --version | tail -2
echo "libcuda stub: $NOVAPAY_CUDA_LINK/lib/stubs/libcuda.so ($(wc -l < "$NOVAPAY_CUDA_LINK/libcuda_stub.c") functions)"

step "3. cargo build --release --features cuda (CUDA_COMPUTE_CAP=${CAPS[0]}, $CARGO_BUILD_JOBS jobs) into $CARGO_TARGET_DIR"
if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d "$ROOT/target/release/deps" ]; then
  # Seed from the CPU build: only candle, cudarc and novapay differ.
  mkdir -p "$CARGO_TARGET_DIR" && cp -a "$ROOT/target/release" "$CARGO_TARGET_DIR/release"
fi
CUDA_COMPUTE_CAP=${CAPS[0]} nice -n "$NICE" cargo build --release --locked --features cuda --bin novapay
BIN="$CARGO_TARGET_DIR/release/novapay"

step "4. the binary"
readelf -d "$BIN" | grep NEEDED
for need in libcuda.so.1 libcublas.so.13 libcurand.so.10 libcudart.so.13; do
  readelf -d "$BIN" | grep -q "\[$need\]" || { echo "error: $BIN does not need $need" >&2; exit 1; }
done
# Every library it needs but the driver's is in the wheels (what Dockerfile.cuda copies).
missing=$(LD_LIBRARY_PATH="$NOVAPAY_CUDA_LIB" ldd "$BIN" | grep "not found" | grep -v "libcuda.so.1" || true)
[ -z "$missing" ] || { echo "error: libraries not found: $missing" >&2; exit 1; }
# Running it: the wheels' libraries, and the stub standing in for a driver without any GPU.
RUN="$NOVAPAY_CUDA_LINK/run" && mkdir -p "$RUN" && ln -sfn "$NOVAPAY_CUDA_LINK/lib/stubs/libcuda.so" "$RUN/libcuda.so.1"
export LD_LIBRARY_PATH="$RUN:$NOVAPAY_CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$BIN" --version
if out=$("$BIN" bench llm --device cuda --llm models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
    --rounds 1 --generate-tokens 2 --prompt-tokens 16 2>&1); then
  echo "error: --device cuda succeeded on a machine without a GPU" >&2; exit 1
fi
echo "$out" | tail -1
echo "$out" | grep -q "CUDA" || { echo "error: unclear --device cuda error: $out" >&2; exit 1; }
if [ -e models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  NOVAPAY_THREADS=1 "$BIN" bench llm --device cpu --llm models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
    --rounds 1 --generate-tokens 8 --prompt-tokens 64 | tail -5
fi

# Further GPU generations: the same nvcc commands candle-kernels' build script runs (PTX for the
# kernels loaded at run time, objects for the statically linked quantized-matmul/MoE kernels).
KSRC=$(cargo metadata --format-version 1 --locked --features cuda |
  python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="candle-kernels").rsplit("/",1)[0])')
for cap in "${CAPS[@]:1}"; do
  step "5. candle's CUDA kernels for sm_$cap"
  out="$CARGO_TARGET_DIR/kernels-sm$cap" && mkdir -p "$out"
  flags=(-gencode "arch=compute_$cap,code=sm_$cap" --expt-relaxed-constexpr -std=c++17 -O3)
  (
    cd "$KSRC"
    for cu in src/*.cu; do
      [ "$cu" = src/mmvq_gguf.cu ] && continue
      nice -n "$NICE" nvcc --ptx --default-stream per-thread "${flags[@]}" -o "$out/$(basename "$cu" .cu).ptx" "$cu"
    done
    for cu in src/moe/moe_gguf.cu src/moe/moe_wmma.cu src/moe/moe_wmma_gguf.cu src/mmvq_gguf.cu \
        src/mmq_gguf/mmq_quantize.cu src/mmq_gguf/mmq_instance_*.cu; do
      nice -n "$NICE" nvcc -c "${flags[@]}" -Xcompiler -fPIC -o "$out/$(basename "$cu" .cu).o" "$cu"
    done
  )
  echo "sm_$cap: $(ls "$out"/*.ptx | wc -l) PTX files, $(ls "$out"/*.o | wc -l) kernel objects in $out"
done

step "done: the cuda feature compiles and links (binary: $BIN)"
