#!/usr/bin/env python3
"""The Python pipeline lmfuse's `train` replaces: sentence-transformers encode + scikit-learn
LogisticRegression with C chosen on dev, timed end to end (model load included).

Usage: python bench/python_train.py --model DIR --train F --dev F --test F [--threads 2]
Prints one JSON object: seconds (total, encode, fit), test accuracy, chosen C.
"""
import argparse
import json
import os
import time

start = time.perf_counter()
p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--train", required=True)
p.add_argument("--dev", required=True)
p.add_argument("--test", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--grid", default="0.01,0.03,0.1,0.3,1,3,10,30,100")
args = p.parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

torch.set_num_threads(args.threads)


def load(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], [str(r["label"]) for r in rows]


model = SentenceTransformer(args.model, device="cpu")
model.max_seq_length = 256
parts = [load(f) for f in (args.train, args.dev, args.test)]
t = time.perf_counter()
xs = [model.encode(texts, batch_size=32, normalize_embeddings=True) for texts, _ in parts]
encode = time.perf_counter() - t
t = time.perf_counter()
best = None
for c in sorted(float(v) for v in args.grid.split(",")):
    m = LogisticRegression(C=c, max_iter=1000).fit(xs[0], parts[0][1])
    acc = float((m.predict(xs[1]) == np.array(parts[1][1])).mean())
    if best is None or acc > best[1]:
        best = (c, acc, m)
fit = time.perf_counter() - t
test_acc = float((best[2].predict(xs[2]) == np.array(parts[2][1])).mean())
print(json.dumps({"engine": "sentence-transformers + scikit-learn", "c": best[0], "test_accuracy": test_acc,
                  "seconds": {"total": time.perf_counter() - start, "encode": encode, "fit": fit}}))
