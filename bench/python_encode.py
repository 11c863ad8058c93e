#!/usr/bin/env python3
"""Python `lmfuse.Encoder.encode` against sentence-transformers, side by side in one process.

Usage (bench/.venv has sentence-transformers; install the lmfuse wheel there with
`bench/.venv/bin/pip install --no-deps target/wheels/lmfuse-*.whl`):

  bench/.venv/bin/python bench/python_encode.py [--input ../shared/bench/sentences2000.txt]
      [--model models/all-MiniLM-L6-v2] [--threads 2] [--batch-size 32] [--passes 3]
      [--out bench/results/python_encode.md]

Both encoders load the same model folder and run in this Python process with `--threads`
threads (torch.set_num_threads; lmfuse's pool through LMFUSE_THREADS, set before import).
lmfuse runs without its cache, so every pass runs the model. After a warm-up of each, the
two alternate for `--passes` passes; each engine's best pass counts (the median is shown
too). The vectors are checked against each other (cosine). For reference, `lmfuse embed
--no-cache` (target/release/lmfuse, when built) runs the same input `--passes` times first.
Prints one JSON object and writes a markdown report with the CPU's model and SIMD flags and
the CPU time other processes used meanwhile.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
        "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=ROOT.parent / "shared" / "bench" / "sentences2000.txt")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' batch size")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "python_encode.md")
    return p.parse_args()


def cpu():
    """(model name, SIMD flags present) from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return model, [f for f in SIMD if f in flags]


def busy_seconds():
    """CPU seconds spent by the whole machine (every process) so far, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    t = os.times()
    return t.user + t.system


def cli_seconds(args):
    """`lmfuse embed --no-cache`'s own timing of the same input (its JSON summary), or None
    without the binary."""
    binary = ROOT / "target" / "release" / "lmfuse"
    if not binary.exists():
        return None
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(binary), "embed", "--input", str(args.input), "--output", f"{tmp}/x.npy",
             "--model", str(args.model), "--no-cache", "--threads", str(args.threads), "--json", "-q"],
            check=True, capture_output=True, text=True,
        ).stdout
    return json.loads(out)["seconds"]


def timed(fn, passes):
    seconds = []
    for _ in range(passes):
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
    return out, seconds


def main():
    args = parse_args()
    os.environ["LMFUSE_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    import lmfuse

    torch.set_num_threads(args.threads)
    sentences = [s for s in args.input.read_text(encoding="utf-8").splitlines() if s.strip()]
    ours = lmfuse.Encoder(args.model, cache=False)
    st = SentenceTransformer(str(args.model), device="cpu")
    st_encode = lambda texts: st.encode(  # noqa: E731
        texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True
    )
    ours.encode(sentences[:64])
    st_encode(sentences[:64])

    lm_seconds, st_seconds, cli = [], [], []
    for _ in range(args.passes):
        cli.append(cli_seconds(args))
    busy0, own0 = busy_seconds(), own_seconds()
    for _ in range(args.passes):
        lm_vecs, s = timed(lambda: ours.encode(sentences), 1)
        lm_seconds += s
        st_vecs, s = timed(lambda: st_encode(sentences), 1)
        st_seconds += s
    other_cpu = busy_seconds() - busy0 - (own_seconds() - own0)
    cosine = np.sum(lm_vecs * st_vecs, axis=1) / (
        np.linalg.norm(lm_vecs, axis=1) * np.linalg.norm(st_vecs, axis=1)
    )
    n = len(sentences)
    model, flags = cpu()
    result = {
        "sentences": n,
        "threads": args.threads,
        "lmfuse": {"version": lmfuse.__version__, "seconds": lm_seconds,
                   "sentences_per_s": n / min(lm_seconds)},
        "sentence_transformers": {"version": sentence_transformers.__version__,
                                  "torch": torch.__version__, "batch_size": args.batch_size,
                                  "seconds": st_seconds, "sentences_per_s": n / min(st_seconds)},
        "cli": None if None in cli else {"seconds": cli, "sentences_per_s": n / min(cli)},
        "ratio_best": min(st_seconds) / min(lm_seconds),
        "ratio_median": statistics.median(st_seconds) / statistics.median(lm_seconds),
        "min_cosine": float(cosine.min()),
        "other_cpu_seconds": round(max(other_cpu, 0.0), 2),
        "cpu": model,
        "cpu_flags": flags,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=1))
    write_report(args, result)


def write_report(args, r):
    lm, st = r["lmfuse"], r["sentence_transformers"]
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    cli = r["cli"]
    cli_row, cli_line = "", ""
    if cli is not None:
        cli_row = (
            f"| lmfuse CLI (`lmfuse embed --no-cache`, its own timing, run first) "
            f"| {cli['sentences_per_s']:.1f} | {', '.join(f'{s:.2f}' for s in cli['seconds'])} |\n"
        )
        cli_line = (
            f"Python ÷ CLI: {min(cli['seconds']) / min(lm['seconds']):.2f}×; CLI ÷ "
            f"sentence-transformers: {min(st['seconds']) / min(cli['seconds']):.2f}×.\n"
        )
    text = f"""# Python: `lmfuse.Encoder.encode` vs sentence-transformers, one process

{date.today().isoformat()}, {r['cpu']}, {r['cpus']} CPUs (flags: {' '.join(r['cpu_flags'])}), Python {r['python']}.
Input `{rel(args.input)}` ({r['sentences']} sentences), model `{rel(args.model)}`, {r['threads']} threads each,
lmfuse without its cache; best of {args.passes} alternating passes after a warm-up.
Command: `bench/.venv/bin/python bench/python_encode.py`.

| engine | sentences/s (best) | seconds per pass |
|---|---|---|
| lmfuse {lm['version']} (Python, `Encoder.encode`) | {lm['sentences_per_s']:.1f} | {', '.join(f'{s:.2f}' for s in lm['seconds'])} |
| sentence-transformers {st['version']} (torch {st['torch']}, batch {st['batch_size']}) | {st['sentences_per_s']:.1f} | {', '.join(f'{s:.2f}' for s in st['seconds'])} |
{cli_row}
**lmfuse ÷ sentence-transformers: {r['ratio_best']:.2f}× (best passes), {r['ratio_median']:.2f}× (medians).**
Same vectors: cosine ≥ {r['min_cosine']:.7f} over every sentence. CPU seconds used by other
processes during the timed passes: {r['other_cpu_seconds']} (near 0 = quiet machine).
{cli_line}"""
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
