#!/usr/bin/env bash
# Drift and retraining on a real stream (issue 22): a seeded 30-day stream of waimai_10k train
# texts (20 entities, ~1 event/hour each, 66 % negative as in waimai_10k train, so that the
# steady part looks like the training data) whose last ten days carry hotel reviews
# (chnsenticorp_htl train) instead, with the same labels: a vocabulary shift. Replayed over
# HTTP into `lmfuse monitor run` with a sentiment bundle trained on waimai_10k (TF-IDF, and
# multilingual-e5-small embeddings): the drift figures per day and the drift alerts; then the
# true labels of 1,500 shifted events sent to POST /feedback and `lmfuse monitor retrain` run
# while the monitor serves (promoted or not, and the serving version after it), a challenger
# trained on flipped labels (refused), and both versions scored on chnsenticorp_htl test.
#
#   bash bench/monitor_learning.sh        # KINDS="tfidf emb" by default
#   LMFUSE_BIN=/tmp/lmfuse-bench KINDS=tfidf bash bench/monitor_learning.sh
#   OLD=sst2 NEW=cr MODEL=all-MiniLM-L6-v2 NEGATIVE_SHARE=0.48 bash bench/monitor_learning.sh
#     (the same on English movie reviews shifting to product reviews, with the English encoder)
#
# Results: bench/results/monitor-learning.md (outputs in bench/out/monitor-learning[-OLD-NEW]/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/monitor_learning.sh
OLD="${OLD:-waimai_10k}"
NEW="${NEW:-chnsenticorp_htl}"
MODEL="${MODEL:-multilingual-e5-small}"
d="bench/out/monitor-learning"
[ "$OLD/$NEW" = "waimai_10k/chnsenticorp_htl" ] || d="$d-$OLD-$NEW"
mkdir -p "$d"
py="python3 bench/monitor_learning.py"
old="$data/$OLD"
new="$data/$NEW"
"$lm" monitor simulate --data "$old/train.jsonl" --days 30 --events-per-hour 1 \
  --negative-share "${NEGATIVE_SHARE:-0.66}" --seed 7 \
  --out "$d/stream0.jsonl" --truth "$d/bursts.json"
$py shift "$d/stream0.jsonl" "$old/train.jsonl" "$new/train.jsonl" 20 "$d/stream.jsonl" "$d/truth.json"
$py flip "$old/train.jsonl" "$d/flipped.jsonl"
for kind in ${KINDS:-tfidf emb}; do
  bundle="$d/bundle-$kind"
  [ -d "$bundle" ] || "$lm" train --train "$old/train.jsonl" --test "$old/test.jsonl" \
    --features "$kind" --model "models/$MODEL" --out "$bundle" \
    --cache-dir "$d/cache" --json > "$d/train-$kind.json"
  cat > "$d/monitor-$kind.toml" <<TOML
[monitor]
window = "1h"
batch = 512
[[model]]
name = "sentiment"
bundle = "bundle-$kind"
train = "$(realpath "$old/train.jsonl")"
test = "$(realpath "$old/test.jsonl")"
[drift]
window = "1d"
min_count = 200
TOML
  db="$d/monitor-$kind.db"
  rm -rf "$db"* "$db.models"
  start_monitor "$d/monitor-$kind.toml" "$db" "$d/run-$kind.log"
  python3 bench/monitor_replay.py "$url" "$d/stream.jsonl" "$pid" > "$d/replay-$kind.json"
  curl -sf "$url/drift?limit=40" > "$d/drift-$kind.json"
  $py feedback "$url" "$d/stream.jsonl" "$d/truth.json" 1500 > "$d/feedback-$kind.json"
  "$lm" monitor retrain --config "$d/monitor-$kind.toml" --db "$db" --model sentiment \
    --cache-dir "$d/cache" --json > "$d/retrain-$kind.json"
  "$lm" monitor retrain --config "$d/monitor-$kind.toml" --db "$db" --model sentiment \
    --train "$d/flipped.jsonl" --cache-dir "$d/cache" --json > "$d/retrain-worse-$kind.json"
  for _ in $(seq 600); do
    serving=$(curl -sf "$url/models" | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['serving'])")
    [ "$serving" != 1 ] && break; sleep 0.1
  done
  curl -sf "$url/alerts?limit=10000" | python3 -c "import json,sys; [print(json.dumps(a)) for a in json.load(sys.stdin)]" > "$d/alerts-$kind.jsonl"
  kill "$pid"; wait "$pid" || true
  acc() { "$lm" eval --model "$1" --data "$2" --cache-dir "$d/cache" --json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['test']['accuracy'])"; }
  v2="$db.models/sentiment/v2"
  python3 -c "import json,sys; print(json.dumps(dict(zip(['v1','v2','v1_old','v2_old'], map(float, sys.argv[1:5])), serving=int(sys.argv[5]))))" \
    "$(acc "$bundle" "$new/test.jsonl")" "$(acc "$v2" "$new/test.jsonl")" \
    "$(acc "$bundle" "$old/test.jsonl")" "$(acc "$v2" "$old/test.jsonl")" "$serving" > "$d/eval-$kind.json"
done
$py report "$d" "$OLD" "$NEW"
grep -o -w -E "avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_bf16" /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/^/CPU flags of note: /'
echo
