#!/usr/bin/env bash
# `lmfuse compare` on the issue-5 benchmark sets: single heads, feature fusion and the five
# ensemble strategies over (emb:logreg, tfidf:logreg, tfidf+emb:logreg), ranked by 5-fold CV on
# train; the winner is chosen by CV only, and its test accuracy is set against the scikit-learn
# soft vote the issue gives and against the best single member.
#
#   bash bench/compare.sh
#   SETS="trec cr" bash bench/compare.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/compare.sh   # a prebuilt binary; no cargo build
#   REFIT=1 bash bench/compare.sh                   # also --oof-members refit (twice the time)
#   FINETUNE_SETS="trec" bash bench/compare.sh      # also compare --finetune on these sets
#                                                   # (6 fine-tuning runs each: ~30 min on trec)
#   SHARED_SETS="trec" bash bench/compare.sh        # also compare --finetune-shared (2 epochs)
#                                                   # on these sets (6 runs each)
#   SHARED_ALPHAS="0.3,3" ...                       # its head's alphas, chosen on dev
#                                                   # (default 3; n + 5 runs for n values)
#   SHARED_EPOCHS=3 ...                             # its epochs (default 2)
#   SHARED_MEMBERS=1 ...                            # and --finetuned-members: every ensemble
#                                                   # also with finetuned_shared as a member
#   DEFAULT=0 ...                                   # keep an existing compare.json
#   TABLE_SETS="..." ...                            # the sets of the table (default: all 8;
#                                                   # those never run are listed as missing)
# Results: bench/results/compare.md
set -euo pipefail
cd "$(dirname "$0")/.."
data="${LMFUSE_SHARED_DIR:-../shared}/data"
[ -d "$data" ] || { echo "bench/compare.sh: $data not found" >&2; exit 1; }
sets="${SETS:-sst2 trec subj cr banking77 tweeteval_emotion tweeteval_irony sms_spam}"
bash scripts/fetch-models.sh >&2
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
out=bench/out/classic
mkdir -p bench/results
# run_to: a result file is replaced only when its run succeeds.
source bench/lib.sh
for s in $sets; do
  echo "bench: compare $s" >&2
  d="$out/$s"
  mkdir -p "$d"
  python3 bench/prepare_sets.py "$data/$s" "$d"
  # DEFAULT=0 keeps an existing compare.json (same binary and seed give the same figures).
  if [ "${DEFAULT:-1}" != 0 ] || [ ! -s "$d/compare.json" ]; then
    run_to "$d/compare.json" $lm -q compare --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
      --test "$d/test.jsonl" --json
  fi
  case " ${FINETUNE_SETS:-} " in
    *" $s "*)
      run_to "$d/compare-finetune.json" $lm -q compare --train "$d/train.jsonl" \
        --dev "$d/dev.jsonl" --test "$d/test.jsonl" --finetune --json ;;
  esac
  case " ${SHARED_SETS:-} " in
    *" $s "*)
      run_to "$d/compare-shared.json" $lm -q compare --train "$d/train.jsonl" \
        --dev "$d/dev.jsonl" --test "$d/test.jsonl" --finetune-shared \
        --finetune-shared-alpha "${SHARED_ALPHAS:-3}" --finetune-epochs "${SHARED_EPOCHS:-2}" \
        $([ "${SHARED_MEMBERS:-0}" = 1 ] && echo --finetuned-members) --json ;;
  esac
  if [ "${REFIT:-0}" = 1 ]; then
    run_to "$d/compare-refit.json" $lm -q compare --train "$d/train.jsonl" \
      --dev "$d/dev.jsonl" --test "$d/test.jsonl" --oof-members refit --json
  fi
done
# The table covers every benchmark set that has results, not only those run now.
python3 bench/compare_table.py bench/results/compare.md \
  ${TABLE_SETS:-sst2 trec subj cr banking77 tweeteval_emotion tweeteval_irony sms_spam}
