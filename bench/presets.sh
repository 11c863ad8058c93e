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
source bench/lib.sh
bench_init bench/presets.sh
sets="${SETS:-sst2 trec subj cr banking77 tweeteval_emotion tweeteval_irony sms_spam}"
presets="${PRESETS:-fast medium}"
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
