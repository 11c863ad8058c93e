#!/usr/bin/env bash
# Named-entity recognition (issue 20): lmfuse's CRF taggers side by side with sklearn-crfsuite on
# the very same hand-made features (written by `lmfuse ner features`) and, with HF=1, with a
# Hugging Face token-classification fine-tune of the same encoder.
#
#   bash bench/ner.sh                          # wnut17 and msra_ner_zh
#   NER_SETS=wnut17 bash bench/ner.sh
#   HF=1 bash bench/ner.sh                     # also the HF fine-tune (wnut17: ~1 h on 2 cores)
#   LMFUSE_BIN=/tmp/lmfuse bash bench/ner.sh   # a prebuilt binary; no cargo build
#
# lmfuse models, each chosen on dev over the same c2 grid as the peer:
#   hand      CRF over hand-made features (the peer's features);
#   emb       CRF over the encoder's frozen word vectors (first subword);
#   hand+emb  the fusion: one CRF over both.
# Gold tags that break BIO (wnut17 dev, msra train) are read by conlleval's rules (--repair-bio)
# for every system alike. msra_ner_zh: one c2 (0.1) for the hand CRF and the peer on all 44k
# sentences; the encoder runs read multilingual-e5-small on the first $ZH_ENCODER_TRAIN train
# sentences (subsampled for time; the hand CRF on the same subsample is reported beside).
# Needs bench/.venv-ner (bash bench/setup_ner_venv.sh); HF=1 needs bench/.venv.
# Results: bench/results/ner.md (outputs in bench/out/ner/<set>/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/ner.sh
sets="${NER_SETS:-wnut17 msra_ner_zh}"
zh_encoder_train="${ZH_ENCODER_TRAIN:-10000}"
crf_py=bench/.venv-ner/bin/python
[ -x "$crf_py" ] || { echo "bench/ner.sh: run bash bench/setup_ner_venv.sh" >&2; exit 1; }

# first_sentences N FILE OUT: the first N blank-line-separated sentences of a CoNLL file.
first_sentences() {
  awk -v n="$1" 'BEGIN{k=0} /^[ \t\r]*$/{if(seen){k++; seen=0}; if(k>=n) exit; print; next} {seen=1; print}' "$2" > "$3"
}

# timed OUT CMD...: CMD's stdout to OUT (replaced only on success), wall seconds and peak RSS
# to OUT.time.
timed() {
  local out="$1"; shift
  /usr/bin/time -f '{"wall_seconds": %e, "max_rss_kb": %M}' -o "$out.time" "$@" > "$out.tmp" \
    && mv "$out.tmp" "$out"
}

for s in $sets; do
  d="bench/out/ner/$s"
  mkdir -p "$d"
  case "$s" in
    msra_ner_zh) grid=0.1; model=models/multilingual-e5-small; max_iter=100 ;;
    *) grid=0.01,0.1,1; model=models/all-MiniLM-L6-v2; max_iter=100 ;;
  esac
  for split in train dev test; do
    [ -s "$d/$split.jsonl" ] || "$lm" ner features --repair-bio -i "$data/$s/$split.conll" -o "$d/$split.jsonl"
  done
  common=(--dev "$data/$s/dev.conll" --test "$data/$s/test.conll" --repair-bio --c2 "$grid" --max-iter "$max_iter" --json)
  echo "bench: $s lmfuse hand" >&2
  timed "$d/lmfuse_hand.json" "$lm" -q ner train --train "$data/$s/train.conll" --out "$d/bundle_hand" "${common[@]}"
  echo "bench: $s sklearn-crfsuite" >&2
  timed "$d/crfsuite.json" "$crf_py" bench/ner_crfsuite.py --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
    --test "$d/test.jsonl" --c2 "$grid" --max-iterations "$max_iter"
  enc_train="$data/$s/train.conll"
  if [ "$s" = msra_ner_zh ]; then
    enc_train="$d/train_first$zh_encoder_train.conll"
    first_sentences "$zh_encoder_train" "$data/$s/train.conll" "$enc_train"
    echo "bench: $s lmfuse hand on the first $zh_encoder_train sentences" >&2
    timed "$d/lmfuse_hand_sub.json" "$lm" -q ner train --train "$enc_train" --out "$d/bundle_hand_sub" "${common[@]}"
  fi
  for f in emb hand,emb; do
    name="${f/,/_}"
    echo "bench: $s lmfuse $f ($model)" >&2
    timed "$d/lmfuse_$name.json" "$lm" -q ner train --train "$enc_train" --out "$d/bundle_$name" \
      --features "$f" --model "$model" "${common[@]}"
  done
  if [ "${HF:-0}" = 1 ]; then
    echo "bench: $s Hugging Face token classification ($model)" >&2
    timed "$d/hf.json" bench/.venv/bin/python bench/ner_hf.py --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
      --test "$d/test.jsonl" --model "$model"
  fi
done
python3 bench/ner_table.py bench/results/ner.md $sets
