#!/usr/bin/env bash
# Set-up and main job: fetch the offline models, build lmfuse, and run it on the example data
# that ships in the repo (examples/reviews.jsonl -> out/reviews.npy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo build --release --locked
mkdir -p out
./target/release/lmfuse embed --input examples/reviews.jsonl --output out/reviews.npy
echo "setup: done; embeddings of examples/reviews.jsonl are in out/reviews.npy"
