#!/usr/bin/env bash
# A million events through the monitor (issue 22): a seeded stream of waimai_10k train texts
# (350 days, 20 entities at ~6 events/hour each: ~1.0 M events) replayed over HTTP at full speed
# by CLIENTS concurrent clients (requests of 500 NDJSON events) into `lmfuse monitor run` with
# the TF-IDF sentiment bundle of bench/monitor.sh (trained here when absent) and two rules.
# Reported: sustained events/s, acknowledgement latency p50/p99/max under concurrency, and the
# monitor's RSS at the start, after every tenth of the requests, after every tenth of the events
# classified, and at the end.
#
#   bash bench/monitor_million.sh          # CLIENTS=4 DAYS=350 by default
#
# Results: bench/results/monitor.md (section "A million events"; outputs in bench/out/monitor-million/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/monitor_million.sh
d="bench/out/monitor-million"
mkdir -p "$d"
bundle="bench/out/monitor/bundle-tfidf"
[ -d "$bundle" ] || "$lm" train --train "$data/waimai_10k/train.jsonl" --features tfidf \
  --model models/all-MiniLM-L6-v2 --out "$bundle" --json > "$d/train-tfidf.json"
"$lm" monitor simulate --data "$data/waimai_10k/train.jsonl" --days "${DAYS:-350}" \
  --events-per-hour 6 --seed 9 --out "$d/stream.jsonl" --truth "$d/bursts.json"
# The simulated year runs past today's date: allow event times that far ahead.
cat > "$d/monitor.toml" <<TOML
[monitor]
window = "1h"
batch = 512
max_future = "400d"
[[model]]
name = "sentiment"
bundle = "$(realpath "$bundle")"
[[rule]]
name = "negative-share"
kind = "share"
model = "sentiment"
label = "negative"
above = 0.6
min_count = 10
group_by = ["entity"]
[[rule]]
name = "volume"
kind = "ewma"
metric = "volume"
z = 5.0
min_count = 20
group_by = ["entity"]
TOML
rm -f "$d/monitor.db"*
start_monitor "$d/monitor.toml" "$d/monitor.db" "$d/run.log"
python3 bench/monitor_replay.py "$url" "$d/stream.jsonl" "$pid" --clients "${CLIENTS:-4}" > "$d/replay.json"
kill "$pid"; wait "$pid" || true
python3 - "$d/replay.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| events | clients | sustained events/s | ingest events/s | ack p50 ms | ack p99 ms | ack max ms | RSS MB start | RSS MB end |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| {r['events']} | {r['clients']} | {r['sustained_events_per_s']:.0f} | {r['ingest_events_per_s']:.0f} "
      f"| {r['ack_ms_p50']:.1f} | {r['ack_ms_p99']:.1f} | {r['ack_ms_max']:.1f} | {r['rss_mb_start']:.0f} | {r['rss_mb_end']:.0f} |")
print()
print("RSS (MB) after each tenth of the requests: " + ", ".join(f"{s['rss_mb']:.0f}" for s in r["rss_samples"]))
print("RSS (MB) after each tenth of the events classified: " + ", ".join(f"{s['rss_mb']:.0f}" for s in r.get("rss_processed_samples", [])))
PY
grep -o -w -E "avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_bf16" /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/^/CPU flags of note: /'
echo
