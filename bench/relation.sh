#!/usr/bin/env bash
# Relation extraction on SemEval-2010 Task 8 (issue 20): `lmfuse relation train` with the
# default MiniLM. The set has no dev split: 10 % of train, stratified by label (Python's
# random, seed 13), is held out once into bench/out/relation/{train,dev}.jsonl, and every run,
# lmfuse's and the peer's, reads those two files:
# - frozen states (first token, <e1>, <e2>) + logistic regression, C chosen on dev;
# - the encoder fine-tuned with marker tokens added, over a learning-rate grid, each run's
#   epoch chosen on dev; the rate kept is the best on dev.
# The Hugging Face peer (bench/relation_hf.py: AutoModelForSequenceClassification, same
# encoder, same held-out dev, same markers as added tokens, same rate grid) runs when
# bench/.venv exists (bash bench/setup_python_venv.sh). Test scores are read only for the
# table; every figure is the official scorer's macro-F1 (9 relations, direction counted,
# Other excluded), computed by lmfuse and, for the kept runs, by the Perl scorer itself.
#
#   bash bench/relation.sh
#   RE_LRS="5e-5 1e-4" RE_EPOCHS=3 LMFUSE_BIN=/tmp/lmfuse bash bench/relation.sh
#
# Results: bench/results/relation.md (outputs in bench/out/relation/*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/relation.sh
s="$data/semeval2010_task8"
d="bench/out/relation"
mkdir -p "$d"
lrs="${RE_LRS:-5e-5 1e-4}"
epochs="${RE_EPOCHS:-3}"
if [ ! -s "$d/dev.jsonl" ]; then
  python3 - "$s/train.jsonl" "$d" <<'PY'
import collections, json, random, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
by_label = collections.defaultdict(list)
for i, line in enumerate(lines):
    by_label[json.loads(line)["label"]].append(i)
rng = random.Random(13)
dev = set()
for label in sorted(by_label):
    idx = by_label[label]
    rng.shuffle(idx)
    if len(idx) >= 2:  # a label seen once stays in train
        dev.update(idx[: max(1, round(0.1 * len(idx)))])
for name, keep in (("train", lambda i: i not in dev), ("dev", lambda i: i in dev)):
    with open(f"{sys.argv[2]}/{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(lines[i] + "\n" for i in range(len(lines)) if keep(i))
PY
fi
common=(--train "$d/train.jsonl" --dev "$d/dev.jsonl" --test "$s/test.jsonl"
  --model models/all-MiniLM-L6-v2 --seed 13 --json)
if [ ! -s "$d/frozen.json" ]; then
  echo "bench: frozen states + logistic regression" >&2
  run_to "$d/frozen.json" "$lm" -q relation train --out "$d/bundle_frozen" "${common[@]}"
fi
for lr in $lrs; do
  out="$d/ft_$lr.json"
  [ -s "$out" ] && continue
  echo "bench: fine-tuned, lr $lr" >&2
  run_to "$out" "$lm" -q relation train --finetune --lr "$lr" --epochs "$epochs" \
    --out "$d/bundle_ft_$lr" "${common[@]}"
done
if [ -x bench/.venv/bin/python ] && [ ! -s "$d/hf.json" ]; then
  echo "bench: Hugging Face sequence classification" >&2
  run_to "$d/hf.json" bench/.venv/bin/python bench/relation_hf.py --train "$d/train.jsonl" \
    --dev "$d/dev.jsonl" --test "$s/test.jsonl" --model models/all-MiniLM-L6-v2 --epochs "$epochs" \
    --lr "$(echo $lrs | tr ' ' ',')" --seed 13 --predictions "$d/hf_test_predictions.txt"
fi
python3 bench/relation_table.py "$d" "$s" bench/results/relation.md
