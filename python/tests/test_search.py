"""``lmfuse.SearchIndex``: build, search, add, delete, rerank and evaluate from Python, each
checked against what the ``lmfuse`` CLI answers on the same index."""

import json

import pytest

import lmfuse
from lmfuse_testing import ROOT, cli, require

MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
CROSS = ROOT / "crates" / "lmfuse-encoder" / "tests" / "fixtures" / "cross-tiny"

DOCS = [
    {"id": "cats", "title": "Cats", "text": "Cats purr and chase mice around the house."},
    {"id": "dogs", "title": "Dogs", "text": "Dogs bark at the postman and fetch sticks."},
    {"id": "tea", "title": "Green tea", "text": "Green tea is brewed with water below boiling."},
    {"id": "rust", "title": "Rust", "text": "Rust is a systems language with a borrow checker."},
]
QUERIES = ["why do dogs bark", "brewing green tea", "memory safe language"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require(MODEL / "model.safetensors", "models/all-MiniLM-L6-v2 (bash scripts/fetch-models.sh)")
    tmp = tmp_path_factory.mktemp("search")
    index = lmfuse.SearchIndex.build(tmp / "idx", DOCS, model=str(MODEL), cache_dir=tmp / "cache")
    return tmp, index


def _same_hits(got, want):
    """Equal lists of hit lists: ids, ranks and titles exactly, scores as f32."""
    assert [[(h["rank"], h["id"], h["title"]) for h in hits] for hits in got] == \
        [[(h["rank"], h["id"], h["title"]) for h in hits] for hits in want]
    for g, w in zip(got, want):
        assert [h["score"] for h in g] == pytest.approx([h["score"] for h in w], rel=1e-6)


def _cli_hits(idx, mode, extra=()):
    args = ["search", "--index", str(idx), "--mode", mode, "-k", "3", *extra]
    for q in QUERIES:
        args += ["--query", q]
    return [json.loads(l)["hits"] for l in cli(*args).splitlines()]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid", "weighted"])
def test_search_matches_the_cli(built, mode):
    tmp, index = built
    assert index.summary_["documents"] == 4
    hits = index.search(QUERIES, mode=mode, k=3)
    _same_hits(hits, _cli_hits(tmp / "idx", mode))
    assert index.search(QUERIES[0], mode=mode, k=3) == hits[0]


def test_add_delete_and_errors(tmp_path):
    require(MODEL / "model.safetensors", "models/all-MiniLM-L6-v2")
    index = lmfuse.SearchIndex.build(tmp_path / "idx", DOCS, bm25_only=True)
    assert index.search("dogs bark", mode="bm25", k=1)[0]["id"] == "dogs"
    summary = index.add([{"id": "bread", "title": "Bread", "text": "Sourdough bread rises."}])
    assert summary["documents"] == 5 and summary["generation"] == 2
    assert index.search("sourdough", mode="bm25", k=1)[0]["id"] == "bread"
    assert index.delete(["dogs"])["documents"] == 4
    assert all(h["id"] != "dogs" for h in index.search("dogs bark", mode="bm25"))
    with pytest.raises(ValueError, match="no vectors"):
        index.search("dogs", mode="dense")
    with pytest.raises(ValueError, match="unknown search mode"):
        index.search("dogs", mode="fuzzy")
    with pytest.raises(ValueError, match="empty"):
        index.search("   ", mode="bm25")
    with pytest.raises(FileNotFoundError):
        lmfuse.SearchIndex(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="document 0"):
        lmfuse.SearchIndex.build(tmp_path / "bad", ["not a dict"], bm25_only=True)


def test_rerank_and_evaluate_match_the_cli(built, tmp_path):
    tmp, index = built
    index.rerank_with(CROSS, depth=4)
    try:
        _same_hits(index.search(QUERIES, mode="bm25", k=3), _cli_hits(
            tmp / "idx", "bm25", ["--rerank", str(CROSS), "--rerank-depth", "4"]))
    finally:
        index.rerank_with(None)
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                               for i, q in enumerate(QUERIES)))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\tdogs\t1\nq1\ttea\t1\nq2\trust\t1\n")
    report = index.evaluate(queries, qrels, modes=["bm25", "hybrid"])
    offline = json.loads(cli("search", "eval", "--index", str(tmp / "idx"), "--queries",
                             str(queries), "--qrels", str(qrels), "--modes", "bm25,hybrid",
                             "--json"))
    assert [m["scores"] for m in report["modes"]] == [m["scores"] for m in offline["modes"]]
    assert report["queries"] == 3
