#!/usr/bin/env bash
# Chinese end to end (issue 19): lmfuse compare with the multilingual encoder on the two Chinese
# sets, side by side with scikit-learn TF-IDF (jieba) + LR and sentence-transformers on the same
# converted model + LR; and English sets with the multilingual model beside MiniLM (no bar).
#
#   bash bench/zh.sh                          # everything
#   PRESET=medium ZH_SETS=waimai_10k bash bench/zh.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/zh.sh   # a prebuilt binary; no cargo build
#   FINETUNE=1 bash bench/zh.sh               # also fine-tune e5 once per Chinese set (~hours)
# Needs bench/.venv (bash bench/setup_python_venv.sh) with jieba for the peers.
# Results: bench/results/zh.md (outputs in bench/out/zh/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/zh.sh
zh_sets="${ZH_SETS:-chnsenticorp_htl waimai_10k}"
en_sets="${EN_SETS:-sst2 trec banking77}"
preset="${PRESET:-fast}"
py=bench/.venv/bin/python
"$py" -c "import jieba, sentence_transformers, sklearn" \
  || { echo "bench/zh.sh: run bash bench/setup_python_venv.sh and bench/.venv/bin/pip install jieba" >&2; exit 1; }
e5=(--model multilingual-e5-small --prefix "query: ")
prepare() { # set -> folder
  local d="bench/out/zh/$1"
  mkdir -p "$d"
  [ -s "$d/train.jsonl" ] || python3 bench/prepare_sets.py "$data/$1" "$d"
  echo "$d"
}
for s in $zh_sets; do
  d="$(prepare "$s")"
  echo "bench: compare --preset $preset $s (multilingual-e5-small)" >&2
  run_to "$d/lmfuse-$preset.json" "$lm" -q compare --preset "$preset" "${e5[@]}" \
    --train "$d/train.jsonl" --dev "$d/dev.jsonl" --test "$d/test.jsonl" --json
  echo "bench: peers $s" >&2
  run_to "$d/peers.json" "$py" bench/zh_peers.py "$d" models/multilingual-e5-small
done
if [ "${FINETUNE:-0}" = 1 ]; then
  for s in $zh_sets; do
    d="bench/out/zh/$s"
    echo "bench: finetune $s (multilingual-e5-small)" >&2
    run_to "$d/ft-e5.json" "$lm" -q finetune "${e5[@]}" --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
      --test "$d/test.jsonl" --epochs 2 --max-length 64 --freeze-embeddings --out "$d/ft-e5" --json
  done
fi
for s in $en_sets; do
  d="$(prepare "$s")"
  for m in all-MiniLM-L6-v2 multilingual-e5-small; do
    extra=()
    [ "$m" = all-MiniLM-L6-v2 ] || extra=(--prefix "query: ")
    echo "bench: compare emb:logreg $s ($m)" >&2
    run_to "$d/emb-$m.json" "$lm" -q compare --model "$m" "${extra[@]}" --singles emb:logreg --ensembles "" \
      --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
      --test "$d/test.jsonl" --json
  done
done
python3 bench/zh_table.py bench/results/zh.md "$preset" "$zh_sets" "$en_sets"
