#!/usr/bin/env bash
# `lmfuse train` (embeddings + logistic regression, C chosen on dev) from a cold cache, against
# the Python pipeline it replaces (sentence-transformers encode + scikit-learn
# LogisticRegression, same grid), on sst2, 2 threads, back to back.
# Writes bench/results/train_speed.md.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${LMFUSE_SHARED_DIR:-../shared}/data/sst2"
[ -d "$data" ] || { echo "bench/train_speed.sh: $data not found" >&2; exit 1; }
bash scripts/fetch-models.sh >&2
cargo build --release --locked --quiet
bash bench/setup_python_venv.sh >&2
mkdir -p bench/out bench/results
cold="$(mktemp -d)"
trap 'rm -rf "$cold"' EXIT
start=$(date +%s.%N)
LMFUSE_CACHE_DIR="$cold" ./target/release/lmfuse --threads 2 -q train --train "$data/train.jsonl" \
  --dev "$data/dev.jsonl" --test "$data/test.jsonl" --out bench/out/train_speed.bundle --json \
  > bench/out/train_speed_lmfuse.json
end=$(date +%s.%N)
echo "{\"wall\": $(echo "$end - $start" | bc)}" > bench/out/train_speed_lmfuse_wall.json
start=$(date +%s.%N)
bench/.venv/bin/python bench/python_train.py --model models/all-MiniLM-L6-v2 --train "$data/train.jsonl" \
  --dev "$data/dev.jsonl" --test "$data/test.jsonl" --threads 2 > bench/out/train_speed_python.json
end=$(date +%s.%N)
echo "{\"wall\": $(echo "$end - $start" | bc)}" > bench/out/train_speed_python_wall.json
python3 - <<'PY'
import json, datetime
l = json.load(open("bench/out/train_speed_lmfuse.json"))
lw = json.load(open("bench/out/train_speed_lmfuse_wall.json"))["wall"]
p = json.load(open("bench/out/train_speed_python.json"))
pw = json.load(open("bench/out/train_speed_python_wall.json"))["wall"]
text = f"""# Training speed: sst2, cold cache, 2 threads ({datetime.date.today()})

`bash bench/train_speed.sh`: embeddings of train + dev + test (9,613 texts) with all-MiniLM-L6-v2,
logistic regression with C from the same 9-value grid chosen on dev, test evaluation. Wall time
of the whole process, model loading included, run back to back.

| pipeline | wall s | encode s | fit s | C | test accuracy % |
|---|---|---|---|---|---|
| lmfuse train | {lw:.1f} | {l['seconds']['features']:.1f} | {l['seconds']['fit']:.1f} | {l['c']:g} | {100 * l['test']['accuracy']:.2f} |
| sentence-transformers + scikit-learn | {pw:.1f} | {p['seconds']['encode']:.1f} | {p['seconds']['fit']:.1f} | {p['c']:g} | {100 * p['test_accuracy']:.2f} |

lmfuse ÷ Python wall time: **{lw / pw:.2f}×** (target ≤ 0.8×).
"""
open("bench/results/train_speed.md", "w").write(text)
print(text)
PY
