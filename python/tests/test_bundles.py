"""Bundles between Python and the CLI: a bundle saved in Python predicts the same
probabilities with `lmfuse predict` and back in Python; the CLI's bundles (a classifier, an
ensemble) load in Python; a failed save loses nothing; a folder that is no bundle is refused."""

import json

import numpy as np
import pytest

import lmfuse
from lmfuse_testing import REVIEWS, ROOT, cli, require, reviews

NEW_TEXTS = [
    "The battery is fantastic and setup was easy.",
    "It broke after one day, awful support.",
    "屏幕很好，物流也快",
    "meh",
]


@pytest.fixture(scope="module")
def data():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    return reviews()


def cli_proba(bundle, texts, tmp_path, labels):
    """`lmfuse predict`'s probabilities, columns in the order of `labels` (float32)."""
    src = tmp_path / "new.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    cli("predict", "--model", str(bundle), "--input", str(src), "--output", str(out))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return np.array([[r["probabilities"][label] for label in labels] for r in rows], dtype=np.float32)


def test_python_to_cli_predict_to_python(data, tmp_path):
    X, y = data
    clf = lmfuse.TextClassifier(features="tfidf,emb").fit(X, y)
    bundle = tmp_path / "bundle"
    clf.save(bundle)
    ours = clf.predict_proba(NEW_TEXTS)
    theirs = cli_proba(bundle, NEW_TEXTS, tmp_path, list(clf.classes_))
    assert np.array_equal(ours, theirs)
    back = lmfuse.load(bundle)
    assert np.array_equal(back.predict_proba(NEW_TEXTS), ours)
    assert list(back.classes_) == list(clf.classes_)
    assert back.features == "tfidf,emb" and back.head == "logreg"
    assert np.array_equal(back.decision_function(NEW_TEXTS), clf.decision_function(NEW_TEXTS))
    # A loaded bundle saves again, as loaded.
    again = tmp_path / "again"
    back.save(again)
    assert np.array_equal(lmfuse.load(again).predict_proba(NEW_TEXTS), ours)


def test_side_columns_travel_with_the_bundle(tmp_path):
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model")
    import pandas as pd

    df = pd.DataFrame(
        {
            "text": [f"order {i}" for i in range(40)],
            "price": [float(i % 10) for i in range(40)],
            "label": ["dear" if i % 10 > 4 else "cheap" for i in range(40)],
        }
    )
    clf = lmfuse.TextClassifier(features="emb,tab", feature_cols=["price"], C=10.0)
    clf.fit(df, df["label"])
    bundle = tmp_path / "tab"
    clf.save(bundle)
    new = df.iloc[:6]
    src = tmp_path / "new.jsonl"
    new[["text", "price"]].to_json(src, orient="records", lines=True)
    out = tmp_path / "pred.jsonl"
    cli("predict", "--model", str(bundle), "--input", str(src), "--output", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    theirs = np.array([[r["probabilities"][c] for c in clf.classes_] for r in rows], dtype=np.float32)
    assert np.array_equal(clf.predict_proba(new), theirs)
    assert lmfuse.load(bundle).feature_cols_ == ["price"]


def test_a_cli_classifier_loads_in_python(data, tmp_path):
    bundle = tmp_path / "cli-model"
    cli("train", "--train", str(REVIEWS), "--features", "tfidf,emb", "--out", str(bundle), "-q")
    clf = lmfuse.load(bundle)
    theirs = cli_proba(bundle, NEW_TEXTS, tmp_path, list(clf.classes_))
    assert np.array_equal(clf.predict_proba(NEW_TEXTS), theirs)
    X, y = data
    assert clf.score(X, y) > 0.9


def test_a_cli_ensemble_loads_in_python(data, tmp_path):
    bundle = tmp_path / "ensemble"
    cli(
        "compare", "--train", str(REVIEWS), "--singles", "", "--members",
        "emb:logreg,tfidf:logreg", "--ensembles", "stacking", "--folds", "3", "--out", str(bundle), "-q",
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["task"] == "text-classification-ensemble"
    clf = lmfuse.load(bundle)
    theirs = cli_proba(bundle, NEW_TEXTS, tmp_path, list(clf.classes_))
    assert np.array_equal(clf.predict_proba(NEW_TEXTS), theirs)
    assert list(clf.predict(NEW_TEXTS)) == list(clf.classes_[theirs.argmax(axis=1)])
    assert not hasattr(clf, "decision_function")
    copy = tmp_path / "copy"
    clf.save(copy)
    assert np.array_equal(lmfuse.load(copy).predict_proba(NEW_TEXTS), theirs)


def test_not_a_bundle_and_missing_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lmfuse.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="manifest.json"):
        lmfuse.load(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        lmfuse.load(tmp_path / "file")


def test_a_failed_save_leaves_the_saved_bundle_untouched(data, tmp_path):
    X, y = data
    clf = lmfuse.TextClassifier(C=1.0).fit(X, y)
    bundle = tmp_path / "kept"
    clf.save(bundle)
    files = {p.name: p.read_bytes() for p in bundle.iterdir()}
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(RuntimeError, match="cannot save the bundle"):
        clf.save(blocker / "inside")
    with pytest.raises(ValueError):
        clf.fit(X, y[:3])
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == files
    assert np.array_equal(lmfuse.load(bundle).predict_proba(NEW_TEXTS), clf.predict_proba(NEW_TEXTS))


def test_a_bundle_loads_in_int8_as_cli_predict_runs_it(data, tmp_path):
    X, y = data
    bundle = tmp_path / "bundle"
    lmfuse.TextClassifier(features="emb").fit(X, y).save(bundle)
    int8 = lmfuse.load(bundle, cache=False, precision="int8")
    assert int8.precision == "int8"
    ours = int8.predict_proba(X)
    src, out = tmp_path / "all.jsonl", tmp_path / "pred.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in X), encoding="utf-8")
    cli("predict", "--model", str(bundle), "--input", str(src), "--output", str(out),
        "--precision", "int8", "--no-cache")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    labels = list(int8.classes_)
    theirs = np.array([[r["probabilities"][label] for label in labels] for r in rows],
                      dtype=np.float32)
    assert np.array_equal(ours, theirs)
    exact = lmfuse.load(bundle, cache=False).predict(X)
    agree = np.mean(int8.predict(X) == exact)
    assert agree >= 0.97, agree


def test_a_converted_bundle_runs_in_its_recorded_precision(data, tmp_path):
    X, y = data
    bundle, converted = tmp_path / "bundle", tmp_path / "bundle-bf16"
    lmfuse.TextClassifier(features="emb").fit(X, y).save(bundle)
    done = lmfuse.convert_bundle(bundle, converted, "bf16")
    assert done["precision"] == "bf16" and done["encoders"] == 1, done
    by_flag = lmfuse.load(bundle, cache=False, precision="bf16").predict_proba(X)
    recorded = lmfuse.load(converted, cache=False).predict_proba(X)
    assert np.array_equal(by_flag, recorded)
    with pytest.raises(ValueError, match="another folder"):
        lmfuse.convert_bundle(bundle, bundle, "int8")
    with pytest.raises(ValueError, match="precision"):
        lmfuse.convert_bundle(bundle, tmp_path / "x", "int4")
