#!/usr/bin/env bash
# NER tagging speed (issue 20): `lmfuse ner predict` on raw texts against the Hugging Face
# token-classification pipeline (aggregation "simple", batch 32) on the same encoder and texts,
# both on 2 threads, one after the other in this run. The texts are wnut17's test sentences
# (tokens joined by spaces). lmfuse tags with the emb and hand+emb bundles bench/ner.sh made
# (encoding, CRF decoding and marginals, character spans included); the HF pipeline's time
# covers the forward pass and its aggregation.
#
#   bash bench/ner_speed.sh          # after bash bench/ner.sh (NER_SETS=wnut17 is enough)
# Needs bench/.venv (bash bench/setup_python_venv.sh). Results: bench/results/ner_speed.md
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init bench/ner_speed.sh
d=bench/out/ner/wnut17
[ -d "$d/bundle_hand_emb" ] || { echo "bench/ner_speed.sh: run bash bench/ner.sh first" >&2; exit 1; }
python3 -c "
import json
with open('$d/test.jsonl', encoding='utf-8') as f, open('$d/test.txt', 'w', encoding='utf-8') as out:
    for line in f:
        out.write(' '.join(json.loads(line)['tokens']) + '\n')"
n=$(wc -l < "$d/test.txt")
labels=$(python3 -c "
import json; m = json.load(open('$d/bundle_hand_emb/manifest.json'))
print(','.join(m['model']['crf']['labels']))")
for rep in 1 2 3; do
  for b in emb hand_emb; do
    start=$(date +%s.%N)
    LMFUSE_THREADS=2 "$lm" -q ner predict --model "$d/bundle_$b" -i "$d/test.txt" -o "$d/speed_$b.jsonl"
    end=$(date +%s.%N)
    echo "{\"system\": \"lmfuse $b\", \"rep\": $rep, \"sentences\": $n, \"seconds\": $(echo "$end - $start" | bc)}"
  done
  bench/.venv/bin/python bench/ner_speed_hf.py "$d/test.txt" models/all-MiniLM-L6-v2 "$labels" 2 \
    | python3 -c "import json,sys; r=json.load(sys.stdin); r['system']='HF pipeline'; r['rep']=$rep; print(json.dumps(r))"
done > "$d/speed.jsonl"
python3 - "$d/speed.jsonl" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in rows:
    rate = r["sentences"] / r["seconds"]
    best[r["system"]] = max(best.get(r["system"], 0), rate)
flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
keep = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if f" {f}" in flags]
model = [l for l in open("/proc/cpuinfo") if l.startswith("model name")][0].split(":")[1].strip()
hf = best["HF pipeline"]
lines = ["# NER tagging speed: `lmfuse ner predict` against the Hugging Face pipeline", "",
         "Made by `bash bench/ner_speed.sh`: wnut17's 1,287 test sentences as raw texts, all-MiniLM-L6-v2,",
         f"2 threads, best of 3 runs each, side by side in one run. CPU: {model}; {' '.join(keep)}.", "",
         "| system | sentences/s | × HF pipeline |", "|---|---|---|"]
for name, rate in sorted(best.items(), key=lambda x: -x[1]):
    lines.append(f"| {name} | {rate:.1f} | {rate / hf:.2f} |")
lines += ["", "lmfuse's time is the whole command (loading the bundle and encoder, reading, tagging, writing);",
          "the pipeline's is tagging only, after loading and a warm-up."]
tmp = "bench/results/ner_speed.md.tmp"
open(tmp, "w").write("\n".join(lines) + "\n")
os.replace(tmp, "bench/results/ner_speed.md")
PY
cat bench/results/ner_speed.md
