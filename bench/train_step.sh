#!/usr/bin/env bash
# One fine-tuning step, lmfuse vs PyTorch, side by side in one run: all-MiniLM-L6-v2,
# batch 16 × 64 tokens, 2 threads, median of 10 steps. Writes bench/results/train_step.md.
# Needs bench/.venv (bash bench/setup_python_venv.sh) for the PyTorch side.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
BIN=${LMFUSE_BIN:-target/release/lmfuse}
STEPS=${STEPS:-10}
[ -x "$BIN" ] || cargo build --release -p lmfuse-cli
ours=$("$BIN" --threads 2 bench train-step --model "$MODEL" --batch 16 --tokens 64 --steps "$STEPS" --json)
torch=$(OMP_NUM_THREADS=2 bench/.venv/bin/python bench/train_step_torch.py --model "$MODEL" --batch 16 --tokens 64 --steps "$STEPS" --threads 2)
echo "$ours"
echo "$torch"
mkdir -p bench/results
python3 - "$ours" "$torch" <<'PY' > bench/results/train_step.md
import json, sys, datetime
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("# One fine-tuning step, lmfuse vs PyTorch\n")
print(f"`bash bench/train_step.sh` ({datetime.date.today()}): {a['model']}, batch {a['batch']} × {a['tokens']} tokens, "
      f"{a['threads']} threads, dropout 0.1, mean pooling + linear head, cross-entropy, AdamW; median of {a['steps']} steps "
      "after 2 warm-up steps, both measured in the same run.\n")
print("| engine | step s | forward s | backward s | AdamW s |")
print("|---|---|---|---|---|")
for r in (a, b):
    print(f"| {r['engine']} | {r['step']:.3f} | {r['forward']:.3f} | {r['backward']:.3f} | {r['optimizer']:.3f} |")
print(f"\nlmfuse / PyTorch step time: **{a['step'] / b['step']:.2f}×** (below 1 is faster).")
PY
cat bench/results/train_step.md
