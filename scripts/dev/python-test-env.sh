#!/usr/bin/env bash
# The Python environment of the tests that drive novapay with official client packages (the `openai`
# SDK, ...): a venv with tests/requirements.txt installed from PyPI. Kept under target/ and reinstalled
# only when the requirements file changes, so a second run costs one hash.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${NOVAPAY_TEST_VENV:-$root/target/test-venv}"
req="$root/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "python test packages present in $venv" >&2
  exit 0
fi
echo "installing python test packages (tests/requirements.txt) into $venv ..." >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" >"$stamp"
echo "python test packages installed in $venv" >&2
