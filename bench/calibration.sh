#!/usr/bin/env bash
# Calibration of the saved winner (issue 18): `lmfuse compare --preset P --out B` fits a
# temperature on the winner's out-of-fold probabilities and reports the test expected
# calibration error (ECE, 15 equal-width bins) of the model before and after; test is never
# read to fit it. One run per set, no per-set settings.
#
#   bash bench/calibration.sh                     # fast on the eight sets (banking77: ~30 min)
#   PRESET=medium SETS="trec cr" bash bench/calibration.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/calibration.sh
# Results: bench/results/calibration.md (outputs in bench/out/calibration/<set>.json)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/calibration.sh
sets="${SETS:-sst2 trec subj cr banking77 tweeteval_emotion tweeteval_irony sms_spam}"
preset="${PRESET:-fast}"
out=bench/out/calibration
mkdir -p "$out"
for s in $sets; do
  d="bench/out/presets/$s"
  mkdir -p "$d"
  [ -s "$d/train.jsonl" ] || python3 bench/prepare_sets.py "$data/$s" "$d"
  echo "bench: compare --preset $preset --out ($s)" >&2
  run_to "$out/$s.json" "$lm" -q compare --preset "$preset" --train "$d/train.jsonl" \
    --dev "$d/dev.jsonl" --test "$d/test.jsonl" --out "$out/$s.bundle" --json
done
python3 - "$out" "$preset" $sets > bench/results/calibration.md <<'PY'
import json, sys
out, preset, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"# Calibration of the saved winner (`bash bench/calibration.sh`, `--preset {preset}`)\n")
print(f"2 cores, {cpu}. `lmfuse compare --preset {preset} --out B`: the winner's temperature is fit "
      "on its out-of-fold probabilities (train only); test ECE (15 bins) of the model before and "
      "after, and the test accuracy (a temperature never changes the argmax).\n")
print("| set | winner | temperature | OOF log loss before → after | test ECE uncalibrated | test ECE calibrated | test accuracy % |")
print("|---|---|---|---|---|---|---|")
rows = []
for s in sets:
    try:
        d = json.load(open(f"{out}/{s}.json"))
    except (OSError, ValueError):
        continue
    c = d.get("calibration")
    if not c:
        print(f"| {s} | {d['winner']['name']} | (no calibration reported) | | | | |")
        continue
    before, after = c["test_ece_uncalibrated"], c["test"]["ece"]
    rows.append((before, after))
    print(f"| {s} | `{c['candidate']}` | {c['temperature']:.3f} | {c['oof_log_loss']:.4f} → "
          f"{c['oof_log_loss_calibrated']:.4f} | {before:.4f} | {after:.4f}"
          f"{' (worse)' if after > before else ''} | {100 * c['test']['accuracy']:.2f} |")
if rows:
    mb = sum(b for b, _ in rows) / len(rows)
    ma = sum(a for _, a in rows) / len(rows)
    worse = sum(a > b for b, a in rows)
    print(f"\nMean test ECE: {mb:.4f} uncalibrated, {ma:.4f} calibrated ({len(rows)} sets; "
          f"calibrated worse on {worse}).")
PY
cat bench/results/calibration.md
