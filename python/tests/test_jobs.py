"""lmfuse.compare and lmfuse.finetune: the CLI's pipelines on data files, results as rows a
DataFrame takes, bundles the CLI reads, and bad settings."""

import json

import numpy as np
import pandas as pd
import pytest

import lmfuse
from lmfuse_testing import REVIEWS, ROOT, cli, require

SMALL = dict(
    folds=3,
    singles="emb:logreg,tfidf:logreg",
    members="emb:logreg,tfidf:logreg",
    ensembles="soft_vote,stacking",
)
TEXTS = ["It broke after one day, awful support.", "Lovely, works perfectly."]


@pytest.fixture(scope="module", autouse=True)
def default_model():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")


def test_compare_ranks_as_lmfuse_compare(tmp_path):
    out = tmp_path / "winner"
    board = lmfuse.compare(REVIEWS, out=out, **SMALL)
    frame = pd.DataFrame(board)
    assert len(frame) == 4 and frame["cv_accuracy"].is_monotonic_decreasing
    assert frame.loc[0, "winner"] and frame["winner"].sum() == 1 and frame.loc[0, "saved"]
    assert {"name", "kind", "cv_std", "dev_accuracy", "test_macro_f1"} <= set(frame.columns)
    theirs = json.loads(
        cli(
            "compare", "--train", str(REVIEWS), "--folds", "3", "--singles", SMALL["singles"],
            "--members", SMALL["members"], "--ensembles", SMALL["ensembles"], "--json", "-q",
        )
    )
    cv = {c["name"]: c["cv_accuracy"] for c in theirs["candidates"]}
    assert {row["name"]: row["cv_accuracy"] for row in board} == cv
    assert board.report["winner"]["name"] == theirs["winner"]["name"]
    saved = lmfuse.load(out)
    assert list(saved.predict(TEXTS)) == ["negative", "positive"]


def test_compare_takes_a_preset_a_time_limit_and_calibrates_what_it_saves(tmp_path):
    out = tmp_path / "winner"
    board = lmfuse.compare(REVIEWS, folds=3, preset="fast", time_limit=0.001, select="one-se",
                           out=out)
    # A spent budget: the first candidate only, the others listed as skipped.
    assert [row["name"] for row in board] == ["emb:logreg"]
    assert len(board.report["skipped"]) == 2 + 5 and board.report["preset"] == "fast"
    calibration = board.report["calibration"]
    assert calibration["temperature"] > 0
    assert calibration["oof_log_loss_calibrated"] <= calibration["oof_log_loss"]
    assert len(list(lmfuse.load(out).predict(TEXTS))) == 2
    with pytest.raises(ValueError, match="preset"):
        lmfuse.compare(REVIEWS, preset="huge")
    with pytest.raises(ValueError, match="time_limit"):
        lmfuse.compare(REVIEWS, time_limit=-1)


def test_compare_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        lmfuse.compare(tmp_path / "missing.jsonl", **SMALL)
    with pytest.raises(ValueError, match="oof_members"):
        lmfuse.compare(REVIEWS, oof_members="sometimes", **SMALL)
    with pytest.raises(ValueError, match="unknown ensemble"):
        lmfuse.compare(REVIEWS, **{**SMALL, "ensembles": "majority"})


def test_finetune_saves_a_bundle_the_cli_reads(tmp_path):
    tiny = require(ROOT / "models" / "splade-tiny", "the tiny test model (scripts/fetch-models.sh)")
    out = tmp_path / "tuned"
    runs = lmfuse.finetune(
        REVIEWS, out, model=tiny, epochs=1, batch_size=16, eval_every=5, run_dir=tmp_path / "run"
    )
    frame = pd.DataFrame(runs)
    assert {"step", "dev_accuracy", "train_loss"} <= set(frame.columns) and len(frame) >= 3
    assert runs.report["bundle"] == str(out) and runs.report["finetune"]["epochs"] == 1
    assert (out / "encoder").is_dir() and (tmp_path / "run").is_dir()
    clf = lmfuse.load(out)
    src = tmp_path / "new.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    cli("predict", "--model", str(out), "--input", str(src), "--output", str(pred))
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    theirs = np.array([[r["probabilities"][c] for c in clf.classes_] for r in rows], dtype=np.float32)
    assert np.array_equal(clf.predict_proba(TEXTS), theirs)


def test_finetune_refuses_unknown_or_bad_options(tmp_path):
    with pytest.raises(ValueError, match='unknown fine-tuning option "epoch"'):
        lmfuse.finetune(REVIEWS, tmp_path / "x", epoch=1)
    with pytest.raises(ValueError, match="metric"):
        lmfuse.finetune(REVIEWS, tmp_path / "x", metric="auc")
    with pytest.raises(ValueError, match="epochs"):
        lmfuse.finetune(REVIEWS, tmp_path / "x", epochs="three")
    assert not (tmp_path / "x").exists()
