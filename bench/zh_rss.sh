#!/usr/bin/env bash
# Resident memory of `lmfuse serve` with the multilingual model (issue 19 goal: <= 300 MB):
# trains a small bundle on 200 chnsenticorp_htl texts, serves it, sends Chinese and English
# requests and reads VmRSS / VmHWM (peak) / RssAnon / RssFile from /proc.
#
#   bash bench/zh_rss.sh                      # builds lmfuse first
#   LMFUSE_BIN=/tmp/lmfuse bash bench/zh_rss.sh
# Results: bench/results/zh_rss.md
set -euo pipefail
cd "$(dirname "$0")/.."
data="${LMFUSE_SHARED_DIR:-../shared}/data/chnsenticorp_htl"
[ -d "$data" ] || { echo "bench/zh_rss.sh: $data not found" >&2; exit 1; }
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/prepare_sets.py "$data" "$work" >/dev/null
head -200 "$work/train.jsonl" > "$work/small.jsonl"
"$lm" -q train --model multilingual-e5-small --train "$work/small.jsonl" --out "$work/bundle"
port=$((20000 + RANDOM % 20000))
"$lm" -q serve --model "$work/bundle" --port "$port" --threads 2 > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "localhost:$port/ready" >/dev/null && break; sleep 0.2; done
status() { grep -E "^$1:" "/proc/$pid/status" | awk '{print $2}'; }
loaded=$(status VmRSS)
python3 - "$work/test.jsonl" "$port" <<'PY'
import json, sys, urllib.request
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")][:400]
texts += ["the room was clean and the staff were friendly", "what is my card's exchange rate"] * 20
for i in range(0, len(texts), 16):
    req = urllib.request.Request(f"http://localhost:{sys.argv[2]}/predict",
                                 json.dumps({"inputs": texts[i:i + 16]}).encode(),
                                 {"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
{
  echo "# lmfuse serve memory with multilingual-e5-small (\`bash bench/zh_rss.sh\`)"
  echo
  echo "$cpu, 2 threads. Bundle: emb:logreg on 200 chnsenticorp_htl texts; after loading, then after"
  echo "440 texts (400 Chinese test reviews, 40 English) in batches of 16 through /predict."
  echo "The word table (250,037 × 384, f16 in the converted folder) stays in the memory-mapped"
  echo "file: rows are read on lookup and their pages released after each batch (RssFile)."
  echo
  echo "| measure | MB |"
  echo "|---|---|"
  echo "| VmRSS after load | $((loaded / 1024)) |"
  echo "| VmRSS after 440 texts | $(( $(status VmRSS) / 1024 )) |"
  echo "| VmHWM (peak) | $(( $(status VmHWM) / 1024 )) |"
  echo "| RssAnon | $(( $(status RssAnon) / 1024 )) |"
  echo "| RssFile | $(( $(status RssFile) / 1024 )) |"
  echo
  echo "Goal (issue 19): <= 300 MB."
} | tee bench/results/zh_rss.md
