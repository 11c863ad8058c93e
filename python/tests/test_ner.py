"""lmfuse.EntityTagger: fit/predict/find/score on made-up sentences, the fusion with the
default encoder, save and load_tagger, a CLI bundle, and bad input."""

import json

import pytest

import lmfuse
from lmfuse_testing import ROOT, cli, require

PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank"]
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Oslo"]


def sentences(n, offset=0):
    X, y = [], []
    for i in range(offset, offset + n):
        person, city = PEOPLE[i % 6], CITIES[(i // 2) % 5]
        verb = ["works", "lives", "studies"][i % 3]
        X.append([person, verb, "in", city, "."])
        y.append(["B-PER", "O", "O", "B-LOC", "O"])
    return X, y


def test_fit_predict_find_score_and_round_trip(tmp_path):
    X, y = sentences(40)
    X_dev, y_dev = sentences(10, 40)
    tagger = lmfuse.EntityTagger(c2=[0.01, 1.0]).fit(X, y, X_dev, y_dev)
    assert tagger.types_ == ["LOC", "PER"]
    assert len(tagger.report_["dev_f1_by_c2"]) == 2
    assert tagger.predict(X_dev[:2]) == y_dev[:2]
    assert tagger.score(X_dev, y_dev) == 1.0
    found = tagger.find(["Emma lives in Oslo."])[0]
    assert [(e["start"], e["end"], e["label"], e["text"]) for e in found] == [
        (0, 4, "PER", "Emma"),
        (14, 18, "LOC", "Oslo"),
    ]
    tagger.save(tmp_path / "ner")
    back = lmfuse.load_tagger(tmp_path / "ner")
    assert back.predict(X_dev) == tagger.predict(X_dev)
    report = json.loads(
        cli("ner", "eval", "--model", str(tmp_path / "ner"),
            "--data", str(write_conll(tmp_path / "dev.conll", X_dev, y_dev)), "--json")
    )
    assert report["micro"]["f1"] == 1.0, "the CLI reads the bundle Python wrote"


def write_conll(path, X, y):
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s, g)) + "\n" for s, g in zip(X, y)))
    return path


def test_the_fusion_with_the_default_encoder():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    X, y = sentences(30)
    tagger = lmfuse.EntityTagger(features="hand,emb", max_iter=30).fit(X, y)
    assert tagger.predict(X[:3]) == y[:3]
    found = tagger.find(["Bob studies in Rome."])[0]
    assert [e["text"] for e in found] == ["Bob", "Rome"]


def test_a_tagger_fine_tuned_end_to_end_round_trips(tmp_path):
    tiny = ROOT / "models" / "splade-tiny"
    require(tiny, "splade-tiny (scripts/fetch-models.sh)")
    X, y = sentences(40)
    X_dev, y_dev = sentences(12, 40)
    tagger = lmfuse.EntityTagger(
        features="emb", model=str(tiny), finetune="crf", epochs=2, lr=1e-3
    ).fit(X, y, X_dev, y_dev)
    assert tagger.report_["features"] == "ft-crf"
    assert tagger.report_["finetune"]["best"]["dev_macro_f1"] == tagger.score(X_dev, y_dev)
    tagger.save(tmp_path / "tuned")
    assert (tmp_path / "tuned" / "encoder" / "model.safetensors").is_file()
    back = lmfuse.load_tagger(tmp_path / "tuned")
    assert back.predict(X_dev) == tagger.predict(X_dev)
    back.save(tmp_path / "again")
    assert lmfuse.load_tagger(tmp_path / "again").predict(X_dev) == tagger.predict(X_dev)
    with pytest.raises(ValueError, match="finetune needs the encoder"):
        lmfuse.EntityTagger(finetune="crf").fit(X, y, X_dev, y_dev)
    with pytest.raises(ValueError, match="--dev|dev"):
        lmfuse.EntityTagger(features="emb", model=str(tiny), finetune="softmax").fit(X, y)


def test_bad_input_is_a_value_error_naming_the_place():
    X, y = sentences(5)
    y[2] = ["B-PER", "O", "O", "I-LOC", "O"]
    with pytest.raises(ValueError, match=r"y\[2\]:4: tag \"I-LOC\" breaks the BIO scheme"):
        lmfuse.EntityTagger().fit(X, y)
    with pytest.raises(ValueError, match="sentence 0 has 5 tokens and 4 tags"):
        lmfuse.EntityTagger().fit(X[:1], [y[0][:4]])
    with pytest.raises(ValueError, match="need --dev|dev"):
        lmfuse.EntityTagger(c2=[0.1, 1.0]).fit(*sentences(5))
    with pytest.raises(ValueError, match="features="):
        lmfuse.EntityTagger(features="tfidf").fit(*sentences(5))
    with pytest.raises(ValueError, match=r"X\[0\] holds 3"):
        lmfuse.EntityTagger().fit([["a", 3]], [["O", "O"]])
    repaired = lmfuse.EntityTagger(repair_bio=True).fit(X, y)
    assert "LOC" in repaired.types_


def test_missing_and_classifier_bundles_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lmfuse.load_tagger(tmp_path / "missing")
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    clf = lmfuse.TextClassifier(features="tfidf").fit(["good", "bad"] * 10, ["p", "n"] * 10)
    clf.save(tmp_path / "clf")
    with pytest.raises(ValueError, match="is not an NER bundle"):
        lmfuse.load_tagger(tmp_path / "clf")
