#!/usr/bin/env bash
# Builds the Python package `lmfuse` (python/: pyo3 + maturin, one abi3 wheel for CPython
# >= 3.9) with the cargo profile $LMFUSE_CARGO_PROFILE (default release) into target/wheels/ and installs it into .venv (created first by
# scripts/setup_venv.sh), then checks that it imports.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
rm -f target/wheels/lmfuse-*.whl
.venv/bin/maturin build --profile "${LMFUSE_CARGO_PROFILE:-release}" --locked -i .venv/bin/python -m python/Cargo.toml \
  --out target/wheels
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
  --force-reinstall --no-deps target/wheels/lmfuse-*.whl
.venv/bin/python -c "import lmfuse; print('lmfuse', lmfuse.__version__, 'installed in .venv')"
