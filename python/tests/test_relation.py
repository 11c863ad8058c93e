"""lmfuse.RelationClassifier: fit/predict/score on made-up directed relations (markers and
spans), fine-tuning, save and load_relations, a CLI bundle, and bad input."""

import json

import numpy as np
import pytest

import lmfuse
from lmfuse_testing import ROOT, cli, require

NAMES = ["alice", "bob", "carol", "dave", "emma", "frank"]


def examples(n, offset=0):
    """"a built b" is Product-Producer, "a owns b" Member-Collection, direction from which
    name is e1, "and" is Other; odd examples as dicts with character spans."""
    X, y = [], []
    for i in range(offset, offset + n):
        a, b = NAMES[i % 6], NAMES[(i // 6 + 1 + i) % 6]
        verb = ["built", "owns", "and"][(i // 2) % 3]
        e1_first = i % 2 == 0
        rel = {"built": "Product-Producer", "owns": "Member-Collection"}.get(verb)
        y.append("Other" if rel is None else f"{rel}({'e1,e2' if e1_first else 'e2,e1'})")
        if i % 3 == 0:
            text = f"today {a} {verb} {b} here"
            ra = (6, 6 + len(a))
            start = 6 + len(a) + 1 + len(verb) + 1
            rb = (start, start + len(b))
            e1, e2 = (ra, rb) if e1_first else (rb, ra)
            X.append({"text": text, "e1": e1, "e2": e2})
        else:
            ta, tb = ("e1", "e2") if e1_first else ("e2", "e1")
            X.append(f"today <{ta}>{a}</{ta}> {verb} <{tb}>{b}</{tb}> here")
    return X, y


def tiny():
    return str(require(ROOT / "models" / "splade-tiny", "splade-tiny (scripts/fetch-models.sh)"))


def test_fit_predict_score_and_round_trip(tmp_path):
    X, y = examples(120)
    X_dev, y_dev = examples(40, 500)
    clf = lmfuse.RelationClassifier(model=tiny(), c=[0.1, 1.0]).fit(X, y, X_dev, y_dev)
    assert "Other" in clf.classes_ and len(clf.classes_) == 5
    assert len(clf.report_["dev_f1_by_c"]) == 2
    proba = clf.predict_proba(X_dev)
    assert proba.shape == (40, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    score = clf.score(X_dev, y_dev)
    assert score == pytest.approx(clf.report_["dev"]["official_macro_f1"])
    assert score > 0.5
    clf.save(tmp_path / "re")
    back = lmfuse.load_relations(tmp_path / "re")
    assert back.predict(X_dev) == clf.predict(X_dev)
    # The CLI reads the same bundle to the same score.
    data = tmp_path / "dev.jsonl"
    rows = [dict(x, label=l) if isinstance(x, dict) else {"text": x, "label": l} for x, l in zip(X_dev, y_dev)]
    for r in rows:
        for k in ("e1", "e2"):
            if k in r:
                r[k] = {"start": r[k][0], "end": r[k][1]}
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = json.loads(cli("relation", "eval", "--model", str(tmp_path / "re"), "--data", str(data), "--json"))
    assert report["official_macro_f1"] == pytest.approx(score)


def test_fine_tuning_holds_out_dev_and_learns():
    X, y = examples(160)
    clf = lmfuse.RelationClassifier(
        model=tiny(), finetune=True, epochs=2, lr=1e-3, head_lr=1e-2, batch_size=8, dev_fraction=0.25
    ).fit(X, y)
    assert clf.report_["kind"] == "finetuned"
    assert clf.report_["dev_held_out"] is True
    best = clf.report_["finetune"]["best"]["dev_macro_f1"]
    assert best == pytest.approx(clf.report_["dev"]["official_macro_f1"])


def test_bad_examples_name_the_set_and_line():
    X, y = examples(10)
    with pytest.raises(ValueError, match=r"X:3: marker <e2> is missing"):
        lmfuse.RelationClassifier(model=tiny()).fit(X[:2] + ["<e1>a</e1> b"] + X[3:], y)
    with pytest.raises(ValueError, match="9 labels"):
        lmfuse.RelationClassifier(model=tiny()).fit(X, y[:9])
    with pytest.raises(ValueError, match=r"X\[1\]: e1 must be"):
        lmfuse.RelationClassifier(model=tiny()).fit([X[0], {"text": "ab", "e1": 3, "e2": (0, 1)}], y[:2])
    with pytest.raises(ValueError, match="c must be"):
        lmfuse.RelationClassifier(c=0).fit(X, y)
