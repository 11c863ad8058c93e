#!/usr/bin/env bash
# Fetches data sets that ship on PyPI into datasets/ (git-ignored):
#   datasets/zaragoza-faq/faq-en.jsonl, faq-sv.jsonl  the Swedish construction FAQ (503
#       question/answer pairs, 39 categories, English and Swedish; CC BY 4.0, Zaragoza AB),
#       from the wheel zaragoza-construction-faq==1.2.1
# The wheel is downloaded with `pip download --no-deps`, unzipped, the files checked against
# pinned sha256 sums and moved into place in one rename. Re-running skips what is present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${LMFUSE_DATASETS_DIR:-$root/datasets}"
python="${PYTHON:-python3}"
dest="$data/zaragoza-faq"
en_sha=e4a891ff78e0a785a180cdde2d9fa82bc0339d6e1f5297037e44eedb07f9b40b
sv_sha=caebebbdc7ad2ad24a9d0dc184b899c274cebb888b0b1b83fbb0f9c660bcf5bc
check() { echo "$en_sha  $1/faq-en.jsonl" | sha256sum --check --status && echo "$sv_sha  $1/faq-sv.jsonl" | sha256sum --check --status; }
if [ -d "$dest" ] && check "$dest"; then
  echo "fetch-data: zaragoza-faq already present at $dest"
  exit 0
fi
mkdir -p "$data"
work="$(mktemp -d "$data/.fetch-faq.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetch-data: downloading zaragoza-construction-faq==1.2.1 from PyPI"
"$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/wheel" zaragoza-construction-faq==1.2.1
"$python" -m zipfile -e "$work"/wheel/*.whl "$work/unzipped"
mkdir "$work/out"
cp "$work/unzipped/zaragoza_construction_faq/data/faq-en.jsonl" "$work/out/faq-en.jsonl"
cp "$work/unzipped/zaragoza_construction_faq/data/faq.jsonl" "$work/out/faq-sv.jsonl"
if ! check "$work/out"; then
  echo "fetch-data: the FAQ files' sha256 differ from the pinned ones" >&2
  exit 1
fi
rm -rf "$dest"
mv "$work/out" "$dest"
echo "fetch-data: zaragoza-faq at $dest"
