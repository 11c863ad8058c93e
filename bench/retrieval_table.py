#!/usr/bin/env python3
"""Table of bench/retrieval.sh: python3 bench/retrieval_table.py OUT_DIR > RESULT.md

Reads OUT_DIR/eval.json (lmfuse search eval --json), build.json and build_wall.json (lmfuse
index build), and peers.json (bench/retrieval_peers.py) when present.
"""
import json
import os
import sys

from relation_table import cpu_flags, cpu_model


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def mode_name(mode):
    m = mode["mode"]
    if m == "rrf":
        return f"hybrid (RRF k {mode['k']:g})"
    if m == "weighted":
        return f"weighted ({mode['dense_weight']:g} dense)"
    if m == "learned":
        return "learned ranker"
    return m


def main():
    d = sys.argv[1]
    ev, build, wall, peers, ranker = (load(os.path.join(d, f)) for f in
                                      ("eval.json", "build.json", "build_wall.json", "peers.json", "ranker.json"))
    print("# Retrieval: SciFact test queries (BEIR layout)\n")
    print(f"Machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `bash bench/retrieval.sh`.")
    print(f"{ev['queries']} judged test queries, {build['documents']} documents "
          f"({build['passages']} passages with vectors). Search times are one query at a time "
          "(query encoding excluded, reported apart); scores in percent.\n")
    print("| system | nDCG@10 | MRR@10 | Recall@100 | MAP | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for row in ev["modes"]:
        s = row["scores"]
        print(f"| lmfuse {mode_name(row['mode'])} | {100 * s['ndcg']:.2f} | {100 * s['mrr']:.2f} | "
              f"{100 * s['recall']:.2f} | {100 * s['map']:.2f} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} |")
    if peers:
        for name in ("bm25s", "sentence-transformers", "bm25s+st rrf"):
            p = peers[name]
            p50 = f"{p['p50_ms']:.3f}" if "p50_ms" in p else "–"
            p95 = f"{p['p95_ms']:.3f}" if "p95_ms" in p else "–"
            print(f"| peer {name} | {p['ndcg@10']:.2f} | {p['mrr@10']:.2f} | {p['recall@100']:.2f} | "
                  f"{p['map']:.2f} | {p50} | {p95} |")
    print()
    if ranker:
        print(f"Learned ranker: trained on {ranker['queries']} training queries "
              f"({ranker['candidates']} candidates, {ranker['relevant']} relevant, {ranker['missed']} relevant "
              "documents outside both top-100 lists); 5-fold CV nDCG@10 over the training queries:\n")
        for t in ranker["tried"]:
            kind = t["kind"]
            name = f"pairwise linear, C {kind['c']:g}" if kind["kind"] == "pairwise_linear" else "pointwise boosted trees"
            kept = " (kept)" if t["kind"] == ranker["kept"] else ""
            print(f"- {name}: {100 * t['cv_ndcg']:.2f}{kept}")
        print()
    if peers:
        print("lmfuse's runs (top 100, `lmfuse search --queries ... -k 100`) scored by pytrec_eval:\n")
        print("| run | nDCG@10 | MRR@10 | Recall@100 | MAP |")
        print("|---|---|---|---|---|")
        for name, p in peers.items():
            if name.startswith("lmfuse"):
                print(f"| {name} | {p['ndcg@10']:.2f} | {p['mrr@10']:.2f} | {p['recall@100']:.2f} | {p['map']:.2f} |")
        print()
        st = peers["sentence-transformers"]
        print(f"Query encoding: lmfuse {ev['encode_ms_per_query']:.2f} ms a query, "
              f"sentence-transformers {st['encode_ms_per_query']:.2f} ms (both batched).")
        print(f"Corpus encoding: lmfuse index build {wall['wall_s']:.1f} s in all "
              f"({build['passages']} passages); sentence-transformers {st['build_s']:.1f} s "
              f"({build['documents']} documents, truncated at 256 tokens); bm25s index {peers['bm25s']['build_s']:.1f} s.")


if __name__ == "__main__":
    main()
