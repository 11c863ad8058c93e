#!/usr/bin/env bash
# int8 and bf16 against f32, side by side in one run (issue 24):
#   1. speed on ../shared/bench/sentences2000.txt at $THREADS threads: lmfuse f32, bf16 and
#      int8 (two interleaved passes each), ONNX Runtime f32 and its quantize_dynamic int8 model
#      of the same encoder at batch 16, 32 and 64 (its best is compared);
#   2. accuracy: int8 and bf16 vs f32 vectors of the 2,000 sentences (mean / min cosine, and
#      Spearman of the similarities of all pairs of the first 300), and ONNX Runtime's int8;
#   3. classification: an emb:logreg bundle trained in f32 (up to 10,000 training texts, seeded
#      shuffle), evaluated on the test split in f32, bf16 and int8 (no retraining): sst2, trec,
#      banking77 with all-MiniLM-L6-v2, chnsenticorp_htl with multilingual-e5-small;
#   4. a length sweep: texts of exactly 8, 32, 128 and 512 tokens ($SWEEP), tokens/s of each
#      lmfuse precision and of ONNX Runtime f32 and int8 (batch 32);
#   5. memory: model file sizes (f32 folder, `lmfuse models convert` folder) and `lmfuse
#      serve` RSS for the banking77 bundle in each precision.
#
#   bash bench/precision.sh                        # builds lmfuse first
#   LMFUSE_BIN=/tmp/lmfuse bash bench/precision.sh
#   SKIP_PYTHON=1 bash bench/precision.sh          # without the ONNX Runtime peers
# Results: bench/results/precision-TAG.md, TAG the widest kernels the CPU has
# (avx512-vnni-bf16, avx512-vnni, avx-vnni or avx2), so each kind of CPU keeps its table (raw
# figures under bench/out/precision/).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/precision.sh
threads="${THREADS:-2}"
input="${LMFUSE_SHARED_DIR:-../shared}/bench/sentences2000.txt"
out=bench/out/precision
flags="$(grep -m1 '^flags' /proc/cpuinfo)"
has() { [[ " $flags " == *" $1 "* ]]; }
if has avx512_vnni && has avx512_bf16; then tag=avx512-vnni-bf16
elif has avx512_vnni; then tag=avx512-vnni
elif has avx_vnni; then tag=avx-vnni
else tag=avx2; fi
mkdir -p "$out" bench/results
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
export LMFUSE_CACHE_DIR="$out/cache"

precisions=(f32 bf16 int8)
echo "bench/precision: speed" >&2
bench() { "$lm" --threads "$threads" -q bench embed --input "$input" --repeat 3 --json "$@"; }
for p in "${precisions[@]}"; do bench --precision "$p" > "$out/$p-1.json"; done
rm -f "$out/peers-"*.json
if [ "${SKIP_PYTHON:-0}" != 1 ] && bash bench/setup_python_venv.sh >&2; then
  for bs in 16 32 64; do
    bench/.venv/bin/python bench/python_peers.py --model models/all-MiniLM-L6-v2 \
      --input "$input" --threads "$threads" --batch-size "$bs" --repeat 3 --engines ort,ort8 \
      > "$out/peers-$bs.json" || echo "bench/precision: ONNX Runtime at batch $bs failed" >&2
  done
fi
for p in "${precisions[@]}"; do bench --precision "$p" --no-cache-bench > "$out/$p-2.json"; done

echo "bench/precision: length sweep" >&2
# Texts of exactly N tokens (N words each, cut at N tokens by both engines), about 32k tokens
# per length.
for n in ${SWEEP:-8 32 128 512}; do
  python3 - "$input" "$work/sweep-$n.txt" "$n" <<'PY'
import sys
words = open(sys.argv[1], encoding="utf-8").read().split()
n = int(sys.argv[3])
count = max(16, 32768 // n)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for i in range(count):
        start = (i * n) % max(1, len(words) - n)
        f.write(" ".join(words[start:start + n]) + "\n")
PY
  for p in "${precisions[@]}"; do
    "$lm" --threads "$threads" -q bench embed --input "$work/sweep-$n.txt" --repeat 2 --json \
      --no-cache-bench --max-length "$n" --precision "$p" > "$out/sweep-$n-$p.json"
  done
  if [ -x bench/.venv/bin/python ] && [ "${SKIP_PYTHON:-0}" != 1 ]; then
    bench/.venv/bin/python bench/python_peers.py --model models/all-MiniLM-L6-v2 \
      --input "$work/sweep-$n.txt" --threads "$threads" --batch-size 32 --repeat 2 \
      --max-seq-length "$n" --engines ort,ort8 > "$out/sweep-$n-peers.json" \
      || echo "bench/precision: ONNX Runtime at length $n failed" >&2
  fi
done

echo "bench/precision: vectors" >&2
for p in "${precisions[@]}"; do
  "$lm" --threads "$threads" -q embed --input "$input" --output "$out/vectors-$p.npy" \
    --precision "$p" --no-cache
done

echo "bench/precision: classification" >&2
: > "$out/classify.jsonl"
for spec in sst2:all-MiniLM-L6-v2 trec:all-MiniLM-L6-v2 banking77:all-MiniLM-L6-v2 \
            chnsenticorp_htl:multilingual-e5-small; do
  set_name="${spec%%:*}"; model="${spec#*:}"
  mkdir -p "$work/$set_name"
  python3 bench/prepare_sets.py "$data/$set_name" "$work/$set_name" > /dev/null
  python3 - "$work/$set_name/train.jsonl" <<'PY'
import random, sys
path = sys.argv[1]
rows = open(path, encoding="utf-8").read().splitlines()
if len(rows) > 10000:
    random.Random(13).shuffle(rows)
    open(path, "w", encoding="utf-8").write("\n".join(rows[:10000]) + "\n")
PY
  bundle="$work/$set_name/bundle"
  "$lm" --threads "$threads" -q train --model "$model" --features emb --head logreg \
    --train "$work/$set_name/train.jsonl" --dev "$work/$set_name/dev.jsonl" --out "$bundle" --json \
    > "$out/train-$set_name.json"
  for p in "${precisions[@]}"; do
    "$lm" --threads "$threads" -q eval --model "$bundle" --data "$work/$set_name/test.jsonl" \
      --precision "$p" --json \
      | python3 -c "import json,sys; r=json.load(sys.stdin)['test']; print(json.dumps({'set': '$set_name', 'model': '$model', 'precision': '$p', 'n': r['n'], 'accuracy': r['accuracy']}))" \
      >> "$out/classify.jsonl"
  done
done

echo "bench/precision: memory" >&2
"$lm" -q models convert --model models/all-MiniLM-L6-v2 --out "$work/minilm-int8" --json > "$out/convert.json"
: > "$out/rss.jsonl"
for p in "${precisions[@]}"; do
  port=$((20000 + RANDOM % 20000))
  "$lm" -q serve --model "$work/banking77/bundle" --precision "$p" --port "$port" --threads "$threads" \
    > "$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -sf "localhost:$port/ready" > /dev/null && break; sleep 0.2; done
  loaded=$(grep -E '^VmRSS:' "/proc/$pid/status" | awk '{print $2}')
  python3 - "$work/banking77/test.jsonl" "$port" <<'PY'
import json, sys, urllib.request
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")][:640]
for i in range(0, len(texts), 32):
    req = urllib.request.Request(f"http://localhost:{sys.argv[2]}/predict",
                                 json.dumps({"inputs": texts[i:i + 32]}).encode(),
                                 {"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
  status() { grep -E "^$1:" "/proc/$pid/status" | awk '{print $2}'; }
  echo "{\"precision\": \"$p\", \"loaded_kb\": $loaded, \"after_kb\": $(status VmRSS), \"peak_kb\": $(status VmHWM), \"anon_kb\": $(status RssAnon)}" >> "$out/rss.jsonl"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

# The table reads the vectors with numpy: the peers' venv has it, else the project's.
py=bench/.venv/bin/python
[ -x "$py" ] || py=.venv/bin/python
run_to "bench/results/precision-$tag.md" "$py" bench/precision_table.py "$out" "$input" "$threads"
cat "bench/results/precision-$tag.md"
