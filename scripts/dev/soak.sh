#!/usr/bin/env bash
# Soak test (not part of the test command): a real `novapay serve` on the small test models under a bounded
# load of 4x its admission capacity (queue depth + the running generation) for SOAK_SECONDS (default 600),
# with a burst of Bitrix24 events in the middle (answered through a fake portal on 127.0.0.1). Prints JSON:
# answers, 429s, other errors, RSS at start / end / max, and whether /health stayed 200.
#   SOAK_SECONDS=600 SOAK_QUEUE_DEPTH=2 SOAK_BITRIX24_BURST=20 SOAK_REINDEX=0 scripts/dev/soak.sh
# SOAK_REINDEX=1 also runs `novapay index` on a changed knowledge base mid-run (the live index swap itself
# belongs to the index work; this only checks the server keeps answering while it happens).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SECONDS_TOTAL="${SOAK_SECONDS:-600}"
DEPTH="${SOAK_QUEUE_DEPTH:-2}"
BURST="${SOAK_BITRIX24_BURST:-20}"
REINDEX="${SOAK_REINDEX:-0}"

scripts/fetch-test-models.sh >/dev/null
cargo build --release --locked >/dev/null
BIN="$PWD/target/release/novapay"
WORK="$(mktemp -d)"
SERVER_PID=""; PORTAL_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "$PORTAL_PID" ] && kill "$PORTAL_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data" "$WORK/state"
cp data/fees-and-limits.md data/faq.txt "$WORK/data/"
export NOVAPAY_LLM="$PWD/models/test/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
export NOVAPAY_EMBEDDER="$PWD/models/test/all-MiniLM-L6-v2"
export NOVAPAY_DATA_DIR="$WORK/data" NOVAPAY_STATE_DIR="$WORK/state" HF_HUB_OFFLINE=1
export NOVAPAY_THREADS=1 RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1
# Served pinned, as in production: the lock for the test models, in the scratch folder.
export NOVAPAY_MODELS_LOCK="$WORK/novapay-models.lock"
"$BIN" verify-models --pin >/dev/null
(cd "$WORK" && "$BIN" index >/dev/null)

# The fake portal: answers every REST call with a result and counts imbot.message.add.
PORTAL_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 - "$PORTAL_PORT" "$WORK/portal_calls" <<'PY' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "a") as f: f.write(self.path.rsplit("/", 1)[-1] + "\n")
        body = json.dumps({"result": 1}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
PORTAL_PID=$!

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(cd "$WORK" && exec "$BIN" serve --host 127.0.0.1 --port "$PORT" --queue-depth "$DEPTH" \
    --bitrix24 handler --bitrix24-application-token soak-app-token \
    --bitrix24-portal "http://127.0.0.1:$PORTAL_PORT" --bitrix24-allow-http \
    2>"$WORK/serve.log") &
SERVER_PID=$!
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.5
done

python3 - "$PORT" "$SERVER_PID" "$SECONDS_TOTAL" "$DEPTH" "$BURST" "$REINDEX" "$BIN" "$WORK" <<'PY'
import json, os, subprocess, sys, threading, time, urllib.request, urllib.error, urllib.parse
port, pid, total, depth, burst, reindex, binary, work = sys.argv[1:]
total, depth, burst = int(total), int(depth), int(burst)
base = f"http://127.0.0.1:{port}"
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0
stats = {"answers": 0, "fallbacks": 0, "429": 0, "other_errors": 0, "other_statuses": {}}
lock = threading.Lock()
stop = time.time() + total
questions = ["How much does a domestic transfer cost?", "What is the daily card limit?",
             "How do I bake a chocolate cake?", "Сколько стоит международный перевод?"]
def client(i):
    n = 0
    while time.time() < stop:
        body = json.dumps({"query": questions[(i + n) % len(questions)]}).encode()
        req = urllib.request.Request(base + "/api/v1/query", data=body,
                                     headers={"Content-Type": "application/json"})
        n += 1
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                v = json.load(r)
                with lock:
                    stats["answers"] += 1; stats["fallbacks"] += int(v.get("fallback", False))
        except urllib.error.HTTPError as e:
            with lock:
                if e.code == 429: stats["429"] += 1
                else:
                    stats["other_errors"] += 1
                    stats["other_statuses"][str(e.code)] = stats["other_statuses"].get(str(e.code), 0) + 1
            if e.code == 429: time.sleep(float(e.headers.get("Retry-After", "1")))
        except Exception as e:
            with lock:
                stats["other_errors"] += 1
                stats["other_statuses"][type(e).__name__] = stats["other_statuses"].get(type(e).__name__, 0) + 1
            time.sleep(1)
health = {"checks": 0, "not_200": 0}
def watch_health():
    while time.time() < stop:
        health["checks"] += 1
        try:
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                if r.status != 200: health["not_200"] += 1
        except Exception:
            health["not_200"] += 1
        time.sleep(2)
def bitrix_burst():
    time.sleep(total / 2)
    ok = 0
    for k in range(burst):
        form = urllib.parse.urlencode({
            "event": "ONIMBOTMESSAGEADD", "auth[application_token]": "soak-app-token",
            "data[PARAMS][DIALOG_ID]": str(1000 + k), "data[PARAMS][MESSAGE]": questions[k % 2],
            "data[PARAMS][FROM_USER_ID]": "27", "data[BOT][567][BOT_ID]": "567",
            "data[BOT][567][access_token]": "soak-access-token",
            "data[BOT][567][client_endpoint]": "http://169.254.169.254/rest/"}).encode()
        req = urllib.request.Request(base + "/integrations/bitrix24/events", data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r: ok += r.status == 200
        except Exception: pass
    stats["bitrix24_acknowledged"] = ok
def reindex_mid_run():
    time.sleep(total / 3)
    with open(os.path.join(work, "data", "soak-extra.md"), "w") as f:
        f.write("# Soak\n\nThe soak test added this page while the server was answering.\n")
    t = time.time()
    r = subprocess.run([binary, "index"], cwd=work, capture_output=True)
    stats["reindex"] = {"exit": r.returncode, "seconds": round(time.time() - t, 1)}
rss_start = rss_kb(); rss_max = rss_start
clients = 4 * (depth + 1)
threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
threads += [threading.Thread(target=watch_health), threading.Thread(target=bitrix_burst)]
if reindex == "1": threads.append(threading.Thread(target=reindex_mid_run))
for t in threads: t.start()
while any(t.is_alive() for t in threads):
    rss_max = max(rss_max, rss_kb()); time.sleep(1)
rss_end_of_load = rss_kb()
def replies():
    try: return sum(1 for l in open(os.path.join(work, "portal_calls")) if l.strip() == "imbot.message.add")
    except FileNotFoundError: return 0
# Chat messages wait for the model (up to 3 minutes each) instead of being refused: let them finish.
deadline = time.time() + 240
while replies() < burst and time.time() < deadline: time.sleep(2)
replies = replies()
print(json.dumps({"seconds": total, "queue_depth": depth, "clients": clients, **stats,
                  "bitrix24_burst": burst, "bitrix24_replies": replies,
                  "rss_mb": {"start": round(rss_start / 1024, 1), "end_of_load": round(rss_end_of_load / 1024, 1),
                             "end": round(rss_kb() / 1024, 1),
                             "max": round(rss_max / 1024, 1)},
                  "health": {**health, "stayed_200": health["not_200"] == 0}}, ensure_ascii=False))
PY
