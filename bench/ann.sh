#!/usr/bin/env bash
# Approximate against exact vector search (issue 21): `lmfuse bench ann` on synthetic unit
# vectors drawn around 1,000 random centres (embeddings of real texts cluster by topic),
# 1 million × 384 by default. Exact search is lmfuse's own (one thread, inner products over
# every vector); the HNSW graph is hnsw_rs's, built on all cores; both answer one query at a
# time on one thread. Reports build time, peak memory, recall@10 and the speed-up per
# ef_search.
#
#   bash bench/ann.sh
#   ANN_VECTORS=100000 LMFUSE_BIN=/tmp/lmfuse-bench bash bench/ann.sh
#
# Results: bench/results/ann.md (raw report in bench/out/ann.json)
set -euo pipefail
cd "$(dirname "$0")/.."
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
mkdir -p bench/out
n="${ANN_VECTORS:-1000000}"
efc="${ANN_EF_CONSTRUCTION:-64}"
"$lm" bench ann --vectors "$n" --ef-construction "$efc" --ef-search 32,64,128,256,512 --json > bench/out/ann.json
python3 - bench/out/ann.json > bench/results/ann.md <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
from relation_table import cpu_flags, cpu_model
r = json.load(open(sys.argv[1]))
print("# Approximate vector search: HNSW against exact search\n")
print(f"Machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `bash bench/ann.sh`.\n")
print(f"{r['vectors']:,} unit vectors × {r['dim']} drawn around {r['clusters']} centres (noise {r['noise']} a "
      f"coordinate), {r['queries']} queries drawn the same way; HNSW m {r['m']}, ef_construction "
      f"{r['ef_construction']}, built in {r['build_s']:.0f} s; peak memory of the whole run "
      f"{r['peak_rss_mb']:,.0f} MB. Exact search: {r['exact_queries_per_s']:.1f} queries/s (one thread).\n")
print("| ef_search | recall@10 | queries/s (one thread) | speed-up over exact |")
print("|---|---|---|---|")
for row in r["rows"]:
    print(f"| {row['ef_search']} | {row['recall_at_10']:.4f} | {row['queries_per_s']:.1f} | {row['speedup_over_exact']:.1f}× |")
PY
cat bench/results/ann.md
