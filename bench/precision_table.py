"""Writes a bench/results/precision-TAG.md table (to stdout) from the raw figures
bench/precision.sh leaves in OUT.

Usage: python3 bench/precision_table.py OUT INPUT THREADS
"""
import datetime
import json
import os
import sys

import numpy as np

out, inp, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])


def load(name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return json.load(f)


def lines(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


def lines_or_none(name):
    path = os.path.join(out, name)
    return load(name) if os.path.exists(path) and os.path.getsize(path) else None


def cpu():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                  if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo")
                  if l.startswith("flags")), [])
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_int8", "amx_bf16"]
    return model, [f for f in wanted if f in flags]


def ranks(v):
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def pair_sims(m, n=300):
    m = m[:n] / np.linalg.norm(m[:n], axis=1, keepdims=True)
    s = m @ m.T
    return s[np.triu_indices(len(m), 1)]


model, flags = cpu()
precisions = [p for p in ("f32", "bf16", "int8") if os.path.exists(os.path.join(out, f"{p}-1.json"))]
reduced = [p for p in precisions if p != "f32"]
runs = {p: [load(f"{p}-1.json"), load(f"{p}-2.json")] for p in precisions}
kernels = ", ".join(f"{p} `{runs[p][0].get('kernel', '?')}`" for p in reduced)
rows = [f"# {', '.join(reduced)} and f32: speed, accuracy and memory (`bash bench/precision.sh`)", "",
        f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, {threads} threads; "
        f"CPU flags: {', '.join(flags) or 'none of note'}. lmfuse's kernels here: {kernels}. "
        f"Input `{inp}` ({runs['f32'][0]['sentences']} sentences, {runs['f32'][0]['tokens']} tokens).", "",
        "## Speed (all-MiniLM-L6-v2)", "",
        "| engine | sentences/s | |", "|---|---|---|"]
sps = {p: [r["sentences_per_s"] for r in runs[p]] for p in runs}
for p in precisions:
    rows.append(f"| lmfuse {p} (pass 1, pass 2) | {sps[p][0]:.1f}, {sps[p][1]:.1f} | |")
best = {}
for bs in (16, 32, 64):
    path = os.path.join(out, f"peers-{bs}.json")
    if not os.path.exists(path) or not os.path.getsize(path):
        continue
    peers = json.load(open(path))
    for e in peers.get("engines", []):
        if "error" in e:
            rows.append(f"| {e['engine']} (batch {bs}) | failed: {e['error'][:60]} | |")
            continue
        rows.append(f"| {e['engine']} {e.get('version', '')} (batch {bs}) | {e['sentences_per_s']:.1f} | |")
        key = "int8" if "int8" in e["engine"] else "f32"
        best[key] = max(best.get(key, 0), e["sentences_per_s"])
    if "int8_vs_f32" in peers:
        best.setdefault("ort_cos", peers["int8_vs_f32"])
rows += ["", "Ratios (slower–faster lmfuse pass; ONNX Runtime at its best batch size):", ""]
lo = lambda p: min(sps[p])
hi = lambda p: max(sps[p])
for p in reduced:
    rows.append(f"- lmfuse {p} ÷ lmfuse f32: **{lo(p) / hi('f32'):.2f}–{hi(p) / lo('f32'):.2f}×**")
if "f32" in best:
    rows.append(f"- lmfuse f32 ÷ ONNX Runtime f32: **{lo('f32') / best['f32']:.2f}–{hi('f32') / best['f32']:.2f}×**")
if "int8" in best and "int8" in runs:
    rows.append(f"- lmfuse int8 ÷ ONNX Runtime int8 (quantize_dynamic): "
                f"**{lo('int8') / best['int8']:.2f}–{hi('int8') / best['int8']:.2f}×**")
    if "f32" in best:
        rows.append(f"- ONNX Runtime int8 ÷ its f32: {best['int8'] / best['f32']:.2f}×")

sweep = sorted({int(f.split("-")[1]) for f in os.listdir(out) if f.startswith("sweep-")})
if sweep:
    rows += ["", "## Length sweep: tokens/s on texts of exactly N tokens (about 32k tokens each)", "",
             "| N | " + " | ".join(f"lmfuse {p}" for p in precisions)
             + " | ONNX Runtime f32 | ONNX Runtime int8 | lmfuse f32 ÷ ORT f32 | lmfuse int8 ÷ ORT int8 |",
             "|---|" + "---|" * (len(precisions) + 4)]
    for n in sweep:
        ours = {p: lines_or_none(f"sweep-{n}-{p}.json") for p in precisions}
        peers = {}
        path = os.path.join(out, f"sweep-{n}-peers.json")
        if os.path.exists(path) and os.path.getsize(path):
            for e in json.load(open(path)).get("engines", []):
                if "error" not in e:
                    key = "int8" if "int8" in e["engine"] else "f32"
                    peers[key] = e["sentences_per_s"] * n
        cell = lambda v: f"{v:,.0f}" if v else "–"
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
        tps = {p: (r["tokens_per_s"] if r else None) for p, r in ours.items()}
        rows.append(f"| {n} | " + " | ".join(cell(tps[p]) for p in precisions)
                    + f" | {cell(peers.get('f32'))} | {cell(peers.get('int8'))} | "
                    f"{ratio(tps.get('f32'), peers.get('f32'))} | {ratio(tps.get('int8'), peers.get('int8'))} |")
    rows += ["", "ONNX Runtime's tokens/s are its sentences/s × N (every text is N tokens, so its "
             "batches carry no padding)."]

exact = np.load(os.path.join(out, "vectors-f32.npy"))
rows += ["", "## Accuracy of the vectors (against f32 of the same engine)", "",
         "| engine | mean cosine | min cosine | Spearman of 44,850 pair similarities |",
         "|---|---|---|---|"]
for p in reduced:
    b = np.load(os.path.join(out, f"vectors-{p}.npy"))
    cos = np.sum(exact * b, axis=1) / (np.linalg.norm(exact, axis=1) * np.linalg.norm(b, axis=1))
    rho = spearman(pair_sims(exact), pair_sims(b))
    rows.append(f"| lmfuse {p} | {cos.mean():.5f} | {cos.min():.5f} | {rho:.5f} |")
if "ort_cos" in best:
    c = best["ort_cos"]
    rows.append(f"| ONNX Runtime int8 (quantize_dynamic) | {c['mean_cosine']:.5f} | {c['min_cosine']:.5f} | |")
rows += ["", "Guard (issue 24): mean ≥ 0.995, min ≥ 0.99, Spearman within 0.005 of f32's. "
         "`cargo test -p lmfuse-encoder --test precision` checks the same on the 40 reference "
         "sentences of `../shared/fixtures/minilm_l6_reference.json`."]

cls = lines("classify.jsonl")
rows += ["", f"## Classification: one f32-trained emb:logreg bundle, evaluated in each precision", "",
         "| set | encoder | test n | f32 accuracy | "
         + " | ".join(f"{p} accuracy (Δ pp)" for p in reduced) + " |",
         "|---|---|---|---|" + "---|" * len(reduced)]
by = {}
for r in cls:
    by.setdefault((r["set"], r["model"]), {})[r["precision"]] = r
for (s, m), v in by.items():
    if "f32" not in v:
        continue
    f = v["f32"]["accuracy"]
    cells = [f"{100 * v[p]['accuracy']:.2f} ({100 * (v[p]['accuracy'] - f):+.2f})" if p in v else "–"
             for p in reduced]
    rows.append(f"| {s} | {m} | {v['f32']['n']} | {100 * f:.2f} | " + " | ".join(cells) + " |")
rows += ["", "Guard: within 0.3 pp of f32. Training sets above 10,000 texts are a seeded "
         "10,000-text sample (sst2, banking77 is 9k)."]

conv = load("convert.json")
rss = {r["precision"]: r for r in lines("rss.jsonl")}
rows += ["", "## Memory", "",
         f"- `lmfuse models convert`: all-MiniLM-L6-v2's `model.safetensors` "
         f"{conv['source_weights_bytes'] / 1e6:.1f} MB (f32) → {conv['weights_bytes'] / 1e6:.1f} MB "
         f"({100 * conv['ratio']:.0f}%): the linear layers in int8 (a quarter of their f32 bytes, "
         "plus one f32 scale per output channel), the word table in f16, the rest f32.",
         "", "| `lmfuse serve` (banking77 bundle) | RSS after load MB | after 640 texts MB | peak MB | anon MB |",
         "|---|---|---|---|---|"]
for p in precisions:
    if p in rss:
        r = rss[p]
        rows.append(f"| {p} | {r['loaded_kb'] / 1024:.0f} | {r['after_kb'] / 1024:.0f} | "
                    f"{r['peak_kb'] / 1024:.0f} | {r['anon_kb'] / 1024:.0f} |")
print("\n".join(rows))
