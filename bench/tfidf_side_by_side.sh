#!/usr/bin/env bash
# TF-IDF + logistic regression, lmfuse against scikit-learn on the very same splits and C grid
# (scikit-learn's TfidfVectorizer word 1-2 + char 2-5 grams, sublinear tf; LogisticRegression).
# Reuses bench/out/classic/SET/lmfuse-tfidf.json from `FEATURES=tfidf bash bench/classic.sh`
# and runs bench/sklearn_tfidf.py (in bench/.venv) for the sets that lack its result.
#
#   SETS="trec subj cr clinc150" bash bench/tfidf_side_by_side.sh
# Results: bench/results/classic-tfidf-side-by-side.md
set -euo pipefail
cd "$(dirname "$0")/.."
sets="${SETS:-sst2 trec subj cr banking77 clinc150 tweeteval_emotion sms_spam}"
py=bench/.venv/bin/python
[ -x "$py" ] || { echo "bench/tfidf_side_by_side.sh: run bench/setup_python_venv.sh first" >&2; exit 1; }
for s in $sets; do
  d=bench/out/classic/$s
  [ -f "$d/lmfuse-tfidf.json" ] || { echo "$d/lmfuse-tfidf.json missing: run FEATURES=tfidf SETS=$s bash bench/classic.sh" >&2; exit 1; }
  if [ ! -s "$d/sklearn-tfidf.json" ]; then
    echo "bench: sklearn tfidf $s" >&2
    "$py" bench/sklearn_tfidf.py "$d/train.jsonl" "$d/dev.jsonl" "$d/test.jsonl" \
      0.01,0.03,0.1,0.3,1,3,10,30,100 > "$d/sklearn-tfidf.json"
  fi
done
python3 - bench/results/classic-tfidf-side-by-side.md $sets <<'PY'
import json, sys, datetime
results, sets = sys.argv[1], sys.argv[2:]
lines = [f"# TF-IDF + logistic regression: lmfuse vs scikit-learn side by side ({datetime.date.today()})", "",
         "`bash bench/tfidf_side_by_side.sh`: same JSONL splits, same C grid chosen on dev by accuracy.", "",
         "| set | lmfuse test % (C) | scikit-learn test % (C) | Δ pp | lmfuse fit s | scikit-learn fit s |",
         "|---|---|---|---|---|---|"]
for s in sets:
    d = f"bench/out/classic/{s}"
    r, k = json.load(open(f"{d}/lmfuse-tfidf.json")), json.load(open(f"{d}/sklearn-tfidf.json"))
    sel = r.get("selected", {}).get("value", r.get("c"))
    a, b = 100 * r["test"]["accuracy"], 100 * k["test_accuracy"]
    lines.append(f"| {s} | {a:.2f} ({sel:g}) | {b:.2f} ({k['c']:g}) | {a - b:+.2f} | {r['seconds']['fit']:.1f} | {k['fit_seconds']:.1f} |")
text = "\n".join(lines) + "\n"
open(results, "w").write(text)
print(text)
PY
