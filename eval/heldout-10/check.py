#!/usr/bin/env python3
"""Check kb-questions.jsonl against kb/: every expect_source exists, every expect_any string occurs
(whitespace-normalised, case-sensitive) in its article, ids are unique; print counts by kind and language."""
import json, os, re, sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
KB = os.path.join(HERE, "kb")
EN = {"opening-a-wallet.md", "visa-and-elcart-cards.md", "qr-payments.md", "phone-number-transfers.md",
      "merchant-account.md", "security-and-fraud.md", "closing-your-wallet.md"}

def norm(s):
    return re.sub(r"\s+", " ", s).strip()

def is_ru(text):
    return len(re.findall(r"[А-Яа-яЁё]", text)) > len(re.findall(r"[A-Za-z]", text)) * 0.3

arts = {f: norm(open(os.path.join(KB, f), encoding="utf-8").read()) for f in os.listdir(KB)}
fail, ids, counts, follow = 0, set(), Counter(), []
for n, line in enumerate(open(os.path.join(HERE, "kb-questions.jsonl"), encoding="utf-8"), 1):
    q = json.loads(line)
    if q["id"] in ids:
        print("duplicate id", q["id"]); fail += 1
    ids.add(q["id"])
    assert q["split"] == "heldout-10", q
    lang = "ru" if is_ru(q["turns"][0]) else "en"
    if q.get("unanswerable"):
        counts[("off", lang)] += 1
        continue
    src = q["expect_source"]
    if len(src) != 1 or src[0] not in arts:
        print(q["id"], "bad source", src); fail += 1; continue
    for s in q["expect_any"]:
        if norm(s) not in arts[src[0]]:
            print(q["id"], "missing in", src[0], ":", s); fail += 1
    kind = "like" if int(q["id"][1:]) >= 189 else "own"
    art_lang = "en" if src[0] in EN else "ru"
    counts[(kind, lang)] += 1
    if art_lang != lang:
        counts[(kind, "cross-" + lang)] += 1
    counts[("article", src[0])] += 1
    if len(q["turns"]) > 1:
        follow.append(q["id"])
for k in sorted(counts):
    print(k, counts[k])
print("follow-ups", len(follow), follow)
print("FAIL" if fail else "OK", fail)
sys.exit(1 if fail else 0)
