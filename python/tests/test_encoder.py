"""lmfuse.Encoder: vectors equal to `lmfuse embed`, the cache shared with the CLI, the GIL
released while encoding, and bad input."""

import threading

import numpy as np
import pytest

import lmfuse
from lmfuse_testing import ROOT, cli, require, reviews


@pytest.fixture(scope="module")
def texts():
    require(ROOT / "models" / lmfuse.DEFAULT_MODEL, "the default model (scripts/fetch-models.sh)")
    return reviews()[0]


def embed_cli(texts, tmp_path, *flags):
    src, out = tmp_path / "texts.txt", tmp_path / "x.npy"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    cli("embed", "--input", str(src), "--output", str(out), "-q", *flags)
    return np.load(out)


def test_encode_equals_lmfuse_embed_bit_for_bit(texts, tmp_path):
    # Neither side reads a cache: both run the model.
    ours = lmfuse.Encoder(cache=False).encode(texts)
    theirs = embed_cli(texts, tmp_path, "--no-cache")
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    assert theirs.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_default_model_by_name_none_and_folder_agree(texts):
    few = texts[:5]
    by_name = lmfuse.Encoder("all-MiniLM-L6-v2", cache=False)
    by_folder = lmfuse.Encoder(ROOT / "models" / "all-MiniLM-L6-v2", cache=False)
    assert by_name.model == "all-MiniLM-L6-v2" and by_name.dim == 384
    assert np.array_equal(by_name.encode(few), by_folder.encode(few))
    assert np.array_equal(by_name.encode(few), lmfuse.Encoder(None, cache=False).encode(few))


def test_the_cache_is_the_clis(texts, tmp_path):
    cache = tmp_path / "cache"
    few = texts[:20]
    first = lmfuse.Encoder(cache=cache).encode(few)
    assert (cache / "embeddings.sqlite3").is_file()
    # The CLI reads what Python wrote (its summary counts the hits) and returns the same rows.
    src = tmp_path / "few.txt"
    src.write_text("\n".join(few) + "\n", encoding="utf-8")
    out = tmp_path / "few.npy"
    summary = cli("embed", "--input", str(src), "--output", str(out), "--cache-dir", str(cache), "--json")
    assert '"encoded":0' in summary.replace(" ", "")
    assert np.array_equal(np.load(out), first)
    assert np.array_equal(lmfuse.Encoder(cache=cache).encode(few), first)


def test_order_duplicates_normalize_and_batch_size(texts):
    enc = lmfuse.Encoder(cache=False)
    few = texts[:8]
    base = enc.encode(few)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    again = enc.encode([few[3], few[0], few[3]])
    assert np.array_equal(again, base[[3, 0, 3]])
    raw = enc.encode(few, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.allclose(unit, base, atol=1e-6)
    # Packing texts by tokens leaves no padding: batches of any size give the same vectors.
    assert np.array_equal(enc.encode(few, batch_size=1), base)
    assert np.array_equal(enc.encode(few, batch_size=3), base)
    assert enc.encode([]).shape == (0, 384)


def test_the_gil_is_released_while_encoding(texts):
    enc = lmfuse.Encoder(cache=False)
    ticks = []
    running = threading.Event()
    done = threading.Event()

    def count():
        running.set()
        while not done.is_set():
            ticks.append(1)

    worker = threading.Thread(target=count)
    worker.start()
    running.wait()
    before = len(ticks)
    enc.encode(texts)  # a second or more of model time with the GIL released
    during = len(ticks) - before
    done.set()
    worker.join()
    # With the GIL held for the whole call the counter would advance only at the
    # interpreter's switch interval (a handful of times); released, it runs freely.
    assert during > 10_000, during


def test_bad_input_raises_value_error(texts):
    enc = lmfuse.Encoder(cache=False)
    with pytest.raises(ValueError, match="single string"):
        enc.encode("one text")
    with pytest.raises(ValueError, match=r"texts\[1\] is None"):
        enc.encode(["fine", None])
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["fine"], batch_size=0)
    with pytest.raises(ValueError, match=r"texts\[1\] holds an unpaired surrogate .* character 3"):
        enc.encode(["fine", "caf\ud800e"])


def test_text_in_any_script_gives_a_finite_vector(texts):
    enc = lmfuse.Encoder(cache=False)
    texts = ["مرحبا", "नमस्ते", "😀🎉", "\u200b\ufeff", "nul\x00bell\x07", "", "𠀀"]
    out = enc.encode(texts)
    assert out.shape[0] == len(texts)
    assert np.isfinite(out).all()


def test_missing_model_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lmfuse.Encoder(tmp_path / "no-such-model")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_int8_and_bf16_equal_lmfuse_embed_and_stay_close_to_f32(texts, tmp_path, precision):
    few = texts[:40]
    reduced = lmfuse.Encoder(cache=False, precision=precision).encode(few)
    cli = embed_cli(few, tmp_path, "--no-cache", "--precision", precision)
    assert np.array_equal(reduced, cli)
    exact = lmfuse.Encoder(cache=False).encode(few)
    cosines = np.sum(reduced * exact, axis=1)  # both L2-normalised
    assert cosines.mean() >= 0.995 and cosines.min() >= 0.99, cosines
    assert not np.array_equal(reduced, exact)
    with pytest.raises(ValueError, match="precision"):
        lmfuse.Encoder(cache=False, precision="int4")
