"""cross_val_score over lmfuse.TextClassifier on sst2 equals the CLI's cross-validation
(`lmfuse compare`) on the same folds, and stratified_folds assigns them as the CLI does."""

import json

import numpy as np
from sklearn.model_selection import PredefinedSplit, cross_val_score

import lmfuse
from lmfuse_testing import ROOT, SHARED, cli, read_jsonl, require

FOLDS, SEED = 5, 13


def test_cross_val_score_matches_lmfuse_compare_on_sst2():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    sst2 = require(SHARED / "data" / "sst2", "the sst2 data set (../shared/data/sst2)")
    board = json.loads(
        cli(
            "compare", "--train", str(sst2 / "train.jsonl"), "--dev", str(sst2 / "dev.jsonl"),
            "--test", str(sst2 / "test.jsonl"), "--singles", "emb:logreg", "--ensembles", "",
            "--folds", str(FOLDS), "--seed", str(SEED), "--json", "-q",
        )
    )
    (row,) = [c for c in board["candidates"] if c["name"] == "emb:logreg"]
    c = row["selected"]["c"]
    train = read_jsonl(sst2 / "train.jsonl")
    X = [r["text"] for r in train]
    y = [r["label"] for r in train]
    folds = lmfuse.stratified_folds(y, FOLDS, SEED)
    assert sorted(np.bincount(folds).tolist()) == [1384] * 5
    scores = cross_val_score(lmfuse.TextClassifier(C=c), X, y, cv=PredefinedSplit(folds))
    print(f"sst2: CLI cv_accuracy {row['cv_accuracy']:.4f} (C={c}), Python {scores.mean():.4f}")
    assert abs(scores.mean() - row["cv_accuracy"]) <= 0.005


def test_stratified_folds_are_stratified_and_seeded():
    y = ["b"] * 30 + ["a"] * 20 + ["c"] * 10
    folds = lmfuse.stratified_folds(y, 5, 13)
    assert folds.shape == (60,) and set(folds.tolist()) == set(range(5))
    for label, per_fold in (("a", 4), ("b", 6), ("c", 2)):
        rows = [f for f, l in zip(folds, y) if l == label]
        assert np.bincount(rows, minlength=5).tolist() == [per_fold] * 5
    assert np.array_equal(folds, lmfuse.stratified_folds(y, 5, 13))
    assert not np.array_equal(folds, lmfuse.stratified_folds(y, 5, 14))
