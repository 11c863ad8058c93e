#!/usr/bin/env bash
# The encoder fine-tuned for tagging (issue 20): `lmfuse ner train --finetune softmax|crf` on
# wnut17 with the default MiniLM, over a learning-rate grid, each run's epoch chosen on dev; the
# head and rate kept are the best on dev, and the fusion (the CRF over hand-made features and the
# tuned encoder's word vectors, `--features hand,emb --finetune HEAD`) is run with them.
# Test scores are read only for the table.
#
#   bash bench/ner_finetune.sh
#   FT_LRS="5e-5 1e-4" FT_HEADS=crf LMFUSE_BIN=/tmp/lmfuse bash bench/ner_finetune.sh
#
# Results: bench/results/ner_finetune.md (outputs in bench/out/ner/wnut17/ft_*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/ner_finetune.sh
s=wnut17
d="bench/out/ner/$s"
mkdir -p "$d"
lrs="${FT_LRS:-5e-5 1e-4 2e-4}"
heads="${FT_HEADS:-softmax crf}"
epochs="${FT_EPOCHS:-3}"
common=(--train "$data/$s/train.conll" --dev "$data/$s/dev.conll" --test "$data/$s/test.conll"
  --repair-bio --model models/all-MiniLM-L6-v2 --epochs "$epochs" --json)
for head in $heads; do
  for lr in $lrs; do
    out="$d/ft_${head}_$lr.json"
    [ -s "$out" ] && continue
    echo "bench: $s fine-tuned $head, lr $lr" >&2
    run_to "$out" "$lm" -q ner train --features emb --finetune "$head" --lr "$lr" \
      --out "$d/bundle_ft_${head}_$lr" "${common[@]}"
  done
done
# The head and rate with the best dev F1 (first on ties).
best=$(python3 - "$d" <<'PY'
import glob, json, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "ft_*.json"))):
    name = os.path.basename(f)[3:-5]
    if name.startswith("fusion"):
        continue
    r = json.load(open(f))
    rows.append((r["train"]["dev"]["micro"]["f1"], name))
print(max(rows, key=lambda r: r[0])[1])
PY
)
head="${best%%_*}"; lr="${best#*_}"
out="$d/ft_fusion_${head}_$lr.json"
if [ ! -s "$out" ]; then
  echo "bench: $s fusion hand + tuned $head (lr $lr)" >&2
  run_to "$out" "$lm" -q ner train --features hand,emb --finetune "$head" --lr "$lr" \
    --c2 0.01,0.1,1 --out "$d/bundle_ft_fusion" "${common[@]}"
fi
python3 bench/ner_finetune_table.py "$d" bench/results/ner_finetune.md
