#!/usr/bin/env bash
# The whole test suite: models (fetched if absent), formatting, lints, unit and integration
# tests, then the Python package (built and installed into .venv) and its pytest suite.
# Tests that need ../shared (reference vectors, data sets) skip with a message when it is
# absent, unless LMFUSE_REQUIRE_ASSETS=1 (CI) turns the skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace --exclude lmfuse-python
bash python/build.sh
.venv/bin/python -m pytest -q python/tests
