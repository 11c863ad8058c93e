#!/usr/bin/env bash
# Classical training on long documents (issue 24, point 6): `lmfuse train --features tfidf
# --head logreg` against scikit-learn with the same settings (TfidfVectorizer word 1-2 + char
# 2-5 grams, sublinear tf, min_df 1, NFKC + lower-case; LogisticRegression lbfgs, tol 1e-5,
# max_iter 1000, the same 9-value C grid chosen on the same dev documents), side by side in one
# run on the same documents, plus `lmfuse compare` restricted to the TF-IDF candidate
# (`--singles tfidf:logreg --ensembles ""`: 5-fold CV, no embeddings). Wall time and peak RSS
# of every process by `/usr/bin/time -f '%e %M'`; accuracy on held-out test documents.
# Documents (bench/longdocs.py build): each joins 20 texts of one label of one shared set, read
# from ../shared/data (converted by bench/prepare_sets.py) and written, with every output,
# under bench/out/longdocs/ (git-ignored). N train, N/10 dev and N/10 test documents per size.
# scikit-learn runs in .venv/bin/python when it has scikit-learn, else bench/.venv/bin/python
# (PYTHON overrides); the results name the one used.
#
#   bash bench/longdocs.sh                               # sizes 1000 5000 20000; builds lmfuse
#   SIZES=1000 LMFUSE_BIN=/tmp/lmfuse bash bench/longdocs.sh   # a prebuilt binary, one size
#   LONGDOC_SETS="sst2 trec" bash bench/longdocs.sh      # the sets whose texts are joined
#   COMPARE=0 bash bench/longdocs.sh                     # without the compare run
#   KEEP=1 bash bench/longdocs.sh                        # reuse a size's finished runs
# Results: bench/results/longdocs.md
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/longdocs.sh
sizes="${SIZES:-1000 5000 20000}"
sets="${LONGDOC_SETS:-sst2 subj cr trec tweeteval_emotion sms_spam}"
grid="0.01,0.03,0.1,0.3,1,3,10,30,100"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for p in .venv/bin/python bench/.venv/bin/python; do
    if [ -x "$p" ] && "$p" -c 'import sklearn, scipy' 2>/dev/null; then py="$p"; break; fi
  done
fi
[ -n "$py" ] || { echo "bench/longdocs.sh: no Python with scikit-learn (.venv or bench/.venv)" >&2; exit 1; }
timer=/usr/bin/time
[ -x "$timer" ] || { echo "bench/longdocs.sh: $timer (GNU time) not found" >&2; exit 1; }
out=bench/out/longdocs
mkdir -p "$out/src" bench/results
for s in $sets; do
  mkdir -p "$out/src/$s"
  python3 bench/prepare_sets.py "$data/$s" "$out/src/$s"
done
"$py" - "$out/meta.json" "$lm" "$py" $sets <<'PY'
import json, subprocess, sys, sklearn
out, lm, py, sets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
version = subprocess.run([lm, "--version"], capture_output=True, text=True).stdout.strip()
json.dump({"lmfuse": lm, "lmfuse_version": version, "python": py,
           "sklearn": sklearn.__version__, "sets": sets}, open(out, "w"))
PY
: > "$out/commands.txt"
# timed FILE CMD...: CMD with its wall seconds and peak RSS (kB) written to FILE, then the
# load averages before and after it (the machine may be shared: the results show them).
timed() {
  local f="$1" before; shift
  before="$(cut -d' ' -f1-3 /proc/loadavg)"
  "$timer" -f '%e %M' -o "$f" "$@"
  echo "load $before -> $(cut -d' ' -f1-3 /proc/loadavg)" >> "$f"
}
for n in $sizes; do
  d="$out/$n"
  mkdir -p "$d"
  echo "bench: longdocs $n documents" >&2
  python3 bench/longdocs.py build "$out/src" "$d" "$n" $sets > "$d/docs.json"
  splits=(--train "$d/train.jsonl" --dev "$d/dev.jsonl" --test "$d/test.jsonl")
  train=("$lm" -q train "${splits[@]}" --features tfidf --head logreg --c-grid "$grid"
         --out "$d/lmfuse-model" --json)
  sk=("$py" bench/longdocs.py sklearn "$d" "$grid")
  cmp=("$lm" -q compare "${splits[@]}" --singles tfidf:logreg --ensembles "" --c-grid "$grid"
       --out "$d/compare-model" --json)
  # The exact commands, shell-quoted, for the results.
  q() {
    local a
    for a; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:,=+@-]+$ ]]; then printf '%s ' "$a"; else printf "'%s' " "$a"; fi
    done
  }
  {
    echo "$(q python3 bench/longdocs.py build "$out/src" "$d" "$n" $sets)> $d/docs.json"
    echo "$(q "$timer" -f '%e %M' -o "$d/lmfuse-train.time" "${train[@]}")> $d/lmfuse-train.json"
    echo "$(q "$timer" -f '%e %M' -o "$d/sklearn.time" "${sk[@]}")> $d/sklearn.json"
    [ "${COMPARE:-1}" = 0 ] || echo "$(q "$timer" -f '%e %M' -o "$d/compare.time" "${cmp[@]}")> $d/compare.json"
  } >> "$out/commands.txt"
  keep() { [ "${KEEP:-0}" = 1 ] && [ -s "$d/$1.json" ] && [ -s "$d/$1.time" ]; }
  keep lmfuse-train || { echo "bench:   lmfuse train" >&2; run_to "$d/lmfuse-train.json" timed "$d/lmfuse-train.time" "${train[@]}"; }
  keep sklearn || { echo "bench:   scikit-learn" >&2; run_to "$d/sklearn.json" timed "$d/sklearn.time" "${sk[@]}"; }
  if [ "${COMPARE:-1}" != 0 ]; then
    keep compare || { echo "bench:   lmfuse compare" >&2; run_to "$d/compare.json" timed "$d/compare.time" "${cmp[@]}"; }
  else
    rm -f "$d/compare.json" "$d/compare.time"
  fi
done
# shellcheck disable=SC2086
python3 bench/longdocs.py table bench/results/longdocs.md "$out" $sizes
