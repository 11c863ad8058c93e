#!/usr/bin/env python3
"""Embedding throughput of Python peers, for comparison with lmfuse.

Usage:
  python bench/python_peers.py --model DIR --input FILE --threads 2 --batch-size 32 \
      [--engines st,ort] [--repeat 3]

DIR is a sentence-transformers model folder (e.g. all-MiniLM-L6-v2), FILE has one
sentence per line. Engines:
  st   sentence_transformers.SentenceTransformer(DIR, device="cpu").encode(...)
  ort8 the same export quantised by onnxruntime.quantization.quantize_dynamic (int8)
  ort  onnxruntime on an ONNX export of the same BERT (exported once with
       torch.onnx.export and cached under --cache-dir), tokenised with `tokenizers`,
       mean pooling + L2 normalisation in numpy.
Each engine runs in its own subprocess (so torch's and onnxruntime's thread pools never
compete), is warmed up on a small slice, then encodes all lines --repeat times; the best
time is reported ("seconds"; every pass in "pass_seconds"). Exactly one JSON object goes
to stdout; progress goes to stderr. With both engines, "sanity" gives the cosine distance
between their embeddings. "host.other_cpu_seconds" is CPU time used by other processes
during the run: if it is not near 0, the numbers are skewed.
An engine that fails (e.g. cannot be imported) is reported as {"engine", "error"}.
The exit status is 0 when at least one engine succeeded.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENGINE_NAMES = {"st": "sentence-transformers", "ort": "onnxruntime",
                "ort8": "onnxruntime int8 (quantize_dynamic)"}
MAX_SEQ_LENGTH = 256
WARMUP_SENTENCES = 64


def log(msg):
    print(f"[python_peers] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="sentence-transformers model folder")
    p.add_argument("--input", required=True, type=Path, help="text file, one sentence per line")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--engines", default="st,ort", help="comma-separated subset of: st,ort,ort8")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per engine; the best is reported")
    p.add_argument("--max-seq-length", type=int, default=MAX_SEQ_LENGTH,
                   help="tokens per text, special tokens included; longer texts are truncated")
    p.add_argument("--cache-dir", type=Path, default=Path(__file__).resolve().parent / "out" / "onnx",
                   help="where the ONNX export is cached (default: bench/out/onnx)")
    p.add_argument("--worker", choices=["st", "ort", "ort8", "export"], help=argparse.SUPPRESS)
    p.add_argument("--emb-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def thread_env(threads):
    """Environment for a worker: thread counts pinned, Hugging Face hub offline."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "true")
    return env


def read_sentences(path):
    lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [s for s in lines if s.strip()]
    if not lines:
        raise SystemExit(f"error: no sentences in {path}")
    return lines


def onnx_path(model_dir, cache_dir):
    """Cache key: the model folder's path and its weights' size and mtime."""
    weights = model_dir / "model.safetensors"
    st = weights.stat()
    key = f"{model_dir.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir / f"{model_dir.resolve().name}-{digest}" / "model.onnx"


def timed(encode, sentences, batch_size, repeat):
    encode(sentences[:WARMUP_SENTENCES], batch_size)  # warm-up
    passes, emb = [], None
    for i in range(repeat):
        t0 = time.perf_counter()
        emb = encode(sentences, batch_size)
        passes.append(time.perf_counter() - t0)
        log(f"  pass {i + 1}/{repeat}: {passes[-1]:.3f} s ({len(sentences) / passes[-1]:.1f} sentences/s)")
    return passes, emb


# ---------------------------------------------------------------- workers (subprocesses)

def worker_st(args, sentences):
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = SentenceTransformer(str(args.model), device="cpu")
    model.max_seq_length = args.max_seq_length

    def encode(batch, bs):
        return model.encode(batch, batch_size=bs, show_progress_bar=False,
                            convert_to_numpy=True, normalize_embeddings=True)

    passes, emb = timed(encode, sentences, args.batch_size, args.repeat)
    info = {"version": sentence_transformers.__version__, "torch_version": torch.__version__}
    return info, passes, emb


def worker_export(args):
    """Export the BERT of DIR to ONNX (output: last_hidden_state), with dynamic batch/sequence."""
    import torch
    from transformers import AutoModel

    out = onnx_path(args.model, args.cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    bert = AutoModel.from_pretrained(str(args.model), attn_implementation="eager").eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in range(3))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(LastHidden(bert), dummy, str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    tmp.replace(out)
    log(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB, torch {torch.__version__})")
    return {"onnx": str(out)}


def int8_model(model_file):
    """ONNX Runtime's dynamic int8 quantisation of the export (weights int8, activations
    quantised at run time), made once beside it with quantize_dynamic's defaults."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = model_file.with_name("model.int8.onnx")
    if not out.exists():
        tmp = out.with_suffix(".tmp.onnx")
        quantize_dynamic(str(model_file), str(tmp), weight_type=QuantType.QInt8)
        tmp.rename(out)
        log(f"quantised {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def worker_ort(args, sentences, int8=False):
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model_file = onnx_path(args.model, args.cache_dir)
    if not model_file.exists():
        raise RuntimeError(f"ONNX export missing: {model_file}")
    if int8:
        model_file = int8_model(model_file)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tok.enable_truncation(max_length=args.max_seq_length)
    pad = next((t for t in ("[PAD]", "<pad>") if tok.token_to_id(t) is not None), "[PAD]")
    pad_id = tok.token_to_id(pad) or 0
    tok.enable_padding(pad_id=pad_id, pad_token=pad)  # no length: pad to longest in batch

    def encode(batch, bs):
        # Same order as sentence-transformers: longest (in characters) first.
        order = np.argsort([-len(s) for s in batch], kind="stable")
        chunks = []
        for start in range(0, len(batch), bs):
            encs = tok.encode_batch([batch[i] for i in order[start:start + bs]])
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            types = np.array([e.type_ids for e in encs], dtype=np.int64)
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                        "token_type_ids": types})[0]
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            chunks.append(pooled)
        out = np.empty((len(batch), chunks[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(chunks)
        return out

    passes, emb = timed(encode, sentences, args.batch_size, args.repeat)
    return {"version": ort.__version__, "onnx": str(model_file)}, passes, emb


def run_worker(args):
    """Body of a subprocess: prints one JSON object (result or error) on stdout."""
    try:
        if args.worker == "export":
            result = worker_export(args)
        else:
            import numpy as np
            sentences = read_sentences(args.input)
            if args.worker == "st":
                info, passes, emb = worker_st(args, sentences)
            else:
                info, passes, emb = worker_ort(args, sentences, int8=args.worker == "ort8")
            seconds = min(passes)
            np.save(args.emb_out, emb.astype(np.float32))
            result = {"engine": ENGINE_NAMES[args.worker], **info, "threads": args.threads,
                      "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                      "sentences": len(sentences), "repeat": args.repeat,
                      "seconds": round(seconds, 4),
                      "sentences_per_s": round(len(sentences) / seconds, 2),
                      "pass_seconds": [round(p, 4) for p in passes]}
    except Exception as e:  # reported, not fatal
        result = {"engine": ENGINE_NAMES.get(args.worker, args.worker), "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver

def cpu_busy_seconds():
    """CPU seconds the whole machine has spent busy (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def own_cpu_seconds():
    """CPU seconds of this process and its finished workers."""
    return sum(os.times()[:4])


def host_info(busy0, own0, t0):
    """Other work on the machine skews the numbers (torch's OpenMP pool suffers most):
    report how many CPU seconds processes other than ours used during the run."""
    info = {"cpus": os.cpu_count(), "wall_seconds": round(time.time() - t0, 1)}
    busy1 = cpu_busy_seconds()
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - (own_cpu_seconds() - own0)
        info["other_cpu_seconds"] = round(max(0.0, others), 1)
    return info


def spawn(args, worker, emb_out=None):
    """Run this script as a worker subprocess; returns its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker,
           "--model", str(args.model), "--input", str(args.input),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--repeat", str(args.repeat), "--cache-dir", str(args.cache_dir),
           "--max-seq-length", str(args.max_seq_length)]
    if emb_out:
        cmd += ["--emb-out", str(emb_out)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=thread_env(args.threads))
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"engine": ENGINE_NAMES.get(worker, worker),
                "error": f"worker exited with status {proc.returncode} without a result (see stderr)"}


def main():
    args = parse_args()
    if args.worker:
        return run_worker(args)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINE_NAMES]
    if unknown or not engines:
        raise SystemExit(f"error: unknown engine(s) {unknown}; choose from {','.join(ENGINE_NAMES)}")
    for f in ("config.json", "tokenizer.json", "model.safetensors", "modules.json"):
        if not (args.model / f).is_file():
            raise SystemExit(f"error: {args.model} is not a sentence-transformers model folder (no {f})")
    if not args.input.is_file():
        raise SystemExit(f"error: input file {args.input} not found")
    if args.threads < 1 or args.batch_size < 1 or args.repeat < 1:
        raise SystemExit("error: --threads, --batch-size and --repeat must be >= 1")

    import tempfile
    busy0, own0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.time()
    results, embs = [], {}
    with tempfile.TemporaryDirectory(prefix="python_peers-") as tmp:
        for engine in engines:
            if engine in ("ort", "ort8") and not onnx_path(args.model, args.cache_dir).exists():
                log(f"exporting ONNX model to {onnx_path(args.model, args.cache_dir).parent}")
                exported = spawn(args, "export")
                if "error" in exported:
                    results.append({"engine": ENGINE_NAMES["ort"], "error": f"ONNX export failed: {exported['error']}"})
                    continue
            log(f"engine {ENGINE_NAMES[engine]}: threads={args.threads} batch_size={args.batch_size}")
            emb_file = Path(tmp) / f"{engine}.npy"
            res = spawn(args, engine, emb_file)
            if "error" in res:
                log(f"  failed: {res['error']}")
            else:
                log(f"  best {res['seconds']} s = {res['sentences_per_s']} sentences/s")
                embs[engine] = emb_file
            results.append(res)

        out = {"engines": results, "host": host_info(busy0, own0, t0)}
        if "ort8" in embs and "ort" in embs:
            import numpy as np
            a, b = (np.load(embs[e]) for e in ("ort", "ort8"))
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            out["int8_vs_f32"] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
        if "st" in embs and "ort" in embs:
            import numpy as np
            a, b = (np.load(embs[e]) for e in ("st", "ort"))
            cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            cos_dist = np.clip(1.0 - cos, 0.0, None)  # float rounding can give -1e-8
            out["sanity"] = {"max_cosine_distance_st_vs_ort": float(cos_dist.max()),
                             "mean_cosine_distance_st_vs_ort": float(cos_dist.mean()),
                             "agree": bool(cos_dist.max() < 1e-4)}
    print(json.dumps(out, indent=2))
    return 0 if embs else 1


if __name__ == "__main__":
    sys.exit(main())
