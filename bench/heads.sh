#!/usr/bin/env bash
# Every classical head on the shared benchmark sets: test accuracy, the hyperparameter chosen
# on dev, and fit time (the whole selection over the head's grid, and the chosen setting's fit).
# Features default to the encoder embeddings (FEATURES=tfidf or tfidf,emb for the others).
# Embeddings come from the cache, so a second run measures the heads alone.
#
#   bash bench/heads.sh                              # all heads, all sets
#   HEADS="logreg svm" SETS="sst2 trec" bash bench/heads.sh
# Results: bench/results/heads.md (emb), heads-tfidf.md, ...
set -euo pipefail
cd "$(dirname "$0")/.."
data="${LMFUSE_SHARED_DIR:-../shared}/data"
[ -d "$data" ] || { echo "bench/heads.sh: $data not found" >&2; exit 1; }
sets="${SETS:-sst2 trec subj cr banking77 clinc150 tweeteval_emotion sms_spam}"
heads="${HEADS:-logreg svm nb knn rf gbdt}"
features="${FEATURES:-emb}"
tag="${features//,/+}"
results=bench/results/heads.md
[ "$features" = emb ] || results="bench/results/heads-$tag.md"
bash scripts/fetch-models.sh >&2
# LMFUSE_BIN: a prebuilt binary (a copy, so rebuilding during the run changes nothing).
lm="${LMFUSE_BIN:-./target/release/lmfuse}"
[ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
out=bench/out/classic
mkdir -p bench/results
for s in $sets; do
  d="$out/$s"
  mkdir -p "$d"
  python3 bench/prepare_sets.py "$data/$s" "$d"
  for h in $heads; do
    echo "bench: $s $h" >&2
    $lm -q train --train "$d/train.jsonl" --dev "$d/dev.jsonl" --test "$d/test.jsonl" \
      --features "$features" --head "$h" --out "$d/bundle-$tag-$h" --json > "$d/head-$tag-$h.json"
  done
done
python3 - "$tag" "$results" "$heads" $sets <<'PY'
import json, sys, datetime, platform, os
tag, results, heads, sets = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
lines = [f"# Heads on {tag} features ({datetime.date.today()}, {os.cpu_count()} cores)", "",
         f"`{'FEATURES=' + tag.replace('+', ',') + ' ' if tag != 'emb' else ''}bash bench/heads.sh`. "
         "Each cell: test accuracy % · the setting chosen on dev · seconds to fit the whole grid "
         "(seconds to fit the chosen setting alone). Dev = the set's dev split, else a stratified "
         "10% of train (seed 13).", "",
         "| set | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
for s in sets:
    cells = []
    for h in heads:
        r = json.load(open(f"bench/out/classic/{s}/head-{tag}-{h}.json"))
        sel = r["selected"]
        chosen = next((t["fit_seconds"] for t in r["trials"] if t["value"] == sel["value"]), None)
        setting = f"{sel['param']}={sel['value']:g}" if sel["param"] else "-"
        cells.append(f"{100 * r['test']['accuracy']:.2f} · {setting} · {r['seconds']['fit']:.1f}"
                     + (f" ({chosen:.1f})" if chosen is not None and len(r["trials"]) > 1 else ""))
    lines.append(f"| {s} | " + " | ".join(cells) + " |")
text = "\n".join(lines) + "\n"
open(results, "w").write(text)
print(text)
PY
