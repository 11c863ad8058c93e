#!/usr/bin/env bash
# The customer-service answer engine on the zaragoza FAQ (issue 21): the fused engine against
# its BM25-only and dense-only baselines, on held-out questions, in one run.
# - data: scripts/fetch-data.sh (PyPI wheel zaragoza-construction-faq==1.2.1, English), split
#   by bench/faq_split.py with seed 13: three whole categories (>= 10 % of the entries) out of
#   scope; the other entries split by entry 60/20/20 into train/dev/test; dev and test
#   entries stay in the table with their answer and category but without their question,
#   which becomes a held-out question to match to its answer;
# - lmfuse: `faq build` (all-MiniLM-L6-v2; every setting the tool's default) with the
#   hand-over thresholds chosen on dev for target precisions 0.8 and 0.9, then `faq eval` on
#   test with a fresh cache (so that the encoder pass is timed);
# - a conversation on an engine built from the whole table (no dev): "How long does it take
#   to get a building permit?" then "and how much does it cost?".
#
#   bash bench/faq.sh
#   LMFUSE_BIN=/tmp/lmfuse-bench bash bench/faq.sh
#
# Results: bench/results/faq.md (outputs in bench/out/faq/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
LMFUSE_BIN="$(realpath "$lm")" bash scripts/fetch-models.sh >&2
bash scripts/fetch-data.sh >&2
d="bench/out/faq"
mkdir -p "$d"
python3 bench/faq_split.py datasets/zaragoza-faq/faq-en.jsonl "$d" 13 > /dev/null
model="models/all-MiniLM-L6-v2"
for target in 0.8 0.9; do
  rm -rf "$d/cache-$target" "$d/cache-eval-$target"
  run_to "$d/build_$target.json" "$lm" faq build --table "$d/table.csv" --category-col category \
    --dev "$d/dev.jsonl" --target-precision "$target" --model "$model" --out "$d/engine_$target" \
    --cache-dir "$d/cache-$target" --json
  run_to "$d/test_$target.json" "$lm" faq eval --faq "$d/engine_$target" --questions "$d/test.jsonl" \
    --cache-dir "$d/cache-eval-$target" --json
done
# The whole table (no dev: the fused threshold from its held-out questions) and a conversation.
python3 - "$d" <<'PY'
import csv, json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open("datasets/zaragoza-faq/faq-en.jsonl", encoding="utf-8")]
with open(f"{d}/full_table.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "question", "answer", "category"])
    for r in rows:
        w.writerow([r["id"], r["q"], r["a"], r["category"]])
PY
run_to "$d/build_full.json" "$lm" faq build --table "$d/full_table.csv" --category-col category \
  --model "$model" --out "$d/engine_full" --cache-dir "$d/cache-full" --json
run_to "$d/conversation.jsonl" "$lm" faq ask --faq "$d/engine_full" --conversation -k 1 \
  -q "How long does it take to get a building permit?" -q "and how much does it cost?" \
  --cache-dir "$d/cache-full"
python3 bench/faq_table.py "$d" > bench/results/faq.md
cat bench/results/faq.md
