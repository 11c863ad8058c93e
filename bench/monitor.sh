#!/usr/bin/env bash
# Stream monitoring throughput (issue 22), side by side with the classifier's offline rate in
# one run: a seeded stream (`lmfuse monitor simulate` over waimai_10k's train texts, 30 days,
# 20 entities) replayed over HTTP at full speed (requests of 500 NDJSON events, one at a time)
# into `lmfuse monitor run`, with a TF-IDF bundle and with a MiniLM bundle, each trained on
# waimai_10k train. Reported: sustained events/s (first request to the last event
# classified), acknowledgement latency p50/p99, RSS at start and end; and `lmfuse predict`'s
# offline rate on the same texts with the same bundle.
#
#   bash bench/monitor.sh            # EVENTS_PER_HOUR=6 DAYS=30 by default
#   LMFUSE_BIN=/tmp/lmfuse-bench bash bench/monitor.sh
#
# Results: bench/results/monitor.md (outputs in bench/out/monitor/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/monitor.sh
d="bench/out/monitor"
mkdir -p "$d"
rate="${EVENTS_PER_HOUR:-6}"
days="${DAYS:-30}"
"$lm" monitor simulate --data "$data/waimai_10k/train.jsonl" --days "$days" \
  --events-per-hour "$rate" --seed 7 --out "$d/stream.jsonl" --truth "$d/bursts.json"
python3 -c "
import json, sys
with open(sys.argv[2], 'w') as out:
    for l in open(sys.argv[1]):
        out.write(json.dumps({'text': json.loads(l)['text']}, ensure_ascii=False) + '\n')
" "$d/stream.jsonl" "$d/texts.jsonl"
for kind in tfidf emb; do
  bundle="$d/bundle-$kind"
  [ -d "$bundle" ] || "$lm" train --train "$data/waimai_10k/train.jsonl" --features "$kind" \
    --model models/all-MiniLM-L6-v2 --out "$bundle" --cache-dir "$d/cache" --json > "$d/train-$kind.json"
  start=$(date +%s.%N)
  "$lm" predict --model "$bundle" --input "$d/texts.jsonl" --output "$d/predicted-$kind.jsonl" \
    --no-cache > /dev/null
  end=$(date +%s.%N)
  n=$(wc -l < "$d/texts.jsonl")
  python3 -c "import json,sys; print(json.dumps({'kind': sys.argv[1], 'predict_events_per_s': int(sys.argv[2]) / (float(sys.argv[4]) - float(sys.argv[3]))}))" \
    "$kind" "$n" "$start" "$end" > "$d/predict-$kind.json"
  cat > "$d/monitor-$kind.toml" <<TOML
[monitor]
window = "1h"
batch = 512
[[model]]
name = "sentiment"
bundle = "bundle-$kind"
[[rule]]
name = "negative-share"
kind = "share"
model = "sentiment"
label = "negative"
above = 0.6
min_count = 10
group_by = ["entity"]
TOML
  rm -f "$d/monitor-$kind.db"*
  start_monitor "$d/monitor-$kind.toml" "$d/monitor-$kind.db" "$d/run-$kind.log"
  python3 bench/monitor_replay.py "$url" "$d/stream.jsonl" "$pid" > "$d/replay-$kind.json"
  kill "$pid"; wait "$pid" || true
  "$lm" monitor alerts --db "$d/monitor-$kind.db" > "$d/alerts-$kind.jsonl"
done
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
bursts = json.load(open(f"{d}/bursts.json"))
flags = open("/proc/cpuinfo").read().split("flags\t\t: ")[1].split("\n")[0].split()
rows = []
for kind in ["tfidf", "emb"]:
    r = json.load(open(f"{d}/replay-{kind}.json"))
    p = json.load(open(f"{d}/predict-{kind}.json"))
    alerts = [json.loads(l) for l in open(f"{d}/alerts-{kind}.jsonl")]
    found = sum(any(a["series"]["entity"] == b["entity"] and a["window"] + 3600 > b["start"]
                    and a["window"] <= b["start"] + 3600 for a in alerts) for b in bursts)
    false = sum(not any(a["series"]["entity"] == b["entity"] and a["window"] + 3600 > b["start"]
                        and a["window"] < b["end"] for b in bursts) for a in alerts)
    rows.append(f"| {kind} | {r['events']} | {r['sustained_events_per_s']:.0f} | {p['predict_events_per_s']:.0f} "
                f"| {r['sustained_events_per_s'] / p['predict_events_per_s']:.2f} | {r['ack_ms_p50']:.1f} "
                f"| {r['ack_ms_p99']:.1f} | {r['rss_mb_start']:.0f} → {r['rss_mb_end']:.0f} "
                f"| {found}/{len(bursts)} | {false} |")
print("| bundle | events | monitor events/s (sustained) | `lmfuse predict` events/s | ratio "
      "| ack p50 ms | ack p99 ms | RSS MB start → end | bursts alerted within a window | other alerts |")
print("|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print()
print("CPU flags of note: " + " ".join(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"}))
PY
