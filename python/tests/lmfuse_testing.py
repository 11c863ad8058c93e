"""Shared helpers of the lmfuse package's tests: where the repo, the CLI and the assets are."""

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The CLI under test: $LMFUSE_BIN (scripts/test.sh sets it to its own build), else the release build.
CLI = Path(os.environ.get("LMFUSE_BIN") or ROOT / "target" / "release" / "lmfuse")
REVIEWS = ROOT / "examples" / "reviews.jsonl"
SHARED = ROOT.parent / "shared"


def require(path: Path, what: str) -> Path:
    """``path``, or a skip naming it (a failure with LMFUSE_REQUIRE_ASSETS=1)."""
    if path.exists():
        return path
    message = f"{what} is absent ({path})"
    if os.environ.get("LMFUSE_REQUIRE_ASSETS") == "1":
        pytest.fail(f"LMFUSE_REQUIRE_ASSETS=1: {message}")
    pytest.skip(f"SKIPPED: {message}")


def cli(*args: str, stdin: str = None, env: dict = None) -> str:
    """Runs the lmfuse CLI (``CLI``) with ``args`` (in ``env``, default this process's
    environment); returns its standard output."""
    require(CLI, "the lmfuse binary (cargo build --release)")
    done = subprocess.run(
        [str(CLI), *args], input=stdin, capture_output=True, text=True, timeout=1800, env=env
    )
    assert done.returncode == 0, f"lmfuse {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def read_jsonl(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def reviews():
    """(texts, labels) of examples/reviews.jsonl, the 300 reviews that ship in the repo."""
    rows = read_jsonl(REVIEWS)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def http_status(url: str) -> int:
    """The status of a GET to ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@contextlib.contextmanager
def serving(*args: str, env: dict):
    """``lmfuse serve --port 0 ARGS`` until ready; yields its base URL, stops it after."""
    require(CLI, "the lmfuse binary (cargo build --release)")
    proc = subprocess.Popen(
        [str(CLI), "serve", "--port", "0", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    try:
        first = lines.get(timeout=60)
        assert "listening on " in first, first
        base = first.split("listening on ")[1].split()[0]
        deadline = time.monotonic() + 120
        while http_status(f"{base}/ready") != 200:
            assert proc.poll() is None, f"lmfuse serve exited: {list(lines.queue)}"
            assert time.monotonic() < deadline, "not ready after 120 s"
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)
