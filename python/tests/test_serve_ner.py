"""`huggingface_hub.InferenceClient.token_classification`, unchanged, against `lmfuse serve`
with a named-entity bundle: entities as `lmfuse ner predict` finds them, with `start` and `end`
as Python `str` indices (characters, also after Chinese text), and `word == text[start:end]`.

Needs target/release/lmfuse (`cargo build --release -p lmfuse-cli`); without it the tests are
skipped, unless LMFUSE_REQUIRE_ASSETS=1, where that is a failure. No encoder is needed (the
tagger reads hand-made features).
"""

import json
import os

import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from lmfuse_testing import CLI, cli, require, serving

ENGLISH = "Carol lives in Oslo."
# Four CJK characters (12 UTF-8 bytes) before the person.
CHINESE = "我们知道张三住在北京。"


def _people_and_places(n):
    """`n` English and `n` Chinese CoNLL sentences (Chinese one character per token)."""
    people, cities = ["Alice", "Bob", "Carol", "David", "Emma"], ["Paris", "Rome", "Oslo", "Madrid"]
    ren, cheng = ["张三", "李四", "王五", "赵六"], ["北京", "上海", "广州", "深圳"]
    before = ["", "我们知道", "他说", "听说"]

    def chars(text, tag):
        return [(c, "O" if tag == "O" else ("B-" if k == 0 else "I-") + tag)
                for k, c in enumerate(text)]

    sentences = []
    for i in range(n):
        verb = ["lives", "works", "stays"][i % 3]
        sentences.append([(people[i % 5], "B-PER"), (verb, "O"), ("in", "O"),
                          (cities[(i // 2) % 4], "B-LOC"), (".", "O")])
        sentences.append(chars(before[i % 4], "O") + chars(ren[(i // 3) % 4], "PER")
                         + chars(["住在", "去了"][i % 2], "O") + chars(cheng[(i // 2) % 4], "LOC")
                         + chars("。", "O"))
    return "\n".join("".join(f"{w}\t{t}\n" for w, t in s) for s in sentences)


def _lmfuse(env, *args):
    return cli(*args, env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder, the environment lmfuse runs with, and a trained NER bundle."""
    require(CLI, "the lmfuse binary (cargo build --release)")
    tmp = tmp_path_factory.mktemp("serve_ner")
    env = dict(os.environ, LMFUSE_CACHE_DIR=str(tmp / "cache"), LMFUSE_THREADS="2")
    env.pop("LMFUSE_MODEL", None)
    train = tmp / "train.conll"
    train.write_text(_people_and_places(80), encoding="utf-8")
    bundle = tmp / "ner"
    _lmfuse(env, "ner", "train", "--train", str(train), "--out", str(bundle), "--json")
    return tmp, env, bundle


@pytest.fixture(scope="module")
def server(work):
    """`lmfuse serve --port 0` on the NER bundle, ready; its base URL."""
    tmp, env, bundle = work
    with serving("--model", str(bundle), env=env) as base:
        yield base


def _offline(work, texts):
    """`lmfuse ner predict` of `texts`: each text's entities."""
    tmp, env, bundle = work
    path = tmp / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = _lmfuse(env, "ner", "predict", "--model", str(bundle), "-i", str(path))
    return [json.loads(l)["entities"] for l in out.splitlines()]


def test_hf_token_classification_finds_entities_at_python_string_indices(work, server):
    client = InferenceClient(base_url=server)
    want = {
        ENGLISH: [("PER", "Carol", 0, 5), ("LOC", "Oslo", 15, 19)],
        CHINESE: [("PER", "张三", 4, 6), ("LOC", "北京", 8, 10)],
    }
    for text, offline in zip(want, _offline(work, list(want))):
        got = client.token_classification(text)
        assert [(e.entity_group, e.word, e.start, e.end) for e in got] == want[text], got
        for e, o in zip(got, offline):
            assert text[e.start:e.end] == e.word
            assert e.entity is None
            assert abs(e.score - o["score"]) < 1e-6, (e, o)
            assert 0.5 < e.score <= 1.0
    # Hugging Face's parameters: the entity-level strategies and ignored labels.
    got = client.token_classification(CHINESE, aggregation_strategy="first", ignore_labels=["PER"])
    assert [(e.entity_group, e.word) for e in got] == [("LOC", "北京")]
    assert client.token_classification("nothing to see here") == []


def test_hf_token_classification_bad_requests_raise_hf_errors_with_the_servers_message(server):
    client = InferenceClient(base_url=server)
    with pytest.raises(HfHubHTTPError) as e:
        client.token_classification(ENGLISH, aggregation_strategy="none")
    assert e.value.response.status_code == 422
    assert '"none" is not available' in str(e.value)
    # A tagger gives no embeddings.
    with pytest.raises(HfHubHTTPError) as e:
        InferenceClient(base_url=f"{server}/embed").feature_extraction(ENGLISH)
    assert "named-entity tagger" in str(e.value)
