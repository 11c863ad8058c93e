#!/usr/bin/env bash
# Approximate against exact vector search (issue 21): `lmfuse bench ann` on 1 million × 384
# synthetic unit vectors, three kinds side by side:
# - latent (the one the issue's bar is read on): 1,000 topic centres in a 32-dimensional
#   latent space, vectors around them (noise 0.15 a coordinate), mapped to 384 dimensions by
#   one random linear map plus noise 0.01 a coordinate: text embeddings span few effective
#   directions, so that distances vary continuously and the 10 nearest are well defined;
# - structured: 1,000 topic centres, 100 sub-centres around each (noise 0.05 a coordinate),
#   the vectors around the sub-centres (noise 0.02): every vector has close relatives inside
#   a broader topic, as embeddings of paraphrases and near-duplicates do;
# - unstructured: the vectors straight around the 1,000 centres (noise 0.06): within a
#   cluster all neighbours are nearly equally far, the hard case for any graph index. Exact search is lmfuse's own (one thread, inner products over
# every vector); the HNSW graph is hnsw_rs's, built on all cores; both answer one query at a
# time on one thread. Reports build time, peak memory, recall@10 and the speed-up per
# ef_search.
#
#   bash bench/ann.sh
#   ANN_VECTORS=100000 LMFUSE_BIN=/tmp/lmfuse-bench bash bench/ann.sh
#
# Results: bench/results/ann.md (raw reports in bench/out/ann_{latent,structured,unstructured}.json)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
mkdir -p bench/out
n="${ANN_VECTORS:-1000000}"
efc="${ANN_EF_CONSTRUCTION:-64}"
kinds="${ANN_KINDS:-latent structured unstructured}"
for kind in $kinds; do
  case "$kind" in
    latent) shape=(--clusters 1000 --latent-dim 32 --noise 0.15 --ambient-noise 0.01) ;;
    structured) shape=(--clusters 1000 --subclusters 100 --sub-noise 0.05 --noise 0.02) ;;
    unstructured) shape=(--clusters 1000 --noise 0.06) ;;
  esac
  run_to "bench/out/ann_$kind.json" "$lm" bench ann --vectors "$n" "${shape[@]}" --ef-construction "$efc" \
    --ef-search 32,64,128,256,512 --json
done
python3 - bench/out/ann_latent.json bench/out/ann_structured.json bench/out/ann_unstructured.json > bench/results/ann.md <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
from relation_table import cpu_flags, cpu_model
print("# Approximate vector search: HNSW against exact search\n")
print(f"Machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `bash bench/ann.sh`.\n")
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    kind = "latent" if r.get("latent_dim") else "structured" if r.get("subclusters") else "unstructured"
    shape = (f"{r['clusters']} centres in a {r['latent_dim']}-d latent space, vectors around them (noise "
             f"{r['noise']}), one random linear map to {r['dim']} dimensions plus noise {r['ambient_noise']}") \
        if r.get("latent_dim") else (f"{r['clusters']} centres × {r['subclusters']} sub-centres (noise {r['sub_noise']}), vectors around "
             f"the sub-centres (noise {r['noise']})") if r.get("subclusters") else \
            f"{r['clusters']} centres, vectors around them (noise {r['noise']})"
    print(f"## {kind}\n")
    print(f"{r['vectors']:,} unit vectors × {r['dim']}: {shape} a coordinate; {r['queries']} queries drawn the "
          f"same way; HNSW m {r['m']}, ef_construction {r['ef_construction']}, built in {r['build_s']:.0f} s; "
          f"peak memory of the whole run {r['peak_rss_mb']:,.0f} MB. Exact search: "
          f"{r['exact_queries_per_s']:.1f} queries/s (one thread).\n")
    print("| ef_search | recall@10 | queries/s (one thread) | speed-up over exact |")
    print("|---|---|---|---|")
    for row in r["rows"]:
        print(f"| {row['ef_search']} | {row['recall_at_10']:.4f} | {row['queries_per_s']:.1f} | "
              f"{row['speedup_over_exact']:.1f}× |")
    print()
PY
cat bench/results/ann.md
