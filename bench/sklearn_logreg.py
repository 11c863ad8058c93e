#!/usr/bin/env python3
"""scikit-learn's LogisticRegression on the embeddings lmfuse wrote, for a side-by-side check.

Usage: python bench/sklearn_logreg.py TRAIN.npy TRAIN.jsonl DEV.npy DEV.jsonl TEST.npy TEST.jsonl C1,C2,...
Picks C on dev by accuracy (the smaller C on ties, as lmfuse), fits on train, prints one JSON
object: {"c": ..., "dev_accuracy": ..., "test_accuracy": ..., "fit_seconds": ...}.
"""
import json
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression


def labels(path):
    return [str(json.loads(l)["label"]) for l in open(path, encoding="utf-8") if l.strip()]


def main():
    tr_x, tr_y, dv_x, dv_y, te_x, te_y, grid = sys.argv[1:8]
    xs = [np.load(p) for p in (tr_x, dv_x, te_x)]
    ys = [labels(p) for p in (tr_y, dv_y, te_y)]
    grid = sorted(float(c) for c in grid.split(","))
    start = time.perf_counter()
    best = None
    for c in grid:
        m = LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit(xs[0], ys[0])
        acc = float((m.predict(xs[1]) == np.array(ys[1])).mean())
        if best is None or acc > best[1]:
            best = (c, acc, m)
    seconds = time.perf_counter() - start
    c, dev_acc, m = best
    test_acc = float((m.predict(xs[2]) == np.array(ys[2])).mean())
    print(json.dumps({"c": c, "dev_accuracy": dev_acc, "test_accuracy": test_acc, "fit_seconds": seconds}))


if __name__ == "__main__":
    main()
