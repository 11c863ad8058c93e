#!/usr/bin/env bash
# Creates bench/.venv-ner with what the NER peer (bench/ner_crfsuite.py) and the seqeval
# fixture script (scripts/make_seqeval_fixture.py) need, from PyPI only:
# sklearn-crfsuite (over python-crfsuite, i.e. CRFsuite) and seqeval.
#
#   bash bench/setup_ner_venv.sh           # skips when the venv already works
#   bash bench/setup_ner_venv.sh --force   # rebuilds it from scratch
#   PYTHON=python3.12 bash bench/setup_ner_venv.sh
#
# python-crfsuite is a C extension: pip must find a wheel for this Python (cp310-cp313 on
# Linux x86_64 exist for 0.9.12), otherwise it would try to compile it. seqeval is published
# as a source archive only; it is pure Python, so pip builds it locally in seconds.
# scikit-learn is pinned too because sklearn-crfsuite subclasses its estimators.
# Result: about 300 MB on disk (numpy, scipy, scikit-learn), under a minute to install.
set -euo pipefail

REQUIREMENTS=(sklearn-crfsuite==0.5.0 python-crfsuite==0.9.12 seqeval==1.2.2 scikit-learn==1.9.1)
IMPORT_CHECK='import sklearn_crfsuite, pycrfsuite, seqeval, sklearn
from importlib.metadata import version
from seqeval.metrics import f1_score
crf = sklearn_crfsuite.CRF(max_iterations=5)
crf.fit([[["w=a"], ["w=b"]]], [["B-X", "O"]])
assert f1_score([["B-X", "O"]], [crf.predict_single([["w=a"], ["w=b"]])]) >= 0.0
print("sklearn-crfsuite", version("sklearn-crfsuite"), "| python-crfsuite", version("python-crfsuite"),
      "| seqeval", version("seqeval"), "| scikit-learn", sklearn.__version__)'

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv-ner"
STAMP="$VENV/.requirements"
PYTHON="${PYTHON:-python3}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

say() { echo "[setup_ner_venv] $*"; }
die() { echo "[setup_ner_venv] error: $*" >&2; exit 1; }

if [[ $FORCE == 0 && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "${REQUIREMENTS[*]}" ]] \
   && versions="$("$VENV/bin/python" -c "$IMPORT_CHECK" 2>/dev/null)"; then
    say "$VENV already works, nothing to do (use --force to rebuild): $versions"
    exit 0
fi

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || die "$PYTHON must be Python >= 3.10 with the venv module (Debian: apt-get install python3-venv)"

start=$(date +%s)
say "creating $VENV with $("$PYTHON" --version 2>&1)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)

say "upgrading pip"
"${PIP[@]}" install --quiet --upgrade pip || die "could not upgrade pip (is PyPI reachable?)"

say "installing from PyPI: ${REQUIREMENTS[*]}"
# Wheels only for python-crfsuite: a missing wheel should fail loudly, not start a C build.
"${PIP[@]}" install --no-cache-dir --progress-bar off --only-binary=python-crfsuite "${REQUIREMENTS[@]}" \
    || die "pip install failed; see the messages above (no python-crfsuite wheel for $("$PYTHON" --version 2>&1)?)"

say "checking the imports"
"$VENV/bin/python" -c "$IMPORT_CHECK" || die "the venv was installed but the import check failed"
echo "${REQUIREMENTS[*]}" > "$STAMP"

say "done in $(( $(date +%s) - start )) s; $VENV takes $(du -sh "$VENV" | cut -f1)"
say "run: $VENV/bin/python $BENCH_DIR/ner_crfsuite.py --train T.jsonl --dev D.jsonl --test E.jsonl"
