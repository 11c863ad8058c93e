#!/usr/bin/env bash
# Creates .venv at the repo root with what the Python package and its tests need
# (python/requirements-test.txt, from PyPI). Skips the install when the pinned list is
# already installed; `--force` rebuilds the venv from scratch.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
req="$root/python/requirements-test.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"
[[ "${1:-}" == "--force" ]] && rm -rf "$venv"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup_venv: $venv is up to date"
  exit 0
fi
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
echo "$want" > "$stamp"
echo "setup_venv: $venv ready"
