#!/usr/bin/env bash
# The time budget holds (issue 18): `lmfuse compare --preset best --time-limit 10m --out B` on
# banking77 must end within the limit plus the final refit of the winner, with a bundle that
# `lmfuse eval` loads and scores as the leaderboard says. The wall time is measured outside
# lmfuse.
#
#   bash bench/budget.sh
#   SET=trec LIMIT=5m bash bench/budget.sh
#   LMFUSE_BIN=/tmp/lmfuse bash bench/budget.sh
# Results: bench/results/budget.md (outputs in bench/out/budget/)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/budget.sh
set_name="${SET:-banking77}"
limit="${LIMIT:-10m}"
[ -d "$data/$set_name" ] || { echo "bench/budget.sh: $data/$set_name not found" >&2; exit 1; }
d="bench/out/presets/$set_name"
mkdir -p "$d" bench/out/budget
[ -s "$d/train.jsonl" ] || python3 bench/prepare_sets.py "$data/$set_name" "$d"
board="bench/out/budget/$set_name.json"
bundle="bench/out/budget/$set_name.bundle"
start=$(date +%s.%N)
"$lm" -q compare --preset best --time-limit "$limit" --train "$d/train.jsonl" --dev "$d/dev.jsonl" \
  --test "$d/test.jsonl" --out "$bundle" --json > "$board"
end=$(date +%s.%N)
"$lm" -q eval --model "$bundle" --data "$d/test.jsonl" --json > "bench/out/budget/$set_name-eval.json"
python3 - "$board" "bench/out/budget/$set_name-eval.json" "$start" "$end" "$limit" "$set_name" \
  > bench/results/budget.md <<'PY'
import json, sys
board, ev = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
start, end, limit, name = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
unit = {"s": 1, "m": 60, "h": 3600}
limit_s = float(limit[:-1]) * unit[limit[-1]] if limit[-1] in unit else float(limit)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
w = board["winner"]
secs = board.get("seconds", {})
print(f"# Time budget (`bash bench/budget.sh`): `--preset best --time-limit {limit}` on {name}\n")
print(f"2 cores, {cpu}. Wall time measured outside lmfuse.\n")
print(f"- Wall time of the whole run: **{end - start:.0f} s** for a limit of {limit_s:.0f} s "
      f"(lmfuse's own split: {json.dumps(secs)}).")
print(f"- Candidates scored: {len(board['candidates'])}; skipped: "
      f"{len(board.get('skipped', []))}.")
for s in board.get("skipped", []):
    print(f"  - `{s['name']}`: {s['reason']}")
print(f"- Winner: `{w['name']}` (CV {100 * w['cv_accuracy']:.2f} ± {100 * w.get('cv_std', 0):.2f}), "
      f"test {100 * w['test']['accuracy']:.2f} %.")
print(f"- The saved bundle loads: `lmfuse eval` gives test accuracy "
      f"{100 * ev['test']['accuracy']:.2f} % and log loss {ev['test']['log_loss']:.4f} "
      f"(calibrated model: {json.dumps((board.get('calibration') or {}).get('temperature'))}).")
PY
cat bench/results/budget.md
