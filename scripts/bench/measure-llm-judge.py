#!/usr/bin/env python3
"""Measures the LLM's own yes/no judgement "do these excerpts answer the question?" as an answerability
signal (issue 10 names it, "when the model is large enough — measure before adopting"). NOT part of the
tests; one fixed prompt, nothing tuned on the results.

Score = P(yes) / (P(yes) + P(no)) from the next-token logits after a ChatML prompt (SmolLM2's template;
run with a Llama 3 GGUF only after changing the template below). Reported threshold-free, as the AUC
between answerable and unanswerable questions, and, for our own sets, how many answerable questions score
above the highest-scoring unanswerable one (what would pass if every off-topic question must be refused).

  python scripts/bench/measure-llm-judge.py squad GGUF [N]        # ../shared/eval/squad2-sample, gold paragraph
  python scripts/bench/measure-llm-judge.py sets GGUF EMBEDDER_DIR  # eval/*/ sets, top 3 sections by MiniLM

Needs llama-cpp-python and sentence-transformers (the venv described in scripts/bench/compare-runtimes.py).
"""
import glob
import json
import math
import random
import re
import sys

from llama_cpp import Llama

SETS = [
    ("eval/tune-3/data-questions.jsonl", "data"),
    ("eval/tune-3/kb-questions.jsonl", "eval/tune-3/kb"),
    ("eval/heldout-3/data-questions.jsonl", "data"),
    ("eval/heldout-3/kb-questions.jsonl", "eval/heldout-3/kb"),
    ("eval/heldout-4/data-questions.jsonl", "data"),
    ("eval/heldout-4/kb-questions.jsonl", "eval/heldout-3/kb"),
]


def chatml(system, user):
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


class Judge:
    def __init__(self, gguf, ctx=2048):
        self.llm = Llama(model_path=gguf, n_ctx=ctx, n_batch=ctx, n_threads=2, logits_all=True,
                         verbose=False)
        self.ctx = ctx
        first = lambda w: self.llm.tokenize(w.encode(), add_bos=False, special=False)[0]
        self.yes = {first(w) for w in ["yes", "Yes", " yes", " Yes"]}
        self.no = {first(w) for w in ["no", "No", " no", " No"]}

    def p_yes(self, prompt):
        toks = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)[-(self.ctx - 8):]
        self.llm.reset()
        self.llm.eval(toks)
        logits = self.llm.scores[self.llm.n_tokens - 1]
        top = max(logits)
        py = sum(math.exp(logits[i] - top) for i in self.yes)
        pn = sum(math.exp(logits[i] - top) for i in self.no)
        return py / (py + pn)


def auc(answerable, unanswerable):
    pairs = sum((a > u) + 0.5 * (a == u) for a in answerable for u in unanswerable)
    return pairs / max(1, len(answerable) * len(unanswerable))


def squad(gguf, n=80):
    rows = [json.loads(l) for l in open("../shared/eval/squad2-sample/squad2-dev-sample300.jsonl")]
    random.Random(7).shuffle(rows)
    judge = Judge(gguf, 1024)
    def score(r):
        return judge.p_yes(chatml(
            "You check whether a text answers a question. Reply with yes or no only.",
            f"Text: {r['context']}\n\nQuestion: {r['question']}\n\n"
            "Does the text contain the answer to the question? Reply yes or no."))
    sa = [score(r) for r in [r for r in rows if not r["is_impossible"]][: n // 2]]
    su = [score(r) for r in [r for r in rows if r["is_impossible"]][: n // 2]]
    print(f"squad2-sample: answerable {len(sa)} unanswerable {len(su)} AUC {auc(sa, su):.3f}")
    for t in [0.2, 0.3, 0.4, 0.5]:
        print(f"  threshold {t:.1f}: unanswerable refused {sum(s < t for s in su) / len(su):.0%}, "
              f"false refusals {sum(s < t for s in sa) / len(sa):.0%}")


def sections(kb):
    out = []
    for f in sorted(glob.glob(kb + "/*")):
        parts = re.split(r"\n(?=#+ )", open(f).read())
        out += [p.strip()[:1200] for p in parts if len(p.strip()) > 40]
    return out


def sets(gguf, embedder_dir):
    from sentence_transformers import SentenceTransformer
    emb = SentenceTransformer(embedder_dir, device="cpu")
    judge = Judge(gguf)
    for questions, kb in SETS:
        secs = sections(kb)
        vecs = emb.encode(secs, normalize_embeddings=True)
        sa, su = [], []
        for line in open(questions):
            r = json.loads(line)
            q = " ".join(r["turns"])
            qv = emb.encode([q], normalize_embeddings=True)[0]
            top = sorted(range(len(secs)), key=lambda i: -float(vecs[i] @ qv))[:3]
            excerpts = "\n\n".join(f"[{k + 1}] {secs[i]}" for k, i in enumerate(top))
            s = judge.p_yes(chatml(
                "You check whether excerpts from a help center answer a customer's question. "
                "Reply with yes or no only.",
                f"Excerpts:\n{excerpts}\n\nQuestion: {q}\n\n"
                "Do the excerpts contain the answer to the question? Reply yes or no."))
            (su if r.get("unanswerable") else sa).append(s)
        above = sum(a > max(su) for a in sa) if su else len(sa)
        print(f"{questions}: answerable {len(sa)} unanswerable {len(su)} AUC {auc(sa, su):.3f}; "
              f"answerable above every unanswerable {above}/{len(sa)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "squad":
        squad(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 80)
    elif len(sys.argv) == 4 and sys.argv[1] == "sets":
        sets(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
