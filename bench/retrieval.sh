#!/usr/bin/env bash
# Retrieval on SciFact's test queries (issue 21), lmfuse and the Python peers side by side in
# one run on one machine:
# - lmfuse: `index build` (BM25 over "title text" with stop words and stemming; dense
#   passage vectors of all-MiniLM-L6-v2, exact search), then `search eval` for bm25, dense,
#   hybrid (RRF, k 60), weighted (0.5/0.5 min-max) and learned (`search train-ranker` on
#   SciFact's 809 training queries: the model kind chosen by 5-fold CV over them) with
#   per-query search times; every setting is the tool's default, chosen before looking at
#   SciFact's test scores;
# - peers (bench/retrieval_peers.py, needs bench/.venv from bench/setup_python_venv.sh):
#   bm25s + PyStemmer, sentence-transformers with exact search, and their RRF; pytrec_eval
#   scores every run, lmfuse's included (as a check on lmfuse's own scorer).
#
#   bash bench/retrieval.sh
#   LMFUSE_BIN=/tmp/lmfuse-bench bash bench/retrieval.sh
#
# Results: bench/results/retrieval.md (outputs in bench/out/retrieval/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/retrieval.sh
s="$data/scifact"
d="bench/out/retrieval"
mkdir -p "$d"
model="models/all-MiniLM-L6-v2"
# A cache of its own, so that the build's time is the encoder's (LMFUSE_BENCH_CACHE to reuse one).
cache="${LMFUSE_BENCH_CACHE:-$d/cache}"

start=$(date +%s.%N)
"$lm" index build --corpus "$s/corpus.jsonl" --out "$d/idx" --model "$model" --cache-dir "$cache" --json \
  > "$d/build.json"
end=$(date +%s.%N)
echo "{\"wall_s\": $(echo "$end - $start" | bc)}" > "$d/build_wall.json"
"$lm" search train-ranker --index "$d/idx" --queries "$s/queries.jsonl" --qrels "$s/qrels/train.tsv" \
  --cache-dir "$cache" --json > "$d/ranker.json"
run_to "$d/eval.json" "$lm" search eval --index "$d/idx" --queries "$s/queries.jsonl" \
  --qrels "$s/qrels/test.tsv" --cache-dir "$cache" --json

# Each mode's top 100 for every test query, for pytrec_eval.
python3 - "$s" "$d/test_queries.jsonl" <<'PY'
import json, sys
data, out = sys.argv[1:]
judged = {l.split("\t")[0] for l in open(f"{data}/qrels/test.tsv", encoding="utf-8").read().splitlines()[1:] if l}
with open(out, "w", encoding="utf-8") as f:
    for line in open(f"{data}/queries.jsonl", encoding="utf-8"):
        q = json.loads(line)
        if str(q["id"]) in judged:
            f.write(json.dumps({"id": str(q["id"]), "text": q["text"]}) + "\n")
PY
runs=()
for mode in bm25 dense hybrid weighted learned; do
  "$lm" search --index "$d/idx" --queries "$d/test_queries.jsonl" --mode "$mode" -k 100 \
    --cache-dir "$cache" -o "$d/run_$mode.jsonl"
  runs+=("$mode=$d/run_$mode.jsonl")
done

if [ -x bench/.venv/bin/python ]; then
  run_to "$d/peers.json" bench/.venv/bin/python bench/retrieval_peers.py "$s" "$model" /dev/stdout "${runs[@]}"
else
  echo "bench/retrieval.sh: bench/.venv missing (bash bench/setup_python_venv.sh): peers skipped" >&2
fi
python3 bench/retrieval_table.py "$d" > bench/results/retrieval.md
cat bench/results/retrieval.md
