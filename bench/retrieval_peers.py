"""The Python retrieval peers on a BEIR-layout set, and pytrec_eval's scores of lmfuse's runs.

Peers, as a user would pick them:
- bm25s (BM25, Lucene variant k1 1.5, b 0.75) with its own tokeniser, English stop words and
  PyStemmer's English stemmer, over "title text";
- sentence-transformers (same model folder lmfuse uses) with exact search: normalised
  embeddings of "title text" (truncated at the model's 256 tokens), inner product, top k;
- their reciprocal-rank fusion (k 60) over the top 100 of each, for reference.

Every run is scored by pytrec_eval (ndcg_cut_10, recall_100, map; MRR@10 as recip_rank of
the run cut to its top 10). Per-query search time (p50, p95) is measured one query at a time,
the dense query's encoding timed apart. lmfuse's runs (`lmfuse search --queries ... -k 100`
JSON Lines, given as NAME=PATH) are scored the same way.

    bench/.venv/bin/python bench/retrieval_peers.py DATA_DIR MODEL_DIR OUT.json [NAME=RUN.jsonl ...]
"""
import json
import statistics
import sys
import time

import numpy as np


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.split()
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue
            q, d, g = parts[0], parts[-3 if len(parts) == 4 else 1], int(parts[-1])
            qrels.setdefault(q, {})[d] = g
    return qrels


def score(qrels, run):
    import pytrec_eval

    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map"})
    full = ev.evaluate(run)
    # trec_eval breaks score ties by document id descending; sort the same way before cutting.
    top10 = {}
    for q, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
        ranked = sorted(ranked, key=lambda kv: -kv[1])
        top10[q] = dict(ranked[:10])
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    mean = lambda res, m: 100 * statistics.fmean(v[m] for v in res.values())
    return {
        "ndcg@10": mean(full, "ndcg_cut_10"),
        "mrr@10": mean(rr, "recip_rank"),
        "recall@100": mean(full, "recall_100"),
        "map": mean(full, "map"),
        "queries": len(full),
    }


def percentiles(times_ms):
    times_ms = sorted(times_ms)
    pick = lambda p: times_ms[max(0, min(len(times_ms) - 1, int(np.ceil(p * len(times_ms))) - 1))]
    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95)}


def bm25_peer(doc_ids, doc_texts, qids, qtexts, depth):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(doc_texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    build_s = time.perf_counter() - t0
    run, times = {}, []
    for qid, text in zip(qids, qtexts):
        t = time.perf_counter()
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
        times.append(1e3 * (time.perf_counter() - t))
        run[qid] = {doc_ids[int(d)]: float(s) for d, s in zip(docs[0], scores[0])}
    return run, {"build_s": build_s, **percentiles(times)}


def dense_peer(model_dir, doc_ids, doc_texts, qids, qtexts, depth):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    t0 = time.perf_counter()
    emb = model.encode(doc_texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    qemb = model.encode(qtexts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    encode_ms = 1e3 * (time.perf_counter() - t1) / len(qtexts)
    run, times = {}, []
    for qid, q in zip(qids, qemb):
        t = time.perf_counter()
        s = emb @ q
        top = np.argpartition(-s, depth)[:depth]
        top = top[np.argsort(-s[top])]
        times.append(1e3 * (time.perf_counter() - t))
        run[qid] = {doc_ids[int(i)]: float(s[i]) for i in top}
    return run, {"build_s": build_s, "encode_ms_per_query": encode_ms, **percentiles(times)}


def rrf(a, b, k=60.0, depth=100):
    out = {}
    for q in a:
        fused = {}
        for run in (a[q], b[q]):
            ranked = sorted(run.items(), key=lambda kv: -kv[1])[:depth]
            for r, (d, _) in enumerate(ranked):
                fused[d] = fused.get(d, 0.0) + 1.0 / (k + r + 1)
        out[q] = fused
    return out


def read_lmfuse_run(path):
    run = {}
    for line in read_jsonl(path):
        run[str(line["id"])] = {h["id"]: float(h["score"]) for h in line["hits"]}
    return run


def main():
    data, model_dir, out = sys.argv[1:4]
    corpus = read_jsonl(f"{data}/corpus.jsonl")
    queries = {str(q.get("id", q.get("_id"))): q["text"] for q in read_jsonl(f"{data}/queries.jsonl")}
    qrels = read_qrels(f"{data}/qrels/test.tsv")
    doc_ids = [str(d.get("id", d.get("_id"))) for d in corpus]
    doc_texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus]
    qids = [q for q in queries if q in qrels]
    qtexts = [queries[q] for q in qids]
    depth = 100
    report = {"queries": len(qids), "documents": len(doc_ids)}
    bm25_run, bm25_speed = bm25_peer(doc_ids, doc_texts, qids, qtexts, depth)
    report["bm25s"] = {**score(qrels, bm25_run), **bm25_speed}
    dense_run, dense_speed = dense_peer(model_dir, doc_ids, doc_texts, qids, qtexts, depth)
    report["sentence-transformers"] = {**score(qrels, dense_run), **dense_speed}
    report["bm25s+st rrf"] = score(qrels, rrf(bm25_run, dense_run))
    for arg in sys.argv[4:]:
        name, path = arg.split("=", 1)
        report[f"lmfuse {name} (pytrec_eval)"] = score(qrels, read_lmfuse_run(path))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
