#!/usr/bin/env bash
# Serving measurements of issue 6, with MiniLM + logistic regression (trained on
# examples/reviews.jsonl), written to bench/results/serve.md (raw JSON under bench/out/serve/):
#   1. latency: one short text (<= 20 tokens), sequential requests, p50/p90/p99;
#   2. throughput: 32 clients for STEADY_S s on the same texts as `lmfuse bench embed` (offline),
#      0 errors and >= 80 % of the offline speed; p99; resident memory after the load;
#   3. overload: --max-queue 4, 64 clients: only 200 and 429, healthy after, 429 count = metric;
#   4. SIGTERM under load: in-flight requests finish (none written whole and left without a
#      response: `dropped` 0), exit code 0;
#   5. raw HTTP fuzz for FUZZ_S s: the server stays alive, no panic in its log.
#
#   bash bench/serve.sh                                   # full length (about 14 minutes)
#   STEADY_S=5 OVERLOAD_S=3 FUZZ_S=5 SEQ_REQUESTS=200 RESULTS=bench/out/serve/quick.md \
#     bash bench/serve.sh                                 # a quick check (about 1 minute)
#   TEXTS=../shared/bench/sentences2000.txt (default when present; else the reviews' texts)
set -euo pipefail
cd "$(dirname "$0")/.."
STEADY_S="${STEADY_S:-60}"
OVERLOAD_S="${OVERLOAD_S:-20}"
FUZZ_S="${FUZZ_S:-600}"
SEQ_REQUESTS="${SEQ_REQUESTS:-2000}"
SIGTERM_LOAD_S="${SIGTERM_LOAD_S:-6}"
THREADS="${THREADS:-2}"
RESULTS="${RESULTS:-bench/results/serve.md}"   # quick checks: RESULTS=bench/out/serve/quick.md
bash scripts/fetch-models.sh >&2
cargo build --release --locked --quiet -p lmfuse-cli
bin=./target/release/lmfuse
out=bench/out/serve
mkdir -p "$out" bench/results
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

texts="${TEXTS:-../shared/bench/sentences2000.txt}"
if [ ! -f "$texts" ]; then
  python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in open("examples/reviews.jsonl")]' > "$work/texts.txt"
  texts="$work/texts.txt"
fi
short="$work/short.txt"
echo "The battery lasts all day and the screen is lovely." > "$short"

echo "bench/serve: training the bundle (MiniLM + logreg on examples/reviews.jsonl)" >&2
"$bin" --threads "$THREADS" -q train --model models/all-MiniLM-L6-v2 --train examples/reviews.jsonl \
  --out "$work/bundle" --cache-dir "$work/cache" --json > "$out/train.json"

# start_server LOG ARGS...: starts `lmfuse serve` on a free port, waits for /ready; sets
# server_pid and url.
start_server() {
  local log="$1"; shift
  "$bin" --threads "$THREADS" serve --model "$work/bundle" --port 0 "$@" 2> "$log" &
  server_pid=$!
  for _ in $(seq 1 600); do
    url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log" | head -1)"
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log" >&2; echo "bench/serve: the server did not start" >&2; exit 1; }
  for _ in $(seq 1 600); do
    if curl -fsS "$url/ready" > /dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  cat "$log" >&2; echo "bench/serve: the server never got ready" >&2; exit 1
}
stop_server() {
  kill -TERM "$server_pid"
  local rc=0
  wait "$server_pid" || rc=$?
  server_pid=""
  return $rc
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

echo "bench/serve: offline speed (lmfuse bench embed on the same texts)" >&2
"$bin" --threads "$THREADS" bench embed --input "$texts" --repeat 3 --no-cache-bench --json > "$out/offline.json"

start_server "$work/serve1.log"
echo "bench/serve: sequential latency ($SEQ_REQUESTS requests, one short text)" >&2
"$bin" bench serve --url "$url/predict" --clients 1 --requests "$SEQ_REQUESTS" --duration 600 \
  --input "$short" --warmup 2 --json > "$out/sequential.json"
echo "bench/serve: 32 clients for $STEADY_S s" >&2
rss_before="$(rss_kb "$server_pid")"
"$bin" bench serve --url "$url/predict" --clients 32 --duration "$STEADY_S" --input "$texts" \
  --warmup 2 --json > "$out/steady.json"
rss_after="$(rss_kb "$server_pid")"; hwm="$(hwm_kb "$server_pid")"
curl -fsS "$url/metrics" > "$out/steady-metrics.txt"
steady_exit=0; stop_server || steady_exit=$?

echo "bench/serve: overload (--max-queue 4, 64 clients, $OVERLOAD_S s)" >&2
start_server "$work/serve2.log" --max-queue 4
"$bin" bench serve --url "$url/predict" --clients 64 --duration "$OVERLOAD_S" --input "$texts" \
  --json > "$out/overload.json"
health_after="$(curl -s -o /dev/null -w '%{http_code}' "$url/health")"
predict_after="$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"inputs": "still serving?"}' "$url/predict")"
curl -fsS "$url/metrics" > "$out/overload-metrics.txt"
stop_server

echo "bench/serve: SIGTERM under load (16 clients)" >&2
start_server "$work/serve3.log"
"$bin" bench serve --url "$url/predict" --clients 16 --duration "$SIGTERM_LOAD_S" --input "$texts" \
  --batch 8 --json > "$out/sigterm-load.json" &
load_pid=$!
sleep "$(python3 -c "print($SIGTERM_LOAD_S / 2)")"
term_started="$(date +%s.%N)"
sigterm_rc=0
stop_server || sigterm_rc=$?
term_seconds="$(python3 -c "import time; print(round(time.time() - $term_started, 2))")"
wait "$load_pid" || true
cp "$work/serve3.log" "$out/sigterm-server.log"

echo "bench/serve: raw HTTP fuzz for $FUZZ_S s" >&2
start_server "$work/serve4.log"
fuzz_rc=0
"$bin" bench fuzz --url "$url" --duration "$FUZZ_S" --json > "$out/fuzz.json" || fuzz_rc=$?
fuzz_health="$(curl -s -o /dev/null -w '%{http_code}' "$url/health")"
fuzz_panics="$(grep -c panicked "$work/serve4.log" || true)"
stop_server || true

python3 - "$out" "$texts" "$THREADS" "$RESULTS" <<PY
import json, sys, re, platform, datetime
out, texts, threads, results = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
j = lambda n: json.load(open(f"{out}/{n}.json"))
off, seq, st, ov, tl, fz = j("offline"), j("sequential"), j("steady"), j("overload"), j("sigterm-load"), j("fuzz")
ratio = st["texts_per_s"] / off["sentences_per_s"]
def metric(path, name):
    m = re.search(r'^' + re.escape(name) + r' (\S+)$', open(path).read(), re.M)
    return float(m.group(1)) if m else 0.0
ov429 = ov["statuses"].get("429", 0)
ov_metric = metric(f"{out}/overload-metrics.txt", 'lmfuse_request_failures_total{reason="overloaded"}')
ov_other = {k: v for k, v in ov["statuses"].items() if k not in ("200", "429")}
rss_after, hwm = int("$rss_after") / 1024, int("$hwm") / 1024
tl_other = {k: v for k, v in tl["statuses"].items() if k != "200"}
ok = lambda b: "pass" if b else "**FAIL**"
rows = [
  ("Latency, one short text, sequential", f"p50 {seq['latency_ms']['p50']:.2f} ms, p90 {seq['latency_ms']['p90']:.2f}, p99 {seq['latency_ms']['p99']:.2f} ({seq['requests']} requests)", "p50 <= 10 ms", ok(seq['latency_ms']['p50'] <= 10 and seq['errors'] == 0)),
  ("Throughput, 32 clients, $STEADY_S s", f"{st['texts_per_s']:.1f} texts/s vs offline {off['sentences_per_s']:.1f} ({100*ratio:.0f} %); p50 {st['latency_ms']['p50']:.1f} ms, p99 {st['latency_ms']['p99']:.1f} ms; {st['errors']} errors, {st['transport_errors']} transport errors, {st['dropped']} dropped", ">= 80 %, 0 errors", ok(ratio >= 0.8 and st['errors'] == 0 and st['transport_errors'] == 0 and st['dropped'] == 0)),
  ("Resident memory after the load", f"{rss_after:.0f} MB (peak {hwm:.0f} MB)", "<= 250 MB", ok(rss_after <= 250)),
  ("Overload, queue 4, 64 clients, $OVERLOAD_S s", f"statuses {ov['statuses']}, transport errors {ov['transport_errors']}, dropped {ov['dropped']}; /health {'$health_after'}, /predict {'$predict_after'} after; overloaded metric {ov_metric:.0f} vs {ov429} seen", "only 200/429, healthy after", ok(not ov_other and ov['transport_errors'] == 0 and ov['dropped'] == 0 and '$health_after' == '200' and '$predict_after' == '200' and ov_metric == ov429)),
  ("SIGTERM under load (16 clients x 8 texts)", f"exit code $sigterm_rc after {'$term_seconds'} s; responses {tl['statuses']} (non-200: {tl_other or 'none'}), {tl['dropped']} dropped in flight (written, no response), {tl['transport_errors']} refused after the stop", "in-flight finish (0 dropped), exit 0", ok($sigterm_rc == 0 and not tl_other and tl['dropped'] == 0)),
  ("Raw HTTP fuzz, $FUZZ_S s", f"{fz['cases']} malformed requests, responses {fz['responses']}, 5xx faults {fz['server_errors']}, health {fz['health_checks']-fz['health_failures']}/{fz['health_checks']}; /health {'$fuzz_health'} at the end; panics in log: $fuzz_panics", "alive, no panic", ok(fz['alive_at_end'] and '$fuzz_health' == '200' and $fuzz_panics == 0 and fz['server_errors'] == 0)),
]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
with open(results, "w") as f:
    f.write("# Serving: lmfuse serve under load\n\n")
    f.write(f"MiniLM-L6 + logistic regression (examples/reviews.jsonl), {threads} threads, {cpu}; "
            f"texts: {texts} ({off['sentences']} texts); load tool: \`lmfuse bench serve\` on the same machine "
            f"(it shares the CPUs with the server). Generated by \`bash bench/serve.sh\` on "
            f"{datetime.date.today().isoformat()}.\n\n")
    f.write("| check | measured | target | result |\n|---|---|---|---|\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    f.write(f"\nOffline reference: \`lmfuse bench embed\` best of 3, {off['sentences_per_s']:.1f} sentences/s. "
            f"Steady run: {st['requests']} requests in {st['seconds']:.1f} s. Raw JSON: bench/out/serve/.\n")
print(open(results).read())
PY
