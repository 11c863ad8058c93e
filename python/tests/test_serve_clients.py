"""The clients people use, unchanged, against a running `lmfuse serve`.

The official `openai` package (with its default arguments, which ask for base64 vectors) on
`/v1/embeddings` and `/v1/models`, and `huggingface_hub.InferenceClient` on the
text-embeddings-inference routes (`feature_extraction` on `/embed`, `text_classification` on
`/`). Vectors must equal `lmfuse embed` (cosine >= 0.99999), labels and scores `lmfuse predict`,
and a bad request must raise the client's own error class carrying the server's message.

Needs target/release/lmfuse (`cargo build --release -p lmfuse-cli`) and models/all-MiniLM-L6-v2
(`bash scripts/fetch-models.sh`); without them the tests are skipped, unless
LMFUSE_REQUIRE_ASSETS=1, where that is a failure.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from lmfuse_testing import CLI, serving

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = CLI
MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
TRAIN = ROOT / "examples" / "reviews.jsonl"

TEXTS = [
    "The battery died after two days. Avoid.",
    "Lovely hotel, friendly staff, would stay again!",
    "It was fine, I guess.",
]


def _require_assets():
    missing = []
    if not BIN.is_file():
        missing.append(f"{BIN} (cargo build --release -p lmfuse-cli)")
    if not (MODEL / "model.safetensors").is_file():
        missing.append(f"{MODEL} (bash scripts/fetch-models.sh)")
    if missing:
        msg = "missing " + " and ".join(missing)
        if os.environ.get("LMFUSE_REQUIRE_ASSETS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder and the environment every lmfuse command runs with."""
    _require_assets()
    tmp = tmp_path_factory.mktemp("serve_clients")
    env = dict(os.environ, LMFUSE_CACHE_DIR=str(tmp / "cache"), LMFUSE_THREADS="2")
    env.pop("LMFUSE_MODEL", None)
    return tmp, env


def _lmfuse(work, *args):
    tmp, env = work
    out = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"lmfuse {args}: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def bundle(work):
    """A MiniLM + logistic-regression bundle trained on examples/reviews.jsonl."""
    out = work[0] / "bundle"
    _lmfuse(work, "train", "--model", str(MODEL), "--train", str(TRAIN), "--out", str(out), "--json")
    return out


@pytest.fixture(scope="module")
def server(work, bundle):
    """`lmfuse serve --port 0` on the bundle, ready; its base URL."""
    with serving("--model", str(bundle), env=work[1]) as base:
        yield base


def _write(work, name, texts):
    path = work[0] / name
    path.write_text("\n".join(texts) + "\n")
    return path


def _offline_embeddings(work, texts):
    """`lmfuse embed` of `texts`: one row per text."""
    out = work[0] / "embedded.jsonl"
    _lmfuse(work, "embed", "--model", str(MODEL), "-i", str(_write(work, "e.txt", texts)),
            "-o", str(out), "--no-cache")
    return np.array([json.loads(l)["embedding"] for l in out.read_text().splitlines()],
                    dtype=np.float32)


def _offline_predictions(work, bundle, texts):
    """`lmfuse predict` of `texts`: `{"label", "probabilities"}` per text."""
    stdout = _lmfuse(work, "predict", "--model", str(bundle), "--input",
                     str(_write(work, "p.txt", texts)), "--no-cache")
    return [json.loads(l) for l in stdout.splitlines()]


def _assert_same_vectors(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape == (len(want), 384)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos


def _vocab_ids(words):
    vocab = (MODEL / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return [vocab.index(w) for w in words]


def _openai(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)


def test_openai_default_arguments_get_base64_vectors_equal_to_lmfuse_embed(work, server):
    raw = _openai(server).embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=TEXTS)
    sent = json.loads(raw.http_request.content)
    assert sent["encoding_format"] == "base64", "the client's default"
    body = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in body["data"]), "base64 came back"
    r = raw.parse()
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.usage.prompt_tokens > 10
    _assert_same_vectors([d.embedding for d in r.data], _offline_embeddings(work, TEXTS))
    one = _openai(server).embeddings.create(model="m", input=TEXTS[0])
    _assert_same_vectors([one.data[0].embedding], _offline_embeddings(work, TEXTS[:1]))


def test_openai_floats_and_token_ids(work, server):
    client = _openai(server)
    floats = client.embeddings.create(model="m", input=TEXTS, encoding_format="float")
    assert all(isinstance(x, float) for x in floats.data[0].embedding)
    _assert_same_vectors([d.embedding for d in floats.data], _offline_embeddings(work, TEXTS))
    # Ids of the served tokenizer embed exactly as the text they spell.
    ids = _vocab_ids(["the", "battery", "died"])
    want = _offline_embeddings(work, ["The battery died"])
    one = client.embeddings.create(model="m", input=ids, encoding_format="float")
    _assert_same_vectors([one.data[0].embedding], want)
    many = client.embeddings.create(model="m", input=[ids, ids[:2]])
    assert len(many.data) == 2
    _assert_same_vectors([many.data[0].embedding], want)


def test_openai_lists_the_served_model(server):
    client = _openai(server)
    models = client.models.list()
    served = client.embeddings.create(model="m", input="x").model
    assert [m.id for m in models.data] == [served]
    assert models.data[0].object == "model"


def test_openai_bad_requests_raise_bad_request_error_with_the_servers_message(server):
    client = _openai(server)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="m", input="x", dimensions=8)
    assert e.value.status_code == 400
    assert "`dimensions` 8 is not supported" in str(e.value)
    assert e.value.body["param"] == "dimensions"
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="m", input=[])
    assert "`input` is an empty list" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="m", input=[1, 999999])
    assert "999999" in e.value.body["message"]
    # The model's own dimension is fine.
    assert len(client.embeddings.create(model="m", input="x", dimensions=384).data[0].embedding) == 384


def test_hf_feature_extraction_equals_lmfuse_embed(work, server):
    client = InferenceClient(base_url=f"{server}/embed")
    one = client.feature_extraction(TEXTS[0])
    assert one.dtype == np.float32 and one.shape == (1, 384)
    many = client.feature_extraction(TEXTS)
    _assert_same_vectors(many, _offline_embeddings(work, TEXTS))
    _assert_same_vectors(one, many[:1])
    raw = client.feature_extraction(TEXTS[0], normalize=False, truncate=True)
    _assert_same_vectors(raw, many[:1])


def test_hf_text_classification_equals_lmfuse_predict(work, bundle, server):
    client = InferenceClient(base_url=server)
    for text, want in zip(TEXTS, _offline_predictions(work, bundle, TEXTS)):
        got = client.text_classification(text)
        assert isinstance(got, list) and len(got) == len(want["probabilities"]), got
        assert got[0].label == want["label"]
        scores = [p.score for p in got]
        assert scores == sorted(scores, reverse=True)
        for p in got:
            assert abs(p.score - want["probabilities"][p.label]) < 1e-6, (p, want)
        top = client.text_classification(text, top_k=1)
        assert [p.label for p in top] == [want["label"]]


def test_hf_bad_requests_raise_hf_errors_with_the_servers_message(server):
    with pytest.raises(HfHubHTTPError) as e:
        InferenceClient(base_url=server).text_classification("x", function_to_apply="sigmoid")
    assert e.value.response.status_code == 422
    assert '`parameters.function_to_apply` "sigmoid" is not available' in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        InferenceClient(base_url=f"{server}/embed").feature_extraction("x", dimensions=8)
    assert "`dimensions` 8 is not supported" in str(e.value)
