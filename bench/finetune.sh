#!/usr/bin/env bash
# Fine-tuning acceptance runs: full fine-tuning and LoRA on sst2, FGM on sst2 and cr (with the
# matching plain run on cr). Writes the reports to bench/out/finetune/ and the table to
# bench/results/finetune.md. About 50 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LMFUSE_BIN:-target/release/lmfuse}
S=${DATA:-../shared/data}
O=bench/out/finetune
mkdir -p "$O"
[ -x "$BIN" ] || cargo build --release -p lmfuse-cli
FT=(--epochs 3 --lr 3e-5 --eval-every 145 --patience 4 --json -q)
run() { local name=$1 set=$2; shift 2
  "$BIN" finetune --train "$S/$set/train.jsonl" --dev "$S/$set/dev.jsonl" --test "$S/$set/test.jsonl" \
    --out "$O/$name" "$@" > "$O/$name.json"; }
run sst2-full sst2 "${FT[@]}"
run sst2-lora sst2 --lora --epochs 3 --lr 5e-4 --eval-every 145 --patience 4 --json -q
run sst2-fgm sst2 --fgm 1.0 "${FT[@]}"
run cr-full cr "${FT[@]}"
run cr-fgm cr --fgm 1.0 "${FT[@]}"
python3 bench/finetune_table.py sst2/full="$O/sst2-full.json" sst2/lora="$O/sst2-lora.json" \
  sst2/fgm="$O/sst2-fgm.json" cr/full="$O/cr-full.json" cr/fgm="$O/cr-fgm.json" > bench/results/finetune.md
cat bench/results/finetune.md
