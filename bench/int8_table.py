"""Writes bench/results/int8.md from the raw figures bench/int8.sh leaves in OUT.

Usage: python3 bench/int8_table.py OUT INPUT THREADS
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
runs = {p: [load(f"{p}-1.json"), load(f"{p}-2.json")] for p in ("f32", "int8")}
rows = [f"# int8 and f32: speed, accuracy and memory (`bash bench/int8.sh`)", "",
        f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, {threads} threads; "
        f"CPU flags: {', '.join(flags) or 'none of note'}. lmfuse's int8 kernel here: "
        f"`{runs['int8'][0].get('kernel', 'see LMFUSE_INT8_KERNEL')}`. Input `{inp}` "
        f"({runs['f32'][0]['sentences']} sentences, {runs['f32'][0]['tokens']} tokens).", "",
        "## Speed (all-MiniLM-L6-v2)", "",
        "| engine | sentences/s | |", "|---|---|---|"]
sps = {p: [r["sentences_per_s"] for r in runs[p]] for p in runs}
for p in ("f32", "int8"):
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
rows.append(f"- lmfuse int8 ÷ lmfuse f32: **{lo('int8') / hi('f32'):.2f}–{hi('int8') / lo('f32'):.2f}×**")
if "f32" in best:
    rows.append(f"- lmfuse f32 ÷ ONNX Runtime f32: **{lo('f32') / best['f32']:.2f}–{hi('f32') / best['f32']:.2f}×**")
if "int8" in best:
    rows.append(f"- lmfuse int8 ÷ ONNX Runtime int8 (quantize_dynamic): "
                f"**{lo('int8') / best['int8']:.2f}–{hi('int8') / best['int8']:.2f}×**")
    if "f32" in best:
        rows.append(f"- ONNX Runtime int8 ÷ its f32: {best['int8'] / best['f32']:.2f}×")

a, b = (np.load(os.path.join(out, f"vectors-{p}.npy")) for p in ("f32", "int8"))
cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
rho = spearman(pair_sims(a), pair_sims(b))
rows += ["", "## Accuracy of the vectors (int8 against f32 of the same engine)", "",
         "| engine | mean cosine | min cosine | Spearman of 44,850 pair similarities |",
         "|---|---|---|---|",
         f"| lmfuse | {cos.mean():.5f} | {cos.min():.5f} | {rho:.5f} |"]
if "ort_cos" in best:
    c = best["ort_cos"]
    rows.append(f"| ONNX Runtime quantize_dynamic | {c['mean_cosine']:.5f} | {c['min_cosine']:.5f} | |")
rows += ["", "Guard (issue 24): mean ≥ 0.995, min ≥ 0.99, Spearman within 0.005 of f32's. "
         "`cargo test -p lmfuse-encoder --test int8` checks the same on the 40 reference "
         "sentences of `../shared/fixtures/minilm_l6_reference.json`."]

cls = lines("classify.jsonl")
rows += ["", "## Classification: one f32-trained emb:logreg bundle, evaluated in f32 and int8", "",
         "| set | encoder | test n | f32 accuracy | int8 accuracy | Δ pp |", "|---|---|---|---|---|---|"]
by = {}
for r in cls:
    by.setdefault((r["set"], r["model"]), {})[r["precision"]] = r
for (s, m), v in by.items():
    if "f32" in v and "int8" in v:
        d = 100 * (v["int8"]["accuracy"] - v["f32"]["accuracy"])
        rows.append(f"| {s} | {m} | {v['f32']['n']} | {100 * v['f32']['accuracy']:.2f} | "
                    f"{100 * v['int8']['accuracy']:.2f} | {d:+.2f} |")
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
for p in ("f32", "int8"):
    if p in rss:
        r = rss[p]
        rows.append(f"| {p} | {r['loaded_kb'] / 1024:.0f} | {r['after_kb'] / 1024:.0f} | "
                    f"{r['peak_kb'] / 1024:.0f} | {r['anon_kb'] / 1024:.0f} |")
print("\n".join(rows))
