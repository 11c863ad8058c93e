#!/usr/bin/env bash
# `lmfuse compare` on the issue-5 benchmark sets: single heads, feature fusion and the five
# ensemble strategies over (emb:logreg, tfidf:logreg, tfidf+emb:logreg), ranked by 5-fold CV on train; the winner
# is chosen by CV only, and its test accuracy is set against the scikit-learn soft vote the
# issue gives and against the best single member.
#
#   bash bench/compare.sh
#   SETS="trec cr" bash bench/compare.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/compare.sh   # a prebuilt binary; no cargo build
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
for s in $sets; do
  echo "bench: compare $s" >&2
  d="$out/$s"
  mkdir -p "$d"
  python3 bench/prepare_sets.py "$data/$s" "$d"
  $lm -q compare --train "$d/train.jsonl" --dev "$d/dev.jsonl" --test "$d/test.jsonl" \
    --json > "$d/compare.json"
done
python3 - bench/results/compare.md $sets <<'PY'
import json, sys, datetime, os
results, sets = sys.argv[1], sys.argv[2:]
# scikit-learn soft vote of (embeddings + LR, TF-IDF + LR), test accuracy %, from issue 5.
ref = {"sst2": 84.6, "trec": 93.6, "subj": 93.3, "cr": 82.5, "banking77": 94.1,
       "tweeteval_emotion": 76.6, "tweeteval_irony": 69.5, "sms_spam": 98.9}
short = {"hard_vote": "hard", "soft_vote": "soft", "weighted": "weighted", "stacking": "stacking",
         "adaptive": "adaptive"}
lines = [f"# Fusion leaderboard ({datetime.date.today()}, {os.cpu_count()} cores)", "",
         "`bash bench/compare.sh`: `lmfuse compare` with its defaults: singles emb:logreg, "
         "tfidf:logreg and tfidf+emb:logreg (feature fusion), and the five ensembles of those three; C of each member, and of the stacking meta-learner and the adaptive gate, chosen on dev; every candidate scored "
         "by 5-fold CV accuracy on train (ensembles: combiner fit on out-of-fold member "
         "probabilities of the other folds). *winner* is the best CV candidate; its test "
         "accuracy is what counts. Test accuracy % of every candidate is shown for reference.", "",
         "| set | winner (by CV) | winner test % | sklearn soft vote % | Δ pp | best single member test % | beats best member | "
         "emb | tfidf | tfidf+emb | hard | soft | weighted | stacking | adaptive |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
wins = met = 0
for s in sets:
    r = json.load(open(f"bench/out/classic/{s}/compare.json"))
    by = {c["name"].split("(")[0]: c for c in r["candidates"]}
    w = r["winner"]
    acc = 100 * w["test"]["accuracy"]
    singles = [c for c in r["candidates"] if c["kind"] == "single"]
    best_single = max(100 * c["test"]["accuracy"] for c in singles)
    beats = acc > best_single
    wins += beats
    met += s in ref and acc >= ref[s] - 1e-9
    cell = lambda n: f"{100 * by[n]['test']['accuracy']:.2f}" if n in by else "-"
    lines.append(f"| {s} | {w['name'].split('(')[0]} | {acc:.2f} | {ref.get(s, '-')} | "
                 f"{(f'{acc - ref[s]:+.2f}' if s in ref else '-')} | {best_single:.2f} | {'yes' if beats else 'no'} | "
                 + " | ".join(cell(n) for n in ["emb:logreg", "tfidf:logreg", "tfidf+emb:logreg",
                                                "hard_vote", "soft_vote", "weighted", "stacking", "adaptive"]) + " |")
lines += ["", f"Winner ≥ the scikit-learn soft vote on {met} of {len(sets)} sets; beats the best "
          f"single member on {wins} of {len(sets)}."]
text = "\n".join(lines) + "\n"
open(results, "w").write(text)
print(text)
PY
