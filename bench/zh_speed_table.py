#!/usr/bin/env python3
"""Markdown table of bench/zh_speed.sh's outputs: zh_speed_table.py OUT_DIR THREADS."""
import datetime
import json
import os
import sys
from pathlib import Path

out, threads = Path(sys.argv[1]), int(sys.argv[2])
SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
cpuinfo = open("/proc/cpuinfo").read()
cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags")), [])
lines = [
    f"# Multilingual model speed: multilingual-e5-small (12 layers), {threads} threads",
    "",
    f"{datetime.date.today()}, {cpu}, {os.cpu_count()} CPUs, SIMD: "
    f"{' '.join(f for f in SIMD if f in flags) or 'none of ' + ', '.join(SIMD)}. "
    "Command: `bash bench/zh_speed.sh`. The same converted folder "
    "(`lmfuse models import-e5s1`) for every engine; every engine cuts at 256 tokens; "
    "sentence-transformers and ONNX Runtime (export of the same weights) with batch 32 in "
    "their own processes; lmfuse ran before and after them (both passes shown). Goal: "
    "lmfuse ≥ 1.3× both.",
    "",
    "| input | engine | sentences/s | GFLOP/s (lmfuse's FLOP count ÷ time) | lmfuse ÷ engine (slower–faster lmfuse pass) |",
    "|---|---|---|---|---|",
]
for lang, name in (("zh", "Chinese reviews"), ("en", "English sentences")):
    l1 = json.load(open(out / f"{lang}-lmfuse-1.json"))
    l2 = json.load(open(out / f"{lang}-lmfuse-2.json"))
    label = f"{name} ({l1['sentences']}, mean {l1['mean_tokens']:.0f} tokens)"
    best = max(l1["sentences_per_s"], l2["sentences_per_s"])
    worst = min(l1["sentences_per_s"], l2["sentences_per_s"])
    flop_per_text = l1["gflop"] / l1["sentences"]
    lines.append(f"| {label} | lmfuse (passes 1, 2) | {l1['sentences_per_s']:.1f}, "
                 f"{l2['sentences_per_s']:.1f} | {l1['gflops_per_s']:.0f} "
                 f"({l1['ceiling_percent']:.0f}% of the {l1['gemm_ceiling_gflops']:.0f} its "
                 f"matrix kernel reaches) | |")
    peers = json.load(open(out / f"{lang}-peers.json"))
    for e in peers.get("engines", []):
        if "error" in e:
            lines.append(f"| {label} | {e['engine']} | failed: {e['error'][:80]} | | |")
            continue
        lines.append(f"| {label} | {e['engine']} {e.get('version', '')} | "
                     f"{e['sentences_per_s']:.1f} | {flop_per_text * e['sentences_per_s']:.0f} | "
                     f"**{worst / e['sentences_per_s']:.2f}–"
                     f"{best / e['sentences_per_s']:.2f}×** |")
    other = peers.get("host", {}).get("other_cpu_seconds")
    if other is not None:
        lines.append(f"| {label} | (CPU s used by other processes during the peers) | {other:.1f} | | |")
    sanity = peers.get("sanity", {}).get("max_cosine_distance_st_vs_ort")
    if sanity is not None:
        lines.append(f"| {label} | (ST vs ORT vectors: max cosine distance) | {sanity:.1e} | | |")
print("\n".join(lines))
