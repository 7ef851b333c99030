#!/usr/bin/env python3
"""Reference for `novapay bench llm --parallel N`: llama.cpp's llama-server with N parallel slots.

The same workload as novapay's bench_llm_parallel (src/bench.rs): N clients submitted at once, each a
distinct prompt of --prompt-tokens tokens (the prompt file tokenized by the server's own tokenizer via
POST /tokenize, no BOS/special tokens added, repeated until it holds prompt + 64*N tokens; client c takes
tokens [64c, 64c + prompt)), exactly --generate-tokens greedy tokens each (temperature 0, ignore_eos),
times from submission. Each N gets a fresh server (`-np N -c N*(prompt+gen+64)`, continuous batching,
prompt cache off: `cache_prompt: false` and `--cache-ram 0` where the build has it), a warm-up request
(32 prompt tokens, 2 generated), then the N streamed /completion requests. One JSON object per N on
stdout, with novapay's ParallelLlmReport field names, plus:
  engine                       "llama-server <llama.cpp commit>"
  decode_tokens_per_s          sum over requests of (tokens - 1) / (max last-token time - min first-token
                               time): aggregate decode rate with the prompt reading before the first
                               token left out
  decode_window_tokens_per_s   novapay's decode_window_rate: tokens timed in [latest first token,
                               earliest last token] over that window (null when it is empty)
  server_prompt_per_second_mean, server_predicted_per_second_mean
                               the server's own `timings` of the final stream event, averaged
  completion_tokens            tokens each request got (all must equal generate_tokens)
Server logs go to a temporary file (its path is printed on stderr when a run fails).

Usage (from the repository root):
  python3 scripts/bench/llama-server-parallel.py \\
      --server-bin /work/tools/llama.cpp-src/build/bin/llama-server \\
      --model /work/synth3b/llama3b-q4_k_m.gguf --threads 2 --clients 1,2,4,8
  Quick check: --model models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --clients 1,2 --generate-tokens 16

How llama-server was built (CPU only, 2 jobs, low priority). The whole ggml-org/llama.cpp snapshot was
too large to fetch here, so the source is the copy vendored in llama-cpp-python 0.3.36's sdist (PyPI;
its CHANGELOG: "update llama.cpp to ggml-org/llama.cpp@0c1e57098"), the same llama.cpp as the
llama-cpp-python reference in docs/:
  pip download llama-cpp-python==0.3.36 --no-binary llama-cpp-python --no-deps -d /work/tools/dl
  tar -xzf /work/tools/dl/llama_cpp_python-0.3.36.tar.gz -C /work/tools/dl
  cp -a /work/tools/dl/llama_cpp_python-0.3.36/vendor/llama.cpp/. /work/tools/llama.cpp-src/
  rm /work/tools/llama.cpp-src/.git          # a submodule pointer file; git then reports no commit
  pip install cmake                          # no cmake on the machine
  cd /work/tools/llama.cpp-src
  nice -n 19 cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \\
      -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \\
      -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \\
      -DGGML_AMX_BF16=OFF -DGGML_OPENMP=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \\
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
  nice -n 19 cmake --build build --target llama-server -j2
(AMX off and AVX-512 explicit: a GGML_NATIVE build crashed at its first evaluation on an AMX host.
In this llama.cpp LLAMA_CURL is gone (LLAMA_OPENSSL instead), GGML_AVX512_BW does not exist (GGML_AVX512
already adds -mavx512bw), and the web UI is fetched from a hub unless LLAMA_USE_PREBUILT_UI=OFF.)
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def post_json(url, body, timeout=600):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_help(server_bin):
    out = subprocess.run([server_bin, "--help"], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def engine_commit(server_bin, given):
    if given:
        return given
    try:
        out = subprocess.run([server_bin, "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"version:\s*\S+\s*\(([0-9a-f]{7,40})\)", out.stdout + out.stderr)
        if m:
            return m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    # A source tree without git (vendored copy): the commit written beside it when it was unpacked.
    d = os.path.dirname(os.path.abspath(server_bin))
    for _ in range(5):
        f = os.path.join(d, "VENDORED_COMMIT.txt")
        if os.path.exists(f):
            return open(f).read().strip()
        d = os.path.dirname(d)
    return "unknown"


def start_server(args, n, port, help_text, log_path):
    ctx = n * (args.prompt_tokens + args.generate_tokens + 64)
    cmd = [
        args.server_bin, "-m", args.model,
        "-t", str(args.threads), "-tb", str(args.threads),
        "-np", str(n), "-c", str(ctx),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    if "--cont-batching" in help_text:
        cmd.append("--cont-batching")
    if "--no-webui" in help_text:
        cmd.append("--no-webui")
    if "--cache-ram" in help_text:
        cmd += ["--cache-ram", "0"]
    cmd += args.server_arg
    log("starting: " + " ".join(cmd))
    logf = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + args.load_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}; log: {log_path}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, base, cmd
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"llama-server not healthy after {args.load_timeout}s; log: {log_path}")


def stop_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def completion_body(ids, n_predict, stream):
    return {
        "prompt": ids,
        "n_predict": n_predict,
        "ignore_eos": True,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": stream,
        "cache_prompt": False,
    }


def stream_completion(base, ids, n_predict, start, go, out):
    """One client: waits for `go`, submits, and records each token's time (ms since `start`)."""
    req = urllib.request.Request(
        base + "/completion",
        data=json.dumps(completion_body(ids, n_predict, True)).encode(),
        headers={"Content-Type": "application/json"},
    )
    go.wait()
    times, seen, final = [], 0, None
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                ev = json.loads(payload)
                now = (time.perf_counter() - start) * 1e3
                if "error" in ev:
                    raise RuntimeError(str(ev["error"]))
                n = ev.get("tokens_predicted")
                if n is None:  # older builds: one token per event, or the token list
                    n = seen + (len(ev.get("tokens") or []) or (1 if ev.get("content") else 0))
                # A stream event may carry several tokens (held-back partial UTF-8): same arrival time.
                while seen < n:
                    times.append(now)
                    seen += 1
                if ev.get("stop"):
                    final = ev
                    break
        out["times"] = times
        out["final"] = final or {}
        out["completion_tokens"] = (final or {}).get("tokens_predicted", seen)
    except Exception as e:  # reported by the caller
        out["error"] = repr(e)


def pct(values, p):
    v = sorted(values)
    i = int(round((len(v) - 1) * p))
    return v[min(i, len(v) - 1)]


def decode_window_rate(token_times_ms):
    """novapay's bench::decode_window_rate."""
    if not token_times_ms or any(not t for t in token_times_ms):
        return None
    frm = max(t[0] for t in token_times_ms)
    to = min(t[-1] for t in token_times_ms)
    inside = sum(1 for ts in token_times_ms for t in ts if frm < t <= to)
    if to > frm and inside >= 2 * len(token_times_ms):
        return inside * 1e3 / (to - frm)
    return None


def run_one(args, n, text, help_text, commit):
    port = args.port if args.port else free_port()
    log_path = os.path.join(tempfile.gettempdir(), f"llama-server-np{n}-{os.getpid()}.log")
    proc, base, cmd = start_server(args, n, port, help_text, log_path)
    try:
        base_ids = post_json(base + "/tokenize", {"content": text, "add_special": False})["tokens"]
        base_ids = [t["id"] if isinstance(t, dict) else t for t in base_ids]
        if not base_ids:
            raise RuntimeError("empty benchmark prompt")
        while len(base_ids) < args.prompt_tokens + 64 * n:
            base_ids = base_ids + base_ids
        # Warm-up.
        post_json(base + "/completion", completion_body(base_ids[:32], 2, False))
        prompts = [base_ids[64 * c: 64 * c + args.prompt_tokens] for c in range(n)]
        go = threading.Event()
        outs = [{} for _ in range(n)]
        start = time.perf_counter()
        threads = []
        # The start time is taken before the threads exist: thread start-up counts as submission time,
        # as novapay's submit loop does.
        for c in range(n):
            th = threading.Thread(
                target=stream_completion,
                args=(base, prompts[c], args.generate_tokens, start, go, outs[c]),
            )
            th.start()
            threads.append(th)
        go.set()
        for th in threads:
            th.join()
        wall_s = time.perf_counter() - start
    finally:
        stop_server(proc)
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}; log: {log_path}")
    token_times = [o["times"] for o in outs]
    if any(not t for t in token_times):
        raise RuntimeError(f"a request got no token; log: {log_path}")
    counts = [o["completion_tokens"] for o in outs]
    tokens = sum(counts)
    ttft = [t[0] for t in token_times]
    last = [t[-1] for t in token_times]
    span_ms = max(last) - min(ttft)
    decode = sum(len(t) - 1 for t in token_times) * 1e3 / span_ms if span_ms > 0 else None
    timings = [o["final"].get("timings") or {} for o in outs]

    def mean(key):
        v = [t[key] for t in timings if key in t]
        return sum(v) / len(v) if v else None

    os.remove(log_path)
    return {
        "engine": f"llama-server {commit}",
        "clients": n,
        "prompt_tokens": args.prompt_tokens,
        "generate_tokens": args.generate_tokens,
        "threads": args.threads,
        "wall_s": wall_s,
        "aggregate_generation_tokens_per_s": tokens / wall_s,
        "answers_per_min": n * 60.0 / wall_s,
        "ttft_ms_p50": pct(ttft, 0.5),
        "ttft_ms_p95": pct(ttft, 0.95),
        "last_token_ms_p50": pct(last, 0.5),
        "last_token_ms_p95": pct(last, 0.95),
        "decode_tokens_per_s": decode,
        "decode_window_tokens_per_s": decode_window_rate(token_times),
        "server_prompt_per_second_mean": mean("prompt_per_second"),
        "server_predicted_per_second_mean": mean("predicted_per_second"),
        "completion_tokens": counts,
        "all_exact": all(c == args.generate_tokens for c in counts),
        "server_cmd": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(cmd)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server-bin", required=True, help="path to llama-server")
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,2,4,8", help="comma-separated list of N, e.g. 1,2,4,8")
    ap.add_argument("--prompt-file", default="scripts/bench/data/prompt.txt")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--generate-tokens", type=int, default=128)
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--load-timeout", type=float, default=600.0, help="seconds to wait for /health")
    ap.add_argument("--commit", default="", help="llama.cpp commit for the engine field")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra llama-server argument (repeatable), e.g. --server-arg=--no-kv-unified")
    args = ap.parse_args()

    path = args.prompt_file
    if not os.path.exists(path):  # relative to the repository root when run from elsewhere
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.join(repo, args.prompt_file)
    # Exactly novapay's read: the whole file, untrimmed.
    with open(path, encoding="utf-8") as f:
        text = f.read()
    clients = [int(x) for x in args.clients.replace(" ", "").split(",") if x]
    help_text = server_help(args.server_bin)
    commit = engine_commit(args.server_bin, args.commit)
    for n in clients:
        print(json.dumps(run_one(args, n, text, help_text, commit)), flush=True)


if __name__ == "__main__":
    main()
