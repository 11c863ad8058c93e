#!/usr/bin/env bash
# Active learning (issue 23): learning curves of random sampling, margin, entropy, k-center
# and the hybrid on trec and banking77 (pool: train with its labels hidden until bought;
# scored on test after each round), 5 seeds each, all-MiniLM-L6-v2 embeddings and a logistic
# regression (C 10, chosen on subj's dev set: bench/results/active.md).
#
#   LMFUSE_BIN=/tmp/lmfuse-bench bash bench/active.sh
#
# Results: bench/results/active.md (curves, plots in bench/out/active/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/active.sh
d="bench/out/active"
mkdir -p "$d"
run() { # name train test initial step [extra...]
  local name=$1 train=$2 test=$3 initial=$4 step=$5
  shift 5
  "$lm" select --simulate --train "$train" --test "$test" --model models/all-MiniLM-L6-v2 \
    --budget 1000 --initial "$initial" --step "$step" --seeds 5 \
    --strategies random,margin,entropy,kcenter,hybrid --cache-dir "$d/cache" \
    -o "$d/$name.json" --svg "$d/$name.svg" "$@" 2> "$d/$name.log"
  echo "## $name"; grep -v "^lmfuse" "$d/$name.log"; echo
}
run trec "$data/trec/train.jsonl" "$data/trec/test.jsonl" 20 50
run banking77 "$data/banking77/train.csv" "$data/banking77/test.csv" 100 100 --label-col category
flags=$(grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E "^(avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_bf16)$" | tr '\n' ' ')
echo "CPU flags of note: $flags"
