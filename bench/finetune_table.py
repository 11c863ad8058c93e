"""Turns `lmfuse finetune --json` reports into bench/results/finetune.md.
Usage: finetune_table.py NAME=REPORT.json ... (NAME: set/method, e.g. sst2/full)."""
import json
import sys
import time

FROZEN = {"sst2": 81.33, "cr": 81.75}  # bench/results/heads.md: frozen embeddings + logreg, same splits
rows = []
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    r = json.load(open(path))
    s, method = name.split("/")
    best = max((e for e in r["trials"] if e["best"]), key=lambda e: e["step"])
    rows.append((s, method, r, best))
print("# Fine-tuning all-MiniLM-L6-v2\n")
print(f"`bash bench/finetune.sh` ({time.strftime('%Y-%m-%d')}, 2 cores): `lmfuse finetune` on the shared splits "
      "(train for training, dev for early stopping and the best weights, test reported once). "
      "Common options: `--epochs 3 --lr 3e-5 --eval-every 145 --patience 4` (batch 16, AdamW with weight decay 0.01, "
      "10% warm-up then linear decay, dropout 0.1, gradient clipping at 1, head learning rate 1e-3). "
      "LoRA: rank 8, alpha 16, query and value, `--lr 5e-4`. FGM: `--fgm 1.0` on the word embeddings.\n")
print("| set | method | test acc % | dev acc % | frozen emb + LR test % | Δ vs frozen (pp) | trainable params | steps (best at) | wall s |")
print("|---|---|---|---|---|---|---|---|---|")
for s, method, r, best in rows:
    t = 100 * r["test"]["accuracy"]
    fz = FROZEN.get(s)
    delta = f"{t - fz:+.2f}" if fz else "n/a"
    share = r["trainable_parameters"] / r["total_parameters"]
    print(f"| {s} | {method} | {t:.2f} | {100 * r['dev']['accuracy']:.2f} | {fz if fz else 'n/a'} | {delta} | "
          f"{r['trainable_parameters']:,} ({100 * share:.2f}%) | {r['steps']} ({best['step']}) | {r['seconds']['total']:.0f} |")
