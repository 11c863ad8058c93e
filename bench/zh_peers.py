"""Peers on one prepared Chinese set: scikit-learn TF-IDF (jieba words + characters) + LR, and
sentence-transformers on the converted multilingual-e5-small folder (prefix "query: ", mean
pooling, normalised) + LR. C is chosen on dev from the same grid lmfuse uses; test is read once.

    bench/.venv/bin/python bench/zh_peers.py bench/out/zh/SET models/multilingual-e5-small
Prints JSON: test accuracy of each peer, the chosen C and the seconds taken.
"""
import json
import sys
import time

import jieba
import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

folder, model_dir = sys.argv[1], sys.argv[2]
GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
jieba.setLogLevel(60)


def load(split):
    rows = [json.loads(line) for line in open(f"{folder}/{split}.jsonl", encoding="utf-8")]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def fit_on_dev(xtr, ytr, xdv, ydv):
    """LR with C chosen on dev accuracy, refit on train."""
    best = max(GRID, key=lambda c: (LogisticRegression(C=c, max_iter=3000).fit(xtr, ytr)
                                    .score(xdv, ydv), -c))
    return LogisticRegression(C=best, max_iter=3000).fit(xtr, ytr), best


(tr, ytr), (dv, ydv), (te, yte) = load("train"), load("dev"), load("test")
out = {}
t = time.time()
words = TfidfVectorizer(tokenizer=lambda s: jieba.lcut(s), token_pattern=None,
                        ngram_range=(1, 2), sublinear_tf=True, min_df=1)
chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
xtr = hstack([words.fit_transform(tr), chars.fit_transform(tr)]).tocsr()
feats = lambda x: hstack([words.transform(x), chars.transform(x)]).tocsr()
clf, c = fit_on_dev(xtr, ytr, feats(dv), ydv)
out["sklearn_tfidf_jieba_lr"] = {"test": clf.score(feats(te), yte), "C": c,
                                 "seconds": time.time() - t}

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

torch.set_num_threads(2)
t = time.time()
st = SentenceTransformer(model_dir, device="cpu")
st.max_seq_length = 512
enc = lambda x: st.encode(["query: " + s for s in x], batch_size=32, normalize_embeddings=True)
etr, edv, ete = enc(tr), enc(dv), enc(te)
clf, c = fit_on_dev(etr, ytr, edv, ydv)
out["st_e5_lr"] = {"test": clf.score(ete, yte), "C": c, "seconds": time.time() - t}
# Soft vote of the two, as the strongest twenty-line script would do.
p_tfidf = fit_on_dev(xtr, ytr, feats(dv), ydv)[0]
p_st = clf
proba = (p_tfidf.predict_proba(feats(te)) + p_st.predict_proba(ete)) / 2
pred = np.array(p_st.classes_)[proba.argmax(1)]
out["sklearn_soft_vote"] = {"test": float(np.mean(pred == np.array(yte)))}
print(json.dumps(out))
