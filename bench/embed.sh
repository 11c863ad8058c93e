#!/usr/bin/env bash
# Embedding speed, side by side on the same sentences and thread count:
#   lmfuse (bench embed), then sentence-transformers on PyTorch and ONNX Runtime (Python,
#   each in its own process), then lmfuse again, so a machine that slows down part-way shows up.
# Writes bench/results/embed.md (committed) and the raw JSON under bench/out/.
#
#   bash bench/embed.sh [SENTENCES_FILE]       # default ../shared/bench/sentences2000.txt
#   THREADS=1 bash bench/embed.sh
#   SKIP_PYTHON=1 bash bench/embed.sh          # lmfuse only
set -euo pipefail
cd "$(dirname "$0")/.."
input="${1:-../shared/bench/sentences2000.txt}"
threads="${THREADS:-2}"
[ -f "$input" ] || { echo "bench/embed.sh: $input not found" >&2; exit 1; }
bash scripts/fetch-models.sh
cargo build --release --locked --quiet
mkdir -p bench/out bench/results
lmfuse=(./target/release/lmfuse --threads "$threads" bench embed --input "$input" --repeat 3 --json)

echo "bench: lmfuse (first pass)" >&2
"${lmfuse[@]}" > bench/out/lmfuse-1.json
peers=bench/out/peers.json
rm -f "$peers"
if [ "${SKIP_PYTHON:-0}" != 1 ]; then
  if bash bench/setup_python_venv.sh >&2; then
    echo "bench: Python peers" >&2
    bench/.venv/bin/python bench/python_peers.py --model models/all-MiniLM-L6-v2 \
      --input "$input" --threads "$threads" --batch-size 32 --repeat 3 > "$peers" \
      || echo "bench: the Python peers failed; see above" >&2
  else
    echo "bench: no Python venv could be made; lmfuse figures only" >&2
  fi
fi
echo "bench: lmfuse (second pass)" >&2
"${lmfuse[@]}" --no-cache-bench > bench/out/lmfuse-2.json

python3 - "$input" "$threads" <<'PY'
import json, os, platform, subprocess, sys, datetime
inp, threads = sys.argv[1], int(sys.argv[2])
l1 = json.load(open("bench/out/lmfuse-1.json"))
l2 = json.load(open("bench/out/lmfuse-2.json"))
peers = []
if os.path.exists("bench/out/peers.json") and os.path.getsize("bench/out/peers.json"):
    peers = json.load(open("bench/out/peers.json")).get("engines", [])
best = max(l1["sentences_per_s"], l2["sentences_per_s"])
worst = min(l1["sentences_per_s"], l2["sentences_per_s"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = [("lmfuse (pass 1)", l1["sentences_per_s"], l1["tokens_per_s"]),
        ("lmfuse (pass 2)", l2["sentences_per_s"], l2["tokens_per_s"])]
lines = [f"# Embedding speed: {l1['model']}, {l1['sentences']} sentences, {threads} threads", "",
         f"{datetime.date.today()}, {cpu}, {os.cpu_count()} CPUs; input `{inp}` "
         f"({l1['tokens']} tokens, mean {l1['mean_tokens']:.1f}). Command: `bash bench/embed.sh`.", "",
         "| engine | sentences/s | tokens/s | lmfuse ÷ engine (slower–faster lmfuse pass) |", "|---|---|---|---|"]
for name, sps, tps in rows:
    lines.append(f"| {name} | {sps:.1f} | {tps:.0f} | |")
for e in peers:
    if "error" in e:
        lines.append(f"| {e['engine']} | failed: {e['error'][:80]} | | |")
        continue
    name = f"{e['engine']} {e.get('version', '')} (batch {e.get('batch_size', '?')})"
    lines.append(f"| {name} | {e['sentences_per_s']:.1f} | | **{worst / e['sentences_per_s']:.2f}–{best / e['sentences_per_s']:.2f}×** |")
lines += ["", f"lmfuse: {l1['gflops_per_s']:.1f} GFLOP/s = {l1['peak_percent']:.0f}% of an assumed "
          f"{l1['peak_gflops']:.0f} GFLOP/s fp32 peak, {l1['ceiling_percent']:.0f}% of the "
          f"{l1['gemm_ceiling_gflops']:.0f} GFLOP/s its matrix-product kernel reaches here on large "
          f"products (pass 1); {l1['truncated']} texts truncated.", ""]
other = json.load(open("bench/out/peers.json")).get("host", {}).get("other_cpu_seconds") if peers else None
if other is not None:
    lines.append(f"CPU seconds used by other processes during the Python runs: {other:.1f} (near 0 = quiet machine).")
    lines.append("")
c = l1.get("cache")
if c:
    lines.append(f"Cache: cold run {c['cold_seconds']:.2f} s, warm run {c['warm_seconds']:.3f} s "
                 f"({c['warm_cache_hits']} hits): **{c['speedup']:.0f}× faster**.")
text = "\n".join(lines) + "\n"
open("bench/results/embed.md", "w").write(text)
print(text)
PY
