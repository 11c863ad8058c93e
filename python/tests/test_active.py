"""lmfuse.select and lmfuse.learning_curves: active learning as `lmfuse select` runs it."""

import json

import pytest

import lmfuse
from lmfuse_testing import REVIEWS, ROOT, cli, read_jsonl, require


@pytest.fixture(scope="module", autouse=True)
def default_model():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    lines = REVIEWS.read_text().splitlines()
    d = tmp_path_factory.mktemp("active")
    (d / "pool.jsonl").write_text("\n".join(lines[:200]) + "\n")
    (d / "test.jsonl").write_text("\n".join(lines[200:]) + "\n")
    return d / "pool.jsonl", d / "test.jsonl"


def test_learning_curves_match_the_cli(split, tmp_path):
    pool, test = split
    kw = dict(budget=60, initial=10, step=25, strategies=("random", "hybrid"), seeds=2)
    report = lmfuse.learning_curves(pool, test, **kw)
    assert [c["strategy"] for c in report["curves"]] == ["random", "hybrid"]
    assert [p["labels"] for p in report["curves"][0]["points"]] == [10, 35, 60]
    out = tmp_path / "curves.json"
    cli(
        "select", "--simulate", "--train", str(pool), "--test", str(test), "--budget", "60",
        "--initial", "10", "--step", "25", "--strategies", "random,hybrid", "--seeds", "2",
        "-o", str(out), "-q",
    )
    assert json.loads(out.read_text()) == report


def test_select_names_texts_of_the_pool_and_refuses_bad_settings(split, tmp_path):
    pool, test = split
    bundle = tmp_path / "bundle"
    cli("train", "--train", str(test), "--test", str(test), "--out", str(bundle), "-q")
    texts = [r["text"] for r in read_jsonl(pool)]
    chosen = lmfuse.select(texts, bundle, 5, strategy="hybrid", labelled=texts[:3])
    assert [c["rank"] for c in chosen] == [1, 2, 3, 4, 5]
    assert all(texts[c["row"]] == c["text"] for c in chosen)
    assert len({c["row"] for c in chosen}) == 5
    with pytest.raises(ValueError, match="strategy"):
        lmfuse.select(texts, bundle, 5, strategy="smart")
    with pytest.raises(ValueError, match="larger than the pool"):
        lmfuse.select(texts[:3], bundle, 5)


def test_text_classifier_takes_augmentation(tmp_path):
    rows = [json.loads(line) for line in REVIEWS.read_text().splitlines()]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    clf = lmfuse.TextClassifier(augment="copies=2,rs=0.2,rd=0.2", C=1.0).fit(texts, labels)
    a = clf.report_["augmentation"]
    assert a["texts"] == len(texts) and 0 < a["added"] <= 2 * len(texts)
    assert set(a["by_op"]) <= {"swap", "delete"}
    para = lmfuse.TextClassifier(augment_cmd="sed 's/^/Truly, /'", C=1.0).fit(texts, labels)
    assert para.report_["augmentation"]["by_op"] == {"paraphrase": len(texts)}
    with pytest.raises(ValueError, match="sr must be in"):
        lmfuse.TextClassifier(augment="sr=2").fit(texts, labels)
    with pytest.raises(ValueError, match="--augment or --augment-cmd"):
        lmfuse.TextClassifier(augment_filter=0.9).fit(texts, labels)


def test_text_classifier_self_trains_on_unlabeled_texts():
    rows = [json.loads(line) for line in REVIEWS.read_text().splitlines()]
    labelled = rows[:40]
    texts, labels = [r["text"] for r in labelled], [r["label"] for r in labelled]
    pool = [r["text"] for r in rows[40:200]]
    clf = lmfuse.TextClassifier(self_train_rounds=2).fit(texts, labels, unlabeled=pool)
    st = clf.report_["self_training"]
    assert st["unlabelled"] == len(pool) and 1 <= len(st["rounds"]) <= 3
    assert st["kept"] < len(st["rounds"])
    again = lmfuse.TextClassifier(self_train_rounds=2).fit(texts, labels, unlabeled=pool)
    assert again.report_["self_training"] == st
    assert "self_training" not in lmfuse.TextClassifier().fit(texts, labels).report_
    with pytest.raises(ValueError, match="list of texts"):
        lmfuse.TextClassifier().fit(texts, labels, unlabeled="one text")
    with pytest.raises(ValueError, match="pseudo-threshold"):
        lmfuse.TextClassifier(pseudo_threshold=2.0).fit(texts, labels, unlabeled=pool)
