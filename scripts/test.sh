#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, models (fetched if
# absent), then the Python package (built and installed into .venv) and its pytest suite.
# Tests that need ../shared (reference vectors, data sets) skip with a message when it is
# absent, unless LMFUSE_REQUIRE_ASSETS=1 (CI) turns the skip into a failure.
# Everything is built with the cargo profile `ci` (release optimisation without LTO, see
# Cargo.toml) into target/ci/; the Python tests run that build's CLI through LMFUSE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
export LMFUSE_CARGO_PROFILE="${LMFUSE_CARGO_PROFILE:-ci}"
export LMFUSE_BIN="$PWD/target/$LMFUSE_CARGO_PROFILE/lmfuse"
stage() { echo "test.sh: $1 ($(date +%T), ${SECONDS}s so far)"; }
stage "fmt"
cargo fmt --all -- --check
stage "clippy"
cargo clippy --profile "$LMFUSE_CARGO_PROFILE" --locked --workspace --all-targets -- -D warnings
stage "cargo test build"
cargo test --profile "$LMFUSE_CARGO_PROFILE" --locked --workspace --exclude lmfuse-python --no-run
stage "models"
bash scripts/fetch-models.sh
bash scripts/fetch-thesauri.sh
stage "cargo test"
cargo test --profile "$LMFUSE_CARGO_PROFILE" --locked --workspace --exclude lmfuse-python
stage "python package"
bash python/build.sh
stage "pytest"
.venv/bin/python -m pytest -q python/tests
stage "done"
