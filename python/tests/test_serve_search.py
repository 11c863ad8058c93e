"""`lmfuse serve --index` and `--faq` against the clients people use.

An index over a small corpus and an answer engine over a small question/answer table, both with
MiniLM. `/search` must answer what `lmfuse search` answers, `/answer` what `lmfuse faq ask`
answers (a session's follow-up read with its previous turn), `/rerank` (text-embeddings-inference's
shape, called with plain HTTP as TEI users do) the cosines of `lmfuse embed`'s vectors, and
`huggingface_hub.InferenceClient.sentence_similarity` and `feature_extraction` the same numbers.
Bad requests get 4xx with a message naming the field.

Needs target/release/lmfuse and models/all-MiniLM-L6-v2; skipped without them unless
LMFUSE_REQUIRE_ASSETS=1.
"""

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from huggingface_hub import InferenceClient

from lmfuse_testing import CLI, ROOT, cli, require, serving

MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
CROSS = ROOT / "crates" / "lmfuse-encoder" / "tests" / "fixtures" / "cross-tiny"

CORPUS = [
    ("cats", "Cats", "Cats purr and chase mice around the house."),
    ("dogs", "Dogs", "Dogs bark at the postman and fetch sticks in the park."),
    ("tea", "Green tea", "Green tea is brewed with water below boiling point."),
    ("rust", "Rust", "Rust is a systems programming language with a borrow checker."),
    ("bread", "Bread", "Sourdough bread rises slowly with wild yeast and flour."),
    ("bikes", "Bicycles", "A bicycle chain needs oil every few hundred kilometres."),
]

QUERIES = ["why do dogs bark", "how to brew tea", "programming language safety", "baking"]

TABLE = """id,question,answer,category,para
permit,How do I apply for a building permit?,Send the drawings to the municipal building committee.,permits,Where do I send my permit application?
permit-time,How long does a building permit take?,Ten weeks by law and up to twenty for complex cases.,permits,When will my permit be decided?
roof,When should a roof be replaced?,Tiles last forty years and felt roofs about twenty.,roofs,How old can my roof get?
roof-cost,What does a new roof cost?,About eight hundred crowns per square metre with tiles.,roofs,Price of roof renovation?
tax,Can I deduct renovation labour from tax?,The ROT deduction covers thirty percent of labour costs.,tax,Is renovation work tax deductible?
tax-limit,How large is the ROT deduction at most?,At most fifty thousand crowns per person and year.,tax,Maximum ROT amount per year?
"""


def _lmfuse(env, *args):
    return cli(*args, env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder, lmfuse's environment, a built index and a built answer engine."""
    require(CLI, "the lmfuse binary (cargo build --release)")
    require(MODEL / "model.safetensors", "models/all-MiniLM-L6-v2 (bash scripts/fetch-models.sh)")
    tmp = tmp_path_factory.mktemp("serve_search")
    env = dict(os.environ, LMFUSE_CACHE_DIR=str(tmp / "cache"), LMFUSE_THREADS="2")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n"
                              for i, t, x in CORPUS))
    _lmfuse(env, "index", "build", "--corpus", str(corpus), "--out", str(tmp / "idx"),
            "--model", str(MODEL), "--json")
    table = tmp / "table.csv"
    table.write_text(TABLE)
    _lmfuse(env, "faq", "build", "--table", str(table), "--out", str(tmp / "faq"),
            "--category-col", "category", "--paraphrases-col", "para", "--model", str(MODEL), "--json")
    return tmp, env


@pytest.fixture(scope="module")
def index_server(work):
    with serving("--index", str(work[0] / "idx"), env=work[1]) as base:
        yield base


@pytest.fixture(scope="module")
def reranked_server(work):
    with serving("--index", str(work[0] / "idx"), "--reranker", str(CROSS), "--rerank-depth", "4",
                 env=work[1]) as base:
        yield base


@pytest.fixture(scope="module")
def faq_server(work):
    with serving("--faq", str(work[0] / "faq"), env=work[1]) as base:
        yield base


def _post(url, body):
    """(status, JSON) of a POST."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _embed(work, texts):
    path = work[0] / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    out = work[0] / "embedded.jsonl"
    _lmfuse(work[1], "embed", "--model", str(MODEL), "-i", str(path), "-o", str(out),
            "--no-cache")
    return np.array([json.loads(l)["embedding"] for l in out.read_text().splitlines()])


def _cosines(source, rows):
    return rows @ source / np.linalg.norm(rows, axis=1) / np.linalg.norm(source)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25", "weighted"])
def test_search_answers_what_lmfuse_search_answers(work, index_server, mode):
    status, served = _post(f"{index_server}/search", {"query": QUERIES, "mode": mode, "k": 3})
    assert status == 200, served
    args = ["search", "--index", str(work[0] / "idx"), "--mode", mode, "-k", "3"]
    for q in QUERIES:
        args += ["--query", q]
    offline = [json.loads(l)["hits"] for l in _lmfuse(work[1], *args).splitlines()]
    assert [[h["id"] for h in hits] for hits in served] == \
        [[h["id"] for h in hits] for hits in offline]
    for got, want in zip(served, offline):
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)
    status, one = _post(f"{index_server}/search", {"query": QUERIES[0], "k": 1,
                                                   "return_text": True})
    assert status == 200 and one[0]["id"] == "dogs" and one[0]["text"].startswith("Dogs bark")


def test_rerank_answers_tei_shape_with_the_cosines_of_lmfuse_embed(work, index_server):
    texts = [x for _, _, x in CORPUS]
    status, ranked = _post(f"{index_server}/rerank",
                           {"query": QUERIES[0], "texts": texts, "return_text": True})
    assert status == 200, ranked
    vectors = _embed(work, [QUERIES[0], *texts])
    want = _cosines(vectors[0], vectors[1:])
    assert [r["index"] for r in ranked] == list(np.argsort(-want, kind="stable"))
    for r in ranked:
        assert r["score"] == pytest.approx(want[r["index"]], abs=1e-4)
        assert r["text"] == texts[r["index"]]
    status, err = _post(f"{index_server}/rerank", {"query": "x", "texts": ["a"],
                                                   "raw_scores": True})
    assert status == 422 and "raw_scores" in err["error"]


def test_hugging_face_client_sentence_similarity_and_feature_extraction(work, index_server):
    client = InferenceClient(base_url=index_server)
    sentences = [x for _, _, x in CORPUS[:3]]
    got = client.sentence_similarity(QUERIES[0], other_sentences=sentences)
    vectors = _embed(work, [QUERIES[0], *sentences])
    assert got == pytest.approx(list(_cosines(vectors[0], vectors[1:])), abs=1e-4)
    status, tei = _post(f"{index_server}/similarity",
                        {"inputs": {"source_sentence": QUERIES[0], "sentences": sentences}})
    assert status == 200 and tei == pytest.approx(got, abs=1e-6)
    emb = np.asarray(client.feature_extraction(QUERIES[0])).reshape(-1)
    assert _cosines(emb, vectors[:1])[0] >= 0.99999


def _same_reply(got, want):
    assert [a["id"] for a in got["answers"]] == [a["id"] for a in want["answers"]]
    assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    for key in ["hand_over", "context_used", "mode", "intent"]:
        if key == "intent":
            assert got[key]["category"] == want[key]["category"]
        else:
            assert got[key] == want[key], key


def test_answer_is_what_faq_ask_answers_and_sessions_carry_context(work, faq_server):
    conversation = ["How do I apply for a building permit?", "and how long does it take",
                    "what about the roof", "and the price"]
    args = ["faq", "ask", "--faq", str(work[0] / "faq"), "-k", "2", "--conversation"]
    for q in conversation:
        args += ["--question", q]
    offline = [json.loads(l) for l in _lmfuse(work[1], *args).splitlines()]
    # The same conversation as one session, and its first question on its own.
    for turn, (question, want) in enumerate(zip(conversation, offline)):
        status, reply = _post(f"{faq_server}/answer",
                              {"question": question, "session": "s1", "k": 2})
        assert status == 200, reply
        assert reply["session"] == "s1"
        _same_reply(reply, want)
    status, alone = _post(f"{faq_server}/answer", {"question": conversation[0], "k": 2})
    assert status == 200 and "session" not in alone
    _same_reply(alone, offline[0])
    assert any(r["context_used"] for r in offline), "the conversation reads a turn in context"
    for body, field in [({"question": "x", "mode": "hybrid"}, "mode"),
                        ({"question": ""}, "empty"),
                        ({"question": "x", "k": 0}, "`k`")]:
        status, err = _post(f"{faq_server}/answer", body)
        assert status == 422 and field in err["error"], err
    status, err = _post(f"{faq_server}/search", {"query": "x"})
    assert status == 422 and "--index" in err["error"]


def test_a_cross_encoder_reranks_search_and_answers_rerank_with_tei_scores(work, reranked_server):
    status, served = _post(f"{reranked_server}/search", {"query": QUERIES, "k": 2})
    assert status == 200, served
    args = ["search", "--index", str(work[0] / "idx"), "-k", "2", "--rerank", str(CROSS),
            "--rerank-depth", "4"]
    for q in QUERIES:
        args += ["--query", q]
    offline = [json.loads(l)["hits"] for l in _lmfuse(work[1], *args).splitlines()]
    assert served == offline
    # /rerank: the cross-encoder's sigmoid by default, its logits with raw_scores, as TEI.
    docs = {i: f"{t} {x}" for i, t, x in CORPUS}
    texts = [docs[h["id"]] for h in offline[0]]
    status, probs = _post(f"{reranked_server}/rerank", {"query": QUERIES[0], "texts": texts})
    status_raw, raw = _post(f"{reranked_server}/rerank",
                            {"query": QUERIES[0], "texts": texts, "raw_scores": True})
    assert status == status_raw == 200
    logits = {r["index"]: r["score"] for r in raw}
    assert [logits[i] for i in range(len(texts))] == \
        pytest.approx([h["score"] for h in offline[0]], abs=1e-4)
    for p in probs:
        assert p["score"] == pytest.approx(1 / (1 + np.exp(-logits[p["index"]])), abs=1e-6)
