#!/usr/bin/env bash
# `lmfuse compare --preset P` on the eight classification sets, one run per preset and set with
# no per-set settings; every leaderboard keeps each candidate's CV mean ± std, dev and test, so
# the selection rules (best-cv, one-se) are compared on the same runs by bench/presets_table.py.
#
#   bash bench/presets.sh                         # fast and medium on the eight sets
#   PRESETS="fast" SETS="trec cr" bash bench/presets.sh
#   TIME_LIMIT=30m PRESETS=best bash bench/presets.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/presets.sh  # a prebuilt binary; no cargo build
# Results: bench/results/presets.md (outputs in bench/out/presets/<set>/<preset>.json)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${LMFUSE_SHARED_DIR:-../shared}/data"
[ -d "$data" ] || { echo "bench/presets.sh: $data not found" >&2; exit 1; }
sets="${SETS:-sst2 trec subj cr banking77 tweeteval_emotion tweeteval_irony sms_spam}"
presets="${PRESETS:-fast medium}"
bash scripts/fetch-models.sh >&2
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
source bench/lib.sh
limit=()
[ -z "${TIME_LIMIT:-}" ] || limit=(--time-limit "$TIME_LIMIT")
for p in $presets; do
  for s in $sets; do
    d="bench/out/presets/$s"
    mkdir -p "$d"
    [ -s "$d/train.jsonl" ] || python3 bench/prepare_sets.py "$data/$s" "$d"
    echo "bench: compare --preset $p $s" >&2
    run_to "$d/$p.json" $lm -q compare --preset "$p" "${limit[@]}" --train "$d/train.jsonl" \
      --dev "$d/dev.jsonl" --test "$d/test.jsonl" --json
  done
done
python3 bench/presets_table.py bench/results/presets.md $sets
