# Sourced by scripts/gpu/check-cuda-build.sh, scripts/gpu/gpu-smoke.sh and Dockerfile.cuda: a CUDA 13.4 toolchain
# from NVIDIA's PyPI wheels (scripts/gpu/cuda-requirements.txt), no system CUDA toolkit needed.
#   . scripts/gpu/cuda-env.sh      (from the repository root)
# 1. installs the pinned wheels into NOVAPAY_CUDA_CACHE (default ~/.cache/novapay) once;
# 2. makes a private link folder: unversioned names for the wheels' libraries (libcublas.so ->
#    libcublas.so.13, as a toolkit's devel package has them) and a link-only libcuda.so stub exporting the
#    driver API's function names with the real SONAME libcuda.so.1 (the toolkit ships the same kind of stub
#    in lib64/stubs): the binary then needs libcuda.so.1, which the NVIDIA driver provides at run time;
# 3. exports PATH (nvcc), CUDA_ROOT, CUDARC_CUDA_VERSION and CUDA_TOOLKIT_ROOT_DIR (cudarc adds its lib
#    and lib/stubs folders to the linker's search path), and NOVAPAY_CUDA_LIB: the run-time libraries.
NOVAPAY_CUDA_CACHE=${NOVAPAY_CUDA_CACHE:-$HOME/.cache/novapay}
_pins=$(grep -E '^nvidia-cuda-nvcc==' scripts/gpu/cuda-requirements.txt | cut -d= -f3)
_wheels="$NOVAPAY_CUDA_CACHE/cuda-wheels-$_pins"
NOVAPAY_CUDA_LINK="$NOVAPAY_CUDA_CACHE/cuda-link-$_pins"
if [ ! -e "$_wheels/.complete" ]; then
  rm -rf "$_wheels"
  python3 -m pip install --disable-pip-version-check --no-deps --quiet --target "$_wheels" \
    -r scripts/gpu/cuda-requirements.txt
  touch "$_wheels/.complete"
fi
CUDA_ROOT="$_wheels/nvidia/cu13"
[ -x "$CUDA_ROOT/bin/nvcc" ] || { echo "error: $CUDA_ROOT/bin/nvcc missing after the wheel install" >&2; return 1; }
export PATH="$CUDA_ROOT/bin:$PATH" CUDA_ROOT
# cudarc 0.19 reads the toolkit version from nvcc; the pin is 13.4, this keeps it explicit.
export CUDARC_CUDA_VERSION=13040
export NOVAPAY_CUDA_LIB="$CUDA_ROOT/lib"

mkdir -p "$NOVAPAY_CUDA_LINK/lib/stubs"
for _lib in cublas cublasLt curand nvrtc cudart; do
  _real=$(ls "$CUDA_ROOT/lib/lib$_lib.so."* 2>/dev/null | grep -E "lib$_lib\.so\.[0-9]+$" | head -1)
  [ -n "$_real" ] || { echo "error: no lib$_lib.so.N in $CUDA_ROOT/lib" >&2; return 1; }
  ln -sfn "$_real" "$NOVAPAY_CUDA_LINK/lib/lib$_lib.so"
done
if [ ! -e "$NOVAPAY_CUDA_LINK/lib/stubs/libcuda.so" ]; then
  _cudarc=$(cargo metadata --format-version 1 --locked --features cuda 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])') || true
  [ -f "$_cudarc/src/driver/sys/mod.rs" ] || { echo "error: cannot find cudarc's sources (cargo metadata --locked --features cuda)" >&2; return 1; }
  # Every driver API function cudarc can call, as a function returning CUDA_ERROR_UNKNOWN (999); the
  # error-text functions say what stands behind it if the stub is ever loaded.
  {
    grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$_cudarc/src/driver/sys/mod.rs" | awk '{print $4}' |
      grep -vE '^cuGetError(String|Name)$' | sort -u | awk '{print "int " $1 "(void) { return 999; }"}'
    echo 'static const char no_driver[] = "link-only libcuda stub loaded: no NVIDIA driver on this machine";'
    echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = no_driver; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DRIVER_STUB"; return 0; }'
  } > "$NOVAPAY_CUDA_LINK/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$NOVAPAY_CUDA_LINK/lib/stubs/libcuda.so" \
    "$NOVAPAY_CUDA_LINK/libcuda_stub.c"
fi
export CUDA_TOOLKIT_ROOT_DIR="$NOVAPAY_CUDA_LINK"
unset _pins _wheels _lib _real _cudarc
