#!/usr/bin/env bash
# The monitor's two stores side by side in one run (issue 22): the stream and TF-IDF bundle of
# bench/monitor.sh (made first when absent) replayed over HTTP into `lmfuse monitor run` on a
# SQLite file and on a PostgreSQL database of Debian's server on loopback
# (scripts/start-postgres.sh). Reported per store: sustained events/s, acknowledgement latency
# p50/p99, RSS, and whether both stored the same counts and alerts.
#
#   LMFUSE_BIN=/tmp/lmfuse-bench bash bench/monitor_postgres.sh   # CLIENTS=1 by default
#
# Results: bench/results/monitor.md (outputs in bench/out/monitor-postgres/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/monitor_postgres.sh
src="bench/out/monitor"
d="bench/out/monitor-postgres"
mkdir -p "$d"
clients="${CLIENTS:-1}"
[ -d "$src/bundle-tfidf" ] && [ -f "$src/stream.jsonl" ] || {
  echo "bench/monitor_postgres.sh: $src has no stream or TF-IDF bundle: run bench/monitor.sh first" >&2
  exit 1
}
admin="$(bash scripts/start-postgres.sh)"
pg="${admin%/*}/lmfuse_bench_monitor"
psql "$admin" -qc "DROP DATABASE IF EXISTS lmfuse_bench_monitor WITH (FORCE)"
psql "$admin" -qc "CREATE DATABASE lmfuse_bench_monitor"
sed "s|bundle = \"bundle-tfidf\"|bundle = \"../monitor/bundle-tfidf\"|" "$src/monitor-tfidf.toml" > "$d/monitor.toml"
rm -f "$d/monitor.db"*
for store in sqlite postgres; do
  db="$d/monitor.db"
  [ "$store" = postgres ] && db="$pg"
  start_monitor "$d/monitor.toml" "$db" "$d/run-$store.log"
  python3 bench/monitor_replay.py "$url" "$src/stream.jsonl" "$pid" --clients "$clients" \
    > "$d/replay-$store.json"
  curl -s "$url/series?windows=10000" > "$d/series-$store.json"
  kill "$pid"; wait "$pid" || true
  "$lm" monitor alerts --db "$db" > "$d/alerts-$store.jsonl"
done
python3 - "$d" "$clients" <<'PY'
import json, sys
d, clients = sys.argv[1], sys.argv[2]
flags = open("/proc/cpuinfo").read().split("flags\t\t: ")[1].split("\n")[0].split()
print(f"| store | events | clients | sustained events/s | ack p50 ms | ack p99 ms | RSS MB start → end | alerts |")
print("|---|---|---|---|---|---|---|---|")
alerts, series = {}, {}
for store in ["sqlite", "postgres"]:
    r = json.load(open(f"{d}/replay-{store}.json"))
    alerts[store] = sorted(json.loads(l)["id"] for l in open(f"{d}/alerts-{store}.jsonl"))
    series[store] = json.load(open(f"{d}/series-{store}.json"))
    print(f"| {store} | {r['events']} | {clients} | {r['sustained_events_per_s']:.0f} | {r['ack_ms_p50']:.1f} "
          f"| {r['ack_ms_p99']:.1f} | {r['rss_mb_start']:.0f} → {r['rss_mb_end']:.0f} | {len(alerts[store])} |")
print()
print(f"Same alerts on both: {alerts['sqlite'] == alerts['postgres']}; same series: {series['sqlite'] == series['postgres']}")
print("CPU flags of note: " + " ".join(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"}))
PY
