#!/usr/bin/env python3
"""Benchmark novapay against the reference runtimes (NOT part of the tests).

For R rounds, interleaved, each run in a fresh process:
  (a) novapay bench llm --llm GGUF --threads N ...   -> JSON: prompt_tokens_per_s, generation_tokens_per_s,
                                                        time_to_first_token_ms, peak_rss_mb, prompt_tokens, ...
  (b) llama.cpp (llama-cpp-python) on the same GGUF, n_threads=N, n_ctx=2048, same protocol as src/bench.rs:
        scripts/bench/data/prompt.txt tokenized (no BOS), repeated/truncated to exactly 500 tokens, evaluated
        after llm.reset() (prompt tok/s; TTFT = prefill + first greedy pick), then greedy tokens up to 128
        with EOS ignored (generation tok/s = 127 decode steps / their time); medians of 3 inner rounds
        after a short warm-up
  (c) novapay bench embed --embedder DIR --threads N  -> JSON: chunks_per_s (batch 32), peak_rss_mb
  (d) sentence-transformers encode of scripts/bench/data/chunks.txt (64 chunks of ~200 words),
        torch.set_num_threads(N), batch 32, median of 3 inner rounds after a warm-up on 4 chunks
Then prints medians over the R rounds and novapay/reference ratios.

Needs a Python with llama-cpp-python and sentence-transformers (e.g. the venv of scripts/dev/fixtures/);
HF_HUB_OFFLINE=1 is set for the children, models load from local paths only.

  python scripts/bench/compare-runtimes.py [--novapay target/release/novapay] [--gguf PATH] [--embedder-dir DIR]
                                     [--threads 2] [--rounds 3] [--reference-only] [--llm-only]
                                     [--contend] [--embed-only] [--json-out FILE]

--contend keeps one busy process (a spinning Python loop, niced to 0, pinned to the last core when
possible) running during every engine's run, as a production server always has something else running;
compare the ratios with and without it. --llm-only skips the embedder comparison (no
sentence-transformers needed); --embed-only skips the LLM comparison (no llama-cpp-python needed).

sentence-transformers reference as measured for issue 9 (this machine has no CPU-only torch on PyPI:
PyPI's Linux torch wheel is the CUDA build, and `import torch` fails without the CUDA libraries it
links, even on a CPU-only host; with them installed it runs on the CPU with its bundled MKL/oneDNN and
never touches a GPU):
  python -m venv venv && venv/bin/pip install llama-cpp-python torch==2.15.0 sentence-transformers==6.2.0
(torch 2.15.0+cu132 pulls ~4 GB of nvidia-* / cuda-toolkit wheels; transformers 5.24, tokenizers 0.23).
torch.set_num_threads(N) and OMP_NUM_THREADS=N set its thread count to novapay's --threads.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_GGUF = os.path.join(ROOT, "models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_EMBEDDER = os.path.join(ROOT, "models/test/all-MiniLM-L6-v2")
DEFAULT_PROMPT = os.path.join(ROOT, "scripts/bench/data/prompt.txt")
DEFAULT_CHUNKS = os.path.join(ROOT, "scripts/bench/data/chunks.txt")
GEN_TOKENS = 128
N_CTX = 2048
EMBED_BATCH = 32


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def read_prompt(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_chunks(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


# ---------------------------------------------------------------- reference workers (run in a child process)

def worker_llm(args):
    """Mirrors novapay's bench protocol (src/bench.rs): prompt tokenized without BOS/special tokens, repeated
    and truncated to exactly --prompt-tokens; warm-up of 32 prompt tokens + 4 generated; then per round a fresh
    prefill and exactly GEN_TOKENS greedy tokens with EOS ignored. TTFT = start of prefill to first token;
    generation tok/s = (GEN_TOKENS - 1) / time after the first token (the first comes out of prefill).
    Medians over --inner-rounds."""
    import ctypes

    import numpy as np
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=N_CTX, n_threads=args.threads, n_threads_batch=args.threads,
                          n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    text_tokens = llm.tokenize(read_prompt(args.prompt_file).encode("utf-8"), add_bos=False, special=False)
    tokens = list(text_tokens)
    while len(tokens) < args.prompt_tokens:
        tokens = tokens + tokens
    tokens = tokens[:args.prompt_tokens]

    def greedy():
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))))

    def generate(prompt, n_new):
        llm.reset()
        t_start = time.perf_counter()
        llm.eval(prompt)
        t_prompt = time.perf_counter() - t_start
        tok = greedy()
        ttft = time.perf_counter() - t_start
        out = [tok]
        t_gen0 = time.perf_counter()
        while len(out) < n_new:  # EOS ignored
            llm.eval([tok])
            tok = greedy()
            out.append(tok)
        return t_prompt, ttft, time.perf_counter() - t_gen0, out

    if not args.no_warmup:
        generate(tokens[:32], 4)
    pps, gps, ttfts = [], [], []
    for _ in range(args.inner_rounds):
        t_prompt, ttft, t_gen, out = generate(tokens, GEN_TOKENS)
        pps.append(len(tokens) / t_prompt)
        gps.append((len(out) - 1) / t_gen)
        ttfts.append(ttft * 1000.0)
    return {
        "prompt_tokens": len(tokens),
        "prompt_file_tokens": len(text_tokens),
        "generated_tokens": len(out),
        "prompt_tokens_per_s": statistics.median(pps),
        "generation_tokens_per_s": statistics.median(gps),
        "time_to_first_token_ms": statistics.median(ttfts),
        "peak_rss_mb": peak_rss_mb(),
        "load_ms": load_s * 1000.0,
        "sample_text": llm.detokenize(out[:24]).decode("utf-8", errors="replace"),
    }


def worker_embed(args):
    """Mirrors novapay's bench protocol: warm-up on 4 chunks, then --inner-rounds encodes of all chunks at batch
    --batch-size; chunks/s is the median."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = SentenceTransformer(args.embedder_dir, device="cpu")
    load_s = time.perf_counter() - t0
    chunks = read_chunks(args.chunks_file)
    n_tok = [min(len(ids), model.max_seq_length) for ids in model.tokenizer(chunks)["input_ids"]]
    if not args.no_warmup:
        model.encode(chunks[:4], batch_size=args.batch_size, show_progress_bar=False)
    rates = []
    for _ in range(args.inner_rounds):
        t0 = time.perf_counter()
        emb = model.encode(chunks, batch_size=args.batch_size, show_progress_bar=False)
        rates.append(len(chunks) / (time.perf_counter() - t0))
        assert emb.shape[0] == len(chunks)
    return {
        "chunks": len(chunks),
        "batch_size": args.batch_size,
        "chunks_per_s": statistics.median(rates),
        "mean_tokens_per_chunk": sum(n_tok) / len(n_tok),
        "truncated_chunks": sum(1 for n in n_tok if n >= model.max_seq_length),
        "peak_rss_mb": peak_rss_mb(),
        "load_ms": load_s * 1000.0,
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------- runners

def child_env(threads):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def parse_json_output(text, what):
    """The last JSON object in stdout (pretty-printed or one line; log lines before it are skipped)."""
    dec = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
            if isinstance(obj, dict):
                found = obj
            i = text.find("{", end)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
    if found is None:
        raise SystemExit(f"error: {what} printed no JSON object; stdout was:\n{text[-2000:]}")
    return found


def cpu_busy_s():
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


CONTEND_CODE = "import os\ntry:\n    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\nexcept Exception:\n    pass\nwhile True:\n    pass\n"


class Contender:
    """One process spinning on one core for as long as the context is open."""

    def __init__(self, enabled):
        self.enabled, self.proc = enabled, None

    def __enter__(self):
        if self.enabled:
            self.proc = subprocess.Popen([sys.executable, "-c", CONTEND_CODE])
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def run_once(cmd, what, threads):
    busy0, ru0 = cpu_busy_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads), cwd=ROOT)
    wall = time.perf_counter() - t0
    busy1, ru1 = cpu_busy_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"error: {what} failed (exit {p.returncode}): {' '.join(cmd)}\n"
                         f"--- stderr ---\n{p.stderr[-3000:]}\n--- stdout ---\n{p.stdout[-2000:]}")
    out = parse_json_output(p.stdout, what)
    out["_wall_s"] = wall
    if busy0 is not None:
        own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        # CPU that other processes used while this one ran, as % of one core
        out["_foreign_cpu_pct"] = max(0.0, (busy1 - busy0) - own) / wall * 100.0
    return out


CONTEND = False


def run(cmd, what, threads, retries=0, max_foreign=25.0):
    """Runs a benchmark process; if other processes used more than max_foreign % of a core meanwhile (a busy
    machine skews these numbers badly, OpenMP spinning in llama.cpp most of all), waits and retries up to
    `retries` times, then keeps the last run and flags it."""
    if CONTEND:
        with Contender(True):
            out = run_once(cmd, what, threads)
        out["_contended"] = True
        return out
    for attempt in range(retries + 1):
        out = run_once(cmd, what, threads)
        foreign = out.get("_foreign_cpu_pct", 0.0)
        if foreign <= max_foreign:
            return out
        print(f"  warning: other processes used {foreign:.0f}% of a core during {what}"
              + (f"; retrying in 30 s ({attempt + 1}/{retries})" if attempt < retries else "; numbers unreliable"),
              file=sys.stderr, flush=True)
        if attempt < retries:
            time.sleep(30)
    out["_busy"] = True
    return out


def ref_cmd(kind, args):
    return [sys.executable, os.path.abspath(__file__), "--_worker", kind, "--gguf", args.gguf,
            "--embedder-dir", args.embedder_dir, "--threads", str(args.threads),
            "--prompt-file", args.prompt_file, "--chunks-file", args.chunks_file,
            "--prompt-tokens", str(args.prompt_tokens), "--batch-size", str(args.batch_size),
            "--inner-rounds", str(args.inner_rounds)] + \
           (["--no-warmup"] if args.no_warmup else [])


LLM_METRICS = [("prompt_tokens_per_s", "higher"), ("generation_tokens_per_s", "higher"),
               ("time_to_first_token_ms", "lower"), ("peak_rss_mb", "lower")]
EMB_METRICS = [("chunks_per_s", "higher"), ("peak_rss_mb", "lower")]


def median(rs, key):
    vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def fmt(x):
    if x is None:
        return "-"
    return f"{x:.2f}" if abs(x) < 1000 else f"{x:.0f}"


def print_table(title, metrics, nova, ref, ref_name):
    print(f"\n{title}")
    print(f"  {'metric':<26} {'novapay':>10} {ref_name:>20} {'ratio nova/ref':>15}  better")
    for key, better in metrics:
        n, r = median(nova, key), median(ref, key)
        ratio = f"{n / r:.3f}" if (n is not None and r) else "-"
        print(f"  {key:<26} {fmt(n):>10} {fmt(r):>20} {ratio:>15}  {better}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--novapay", default=os.path.join(ROOT, "target/release/novapay"))
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--embedder-dir", default=DEFAULT_EMBEDDER)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-file", default=DEFAULT_PROMPT)
    ap.add_argument("--chunks-file", default=DEFAULT_CHUNKS)
    ap.add_argument("--prompt-tokens", type=int, default=500,
                    help="prompt length: the file's tokens repeated/truncated to this many (as novapay does)")
    ap.add_argument("--batch-size", type=int, default=EMBED_BATCH)
    ap.add_argument("--inner-rounds", type=int, default=3,
                    help="timed repetitions inside each process (novapay's own --rounds); medians are reported")
    ap.add_argument("--reference-only", action="store_true", help="skip novapay, run only llama.cpp / sentence-transformers")
    ap.add_argument("--no-warmup", action="store_true", help="reference runs: skip the short warm-up pass")
    ap.add_argument("--retry-busy", type=int, default=0, metavar="N",
                    help="re-run a measurement up to N times when other processes were using the CPU meanwhile")
    ap.add_argument("--json-out", help="also write every round's raw results here")
    ap.add_argument("--llm-only", action="store_true", help="skip the embedder comparison")
    ap.add_argument("--embed-only", action="store_true", help="skip the LLM comparison")
    ap.add_argument("--contend", action="store_true",
                    help="keep one busy process on one core during every run (contention test)")
    ap.add_argument("--shared-prefix", type=int, default=0,
                    help="novapay only: also report TTFT with the prefix cache (bench llm --shared-prefix N)")
    ap.add_argument("--_worker", choices=["llm", "embed"], help=argparse.SUPPRESS)
    args = ap.parse_args()

    global CONTEND
    CONTEND = args.contend
    if args._worker:
        res = worker_llm(args) if args._worker == "llm" else worker_embed(args)
        print(json.dumps(res, ensure_ascii=False))
        return

    if args.llm_only and args.embed_only:
        raise SystemExit("error: --llm-only and --embed-only exclude each other")
    for p, what in ([] if args.embed_only else [(args.gguf, "--gguf"), (args.prompt_file, "--prompt-file")]) + \
            ([] if args.llm_only else [(args.embedder_dir, "--embedder-dir"), (args.chunks_file, "--chunks-file")]):
        if not os.path.exists(p):
            raise SystemExit(f"error: {what} {p} does not exist (models: scripts/fetch-test-models.sh)")
    if not args.reference_only:
        if not (os.path.isfile(args.novapay) and os.access(args.novapay, os.X_OK)):
            raise SystemExit(f"error: novapay binary not found at {args.novapay}\n"
                             f"  build it with `cargo build --release`, pass --novapay PATH, "
                             f"or use --reference-only to run just llama.cpp and sentence-transformers")
    missing = []
    for mod in (() if args.embed_only else ("llama_cpp",)) + (() if args.llm_only else ("sentence_transformers",)):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise SystemExit(f"error: this Python ({sys.executable}) lacks {', '.join(missing)}; "
                         f"pip install llama-cpp-python sentence-transformers")

    nova_llm, ref_llm, nova_emb, ref_emb = [], [], [], []
    for rnd in range(1, args.rounds + 1):
        print(f"round {rnd}/{args.rounds}", file=sys.stderr, flush=True)
        if not args.reference_only and not args.embed_only:
            nova_llm.append(run([args.novapay, "bench", "llm", "--llm", args.gguf, "--threads", str(args.threads),
                                 "--prompt-file", args.prompt_file, "--prompt-tokens", str(args.prompt_tokens),
                                 "--generate-tokens", str(GEN_TOKENS), "--rounds", str(args.inner_rounds)]
                                + (["--shared-prefix", str(args.shared_prefix)] if args.shared_prefix else []),
                                "novapay bench llm", args.threads, args.retry_busy))
        if not args.embed_only:
            ref_llm.append(run(ref_cmd("llm", args), "llama.cpp reference", args.threads, args.retry_busy))
        if not args.reference_only and not args.llm_only:
            nova_emb.append(run([args.novapay, "bench", "embed", "--embedder", args.embedder_dir,
                                 "--threads", str(args.threads), "--chunks-file", args.chunks_file,
                                 "--batch-size", str(args.batch_size), "--rounds", str(args.inner_rounds)],
                                "novapay bench embed", args.threads, args.retry_busy))
        if not args.llm_only:
            ref_emb.append(run(ref_cmd("embed", args), "sentence-transformers reference", args.threads,
                               args.retry_busy))
        for name, rs in [("novapay llm", nova_llm), ("llama.cpp", ref_llm), ("novapay embed", nova_emb),
                         ("sentence-transformers", ref_emb)]:
            if rs and len(rs) == rnd:
                r = {k: v for k, v in rs[-1].items() if k not in ("_wall_s", "sample_text")}
                print(f"  {name}: {json.dumps(r)}", file=sys.stderr, flush=True)

    versions = []
    if not args.embed_only:
        import llama_cpp
        versions.append(f"llama-cpp-python {llama_cpp.__version__}")
    if not args.llm_only:
        import sentence_transformers
        import torch
        versions.append(f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}")
    versions = ", ".join(versions)
    print(f"\nthreads={args.threads} rounds={args.rounds} (medians){' with one busy process on one core' if args.contend else ''}; "
          f"{versions}")
    pt = median(ref_llm, "prompt_tokens")
    if ref_llm:
        print(f"prompt: {args.prompt_file} = {pt:.0f} tokens (llama.cpp)"
              + (f", {median(nova_llm, 'prompt_tokens'):.0f} tokens (novapay)" if nova_llm else "")
              + f"; generation: {GEN_TOKENS} greedy tokens, EOS ignored")
    if nova_llm and median(nova_llm, "prompt_tokens") not in (None, pt):
        print("WARNING: novapay and llama.cpp evaluated different prompt lengths; prompt tok/s not comparable 1:1")
    if ref_emb:
        print(f"embed: {args.chunks_file} = {median(ref_emb, 'chunks'):.0f} chunks, batch {args.batch_size}, "
              f"mean {median(ref_emb, 'mean_tokens_per_chunk'):.0f} word pieces/chunk after truncation to 256, "
              f"{median(ref_emb, 'truncated_chunks'):.0f} chunks truncated")
    if nova_llm:
        print(f"novapay weight types: {nova_llm[-1].get('weight_types')} (llama.cpp runs the GGUF's own types)")
    n_busy = sum(1 for rs in (nova_llm, ref_llm, nova_emb, ref_emb) for r in rs if r.get("_busy"))
    if n_busy:
        print(f"WARNING: {n_busy} run(s) shared the CPU with other processes; their numbers are unreliable "
              f"(use --retry-busy N on a shared machine)")
    if nova_llm or ref_llm:
        print_table("LLM (novapay vs llama.cpp)", LLM_METRICS, nova_llm, ref_llm, "llama.cpp")
    if nova_llm or ref_llm:
        quiet = lambda rs: min(rs, key=lambda r: r.get("_foreign_cpu_pct", 0.0)) if rs else None
        qn, qr = quiet(nova_llm), quiet(ref_llm)
        print("  quietest round (least foreign CPU):")
        for key, _ in LLM_METRICS:
            n, r = (qn or {}).get(key), (qr or {}).get(key)
            ratio = f"{n / r:.3f}" if (n is not None and r) else "-"
            print(f"    {key:<24} {fmt(n):>10} {fmt(r):>20} {ratio:>15}")
    if nova_llm and nova_llm[-1].get("fraction_of_bandwidth_limit") is not None:
        fr = median(nova_llm, "fraction_of_bandwidth_limit")
        bw = statistics.median(r["memory"]["read_gb_per_s"] for r in nova_llm)
        wb = nova_llm[-1]["weight_bytes_per_token"]
        print(f"  novapay: {wb / 1e9:.2f} GB of weights per token, read bandwidth {bw:.1f} GB/s -> limit "
              f"{bw * 1e9 / wb:.1f} tok/s; generation reaches {fr:.2f} of it")
    if nova_llm and nova_llm[-1].get("prefix_cache"):
        pc = [r["prefix_cache"] for r in nova_llm]
        med = lambda k: statistics.median(p[k] for p in pc)
        print(f"  novapay TTFT with a {pc[-1]['shared_prefix_tokens']}-token shared prefix: first question "
              f"{med('first_question_ttft_ms'):.0f} ms, another question after the same prefix "
              f"{med('same_prefix_ttft_ms'):.0f} ms, follow-up {med('follow_up_ttft_ms'):.0f} ms")
    if ref_emb:
        print_table("Embedder (novapay vs sentence-transformers)", EMB_METRICS, nova_emb, ref_emb,
                    "sent-transformers")
        print("  per round (chunks/s; CPU other processes used meanwhile, % of one core):")
        for i, r in enumerate(ref_emb):
            n = nova_emb[i] if i < len(nova_emb) else {}
            ratio = f"{n['chunks_per_s'] / r['chunks_per_s']:.3f}" if n else "-"
            print(f"    round {i + 1}: novapay {fmt(n.get('chunks_per_s'))} (foreign "
                  f"{fmt(n.get('_foreign_cpu_pct'))}%), sentence-transformers {fmt(r['chunks_per_s'])} "
                  f"(foreign {fmt(r.get('_foreign_cpu_pct'))}%), ratio {ratio}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"threads": args.threads, "rounds": args.rounds, "novapay_llm": nova_llm, "llama_cpp": ref_llm,
                       "novapay_embed": nova_emb, "sentence_transformers": ref_emb}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
