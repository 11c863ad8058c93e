#!/usr/bin/env python3
"""scikit-learn's TF-IDF (word 1-2 + char 2-5 grams, sublinear tf) + LogisticRegression on the
same JSONL splits lmfuse reads, for a side-by-side check of `--features tfidf`.

Usage: python bench/sklearn_tfidf.py TRAIN.jsonl DEV.jsonl TEST.jsonl C1,C2,...
Picks C on dev by accuracy (the smaller C on ties, as lmfuse), prints one JSON object:
{"c": ..., "dev_accuracy": ..., "test_accuracy": ..., "fit_seconds": ...}.
"""
import json
import sys
import time

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression


def load(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], np.array([str(r["label"]) for r in rows])


def main():
    (tr_t, tr_y), (dv_t, dv_y), (te_t, te_y) = (load(p) for p in sys.argv[1:4])
    grid = sorted(float(c) for c in sys.argv[4].split(","))
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True)
    x_tr = sp.hstack([word.fit_transform(tr_t), char.fit_transform(tr_t)]).tocsr()
    x_dv = sp.hstack([word.transform(dv_t), char.transform(dv_t)]).tocsr()
    x_te = sp.hstack([word.transform(te_t), char.transform(te_t)]).tocsr()
    start = time.perf_counter()
    best = None
    for c in grid:
        m = LogisticRegression(C=c, max_iter=1000).fit(x_tr, tr_y)
        acc = float((m.predict(x_dv) == dv_y).mean())
        if best is None or acc > best[1]:
            best = (c, acc, m)
    seconds = time.perf_counter() - start
    c, dev_acc, m = best
    test_acc = float((m.predict(x_te) == te_y).mean())
    print(json.dumps({"c": c, "dev_accuracy": dev_acc, "test_accuracy": test_acc,
                      "fit_seconds": seconds}))


if __name__ == "__main__":
    main()
