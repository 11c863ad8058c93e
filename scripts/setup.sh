#!/usr/bin/env bash
# Set-up and main job: fetch the offline models, build lmfuse, build and install the Python
# package into .venv/, then train and evaluate a classifier on the example data that ships in
# the repo (examples/reviews.jsonl: 300 labelled reviews, English and a few Chinese) and
# predict with the saved bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo build --release --locked
bash python/build.sh
mkdir -p out
./target/release/lmfuse train --train examples/reviews.jsonl --out out/reviews-model
printf '%s\n' "The battery is fantastic and setup was easy." "It broke after one day, awful support." \
  | ./target/release/lmfuse predict --model out/reviews-model --input - --output -
.venv/bin/python -c "import lmfuse"
echo "setup: done; the bundle is in out/reviews-model; .venv/bin/python has lmfuse"
