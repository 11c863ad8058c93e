#!/usr/bin/env python3
"""sklearn-crfsuite (CRFsuite's linear-chain CRF) on the token features lmfuse wrote: the peer
for lmfuse's NER CRF.

    bench/.venv-ner/bin/python bench/ner_crfsuite.py --train T.jsonl --dev D.jsonl --test E.jsonl \
        [--c2 0.01,0.1,1.0] [--c1 0] [--max-iterations 100] [--algorithm lbfgs] \
        [--all-possible-transitions]

Each JSONL line: {"tokens": [str], "tags": [str (IOB2)], "features": [[str, ...] per token]}.
Each token's feature strings are its CRFsuite attributes, each with value 1.

For every c2 of the grid: fit on train (timed), score on dev with seqeval's strict IOB2 micro
F1. The best c2 on dev (ties: the first in --c2 order) is then scored on test; there is no
refit on train+dev. Prints one JSON object to stdout (scores are raw 0-1 floats); progress
goes to stderr. Apart from the options, CRFsuite's defaults hold, e.g. L-BFGS also stops
early when the loss improves by less than delta=1e-5 over period=10 iterations
(iterations_by_c2 says how many ran).

Needs bench/setup_ner_venv.sh.
"""
import argparse
import json
import platform
import sys
import time
from importlib.metadata import version

import sklearn_crfsuite
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2


def log(msg):
    print(f"[ner_crfsuite] {msg}", file=sys.stderr, flush=True)


def load(path):
    """Returns (features, tags): features[i][j] is the list of attribute strings of token j."""
    xs, ys = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            tokens, tags, feats = row["tokens"], row["tags"], row["features"]
            if not tokens or not (len(tokens) == len(tags) == len(feats)):
                sys.exit(f"{path}:{n}: need non-empty tokens, tags and features of equal length")
            # python-crfsuite takes a list of strings per token as-is (attribute names, each
            # with value 1.0), so no {attr: 1.0} dicts are needed. Two things to know:
            # a repeated string counts twice (value 2), and "name:2" is NOT parsed as a
            # weight (that is only crfsuite's command-line file format).
            xs.append([list(map(str, fs)) for fs in feats])
            ys.append([str(t) for t in tags])
    if not xs:
        sys.exit(f"{path}: no sentences")
    return xs, ys


def predict(crf, xs):
    # Not crf.predict(): sklearn-crfsuite 0.5 returns a numpy object array there, which turns
    # into a 2-D array of strings when all sentences have the same length, and seqeval
    # rejects anything but a list of lists. predict_single returns a plain list of tags.
    return [crf.predict_single(x) for x in xs]


def scores(gold, pred):
    """seqeval strict IOB2 entity scores: micro average and per type."""
    r = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)

    def row(d):
        return {"precision": float(d["precision"]), "recall": float(d["recall"]),
                "f1": float(d["f1-score"]), "support": int(d["support"])}

    per_type = {k: row(v) for k, v in r.items() if not k.endswith(" avg")}
    return row(r["micro avg"]), per_type


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--c2", default="0.01,0.1,1.0", help="comma-separated L2 grid, chosen on dev")
    ap.add_argument("--c1", type=float, default=0.0, help="L1 coefficient (lbfgs only)")
    ap.add_argument("--max-iterations", type=int, default=100)
    ap.add_argument("--algorithm", default="lbfgs", choices=["lbfgs", "l2sgd"],
                    help="the CRFsuite algorithms that take c2")
    ap.add_argument("--all-possible-transitions", action="store_true",
                    help="also make weights for label transitions never seen in train")
    args = ap.parse_args()
    grid = [float(c) for c in args.c2.split(",")]
    if args.algorithm != "lbfgs" and args.c1 != 0.0:
        sys.exit("--c1 is only for --algorithm lbfgs")

    (tr_x, tr_y), (dv_x, dv_y), (te_x, te_y) = (load(p) for p in (args.train, args.dev, args.test))
    n_tokens = sum(len(s) for s in tr_x)
    n_feats = sum(len(t) for s in tr_x for t in s)
    dups = sum(len(t) - len(set(t)) for s in tr_x for t in s)
    log(f"train {len(tr_x)} sentences, {n_tokens} tokens, {n_feats / n_tokens:.1f} features per token; "
        f"dev {len(dv_x)}; test {len(te_x)}")
    if dups:
        log(f"warning: {dups} repeated feature strings within tokens in train; CRFsuite counts each one")

    dev_f1, fit_s, iters, best = {}, {}, {}, None
    for c2 in grid:
        params = dict(algorithm=args.algorithm, c2=c2, max_iterations=args.max_iterations,
                      all_possible_transitions=args.all_possible_transitions)
        if args.algorithm == "lbfgs":
            params["c1"] = args.c1  # CRFsuite rejects c1 for other algorithms
        crf = sklearn_crfsuite.CRF(**params)
        start = time.perf_counter()
        crf.fit(tr_x, tr_y)
        seconds = time.perf_counter() - start
        f1 = scores(dv_y, predict(crf, dv_x))[0]["f1"]
        key = str(c2)
        dev_f1[key], fit_s[key] = f1, seconds
        iters[key] = len(crf.training_log_.iterations) if crf.training_log_ else None
        log(f"c2={c2}: fit {seconds:.2f} s ({iters[key]} iterations), dev strict micro F1 {f1:.4f}")
        if best is None or f1 > best[1]:
            best = (c2, f1, crf)

    c2, _, crf = best
    crf.tagger_  # opens the model file now, so that the timing below is prediction only
    start = time.perf_counter()
    te_pred = predict(crf, te_x)
    pred_s = time.perf_counter() - start
    micro, per_type = scores(te_y, te_pred)
    log(f"chosen c2={c2}: test strict micro F1 {micro['f1']:.4f}; predict {pred_s:.3f} s")

    print(json.dumps({
        "peer": "sklearn-crfsuite",
        "versions": {"sklearn-crfsuite": version("sklearn-crfsuite"), "python-crfsuite": version("python-crfsuite"),
                     "seqeval": version("seqeval"), "scikit-learn": version("scikit-learn"),
                     "python": platform.python_version()},
        "algorithm": args.algorithm,
        "max_iterations": args.max_iterations,
        "all_possible_transitions": args.all_possible_transitions,
        "c1": args.c1 if args.algorithm == "lbfgs" else None,
        "c2_grid": grid,
        "chosen_c2": c2,
        "dev_f1_by_c2": dev_f1,
        "fit_seconds_by_c2": fit_s,
        "iterations_by_c2": iters,
        "test": {"micro": micro, "per_type": per_type, "strict": True},
        "predict_seconds_test": pred_s,
        "sentences_per_second_predict": len(te_x) / pred_s if pred_s > 0 else None,
        "train_sentences": len(tr_x),
        "dev_sentences": len(dv_x),
        "test_sentences": len(te_x),
        "features_per_token_mean": n_feats / n_tokens,
    }))


if __name__ == "__main__":
    main()
