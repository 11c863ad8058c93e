#!/usr/bin/env bash
# Creates bench/.venv with what bench/python_peers.py and bench/ner_hf.py need, from PyPI
# only: sentence-transformers, onnxruntime, onnx and torch (CPU use only), plus seqeval for
# the strict entity F1 of the token-classification peer (bench/ner_hf.py), and bm25s with
# PyStemmer and pytrec_eval for the retrieval peers (bench/retrieval_peers.py). seqeval is
# published as a source archive only; it is pure Python, so pip builds it locally in seconds.
#
#   bash bench/setup_python_venv.sh           # skips when the venv already works
#   bash bench/setup_python_venv.sh --force   # rebuilds it from scratch
#   PYTHON=python3.12 bash bench/setup_python_venv.sh
#
# About torch: PyPI has no CPU-only torch wheel for Linux x86_64 (the "+cpu" builds live
# only on PyTorch's own index). The PyPI wheel links all CUDA libraries at import time
# (cudart, cublas, cudnn, nccl, ... from the nvidia-* wheels), so those must stay, but
# triton (about 1 GB, only used by torch.compile) is not needed and is removed afterwards.
# Result: about 4.9 GB on disk, a few minutes to install.
set -euo pipefail

REQUIREMENTS=(torch==2.15.0 sentence-transformers==6.2.0 onnxruntime==1.31.1 onnx==1.23.2 seqeval==1.2.2
              bm25s==0.3.16 PyStemmer==3.1.0 pytrec-eval-terrier==0.5.11)
IMPORT_CHECK='import torch, sentence_transformers, transformers, tokenizers, onnxruntime, onnx, numpy, seqeval, bm25s, Stemmer, pytrec_eval
from importlib.metadata import version
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
torch.ones(2, 2) @ torch.ones(2, 2)
assert f1_score([["B-X", "I-X", "O"]], [["B-X", "I-X", "O"]], mode="strict", scheme=IOB2) == 1.0
print("torch", torch.__version__, "| sentence-transformers", sentence_transformers.__version__,
      "| onnxruntime", onnxruntime.__version__, "| onnx", onnx.__version__,
      "| seqeval", version("seqeval"))'

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv"
STAMP="$VENV/.requirements"
PYTHON="${PYTHON:-python3}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

say() { echo "[setup_python_venv] $*"; }
die() { echo "[setup_python_venv] error: $*" >&2; exit 1; }

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
say "(torch pulls about 3 GB of nvidia-* CUDA wheels: there is no CPU-only torch on PyPI)"
"${PIP[@]}" install --no-cache-dir --progress-bar off "${REQUIREMENTS[@]}" \
    || die "pip install failed; see the messages above"

if "$VENV/bin/python" -m pip show triton >/dev/null 2>&1; then
    say "removing triton (about 1 GB; only torch.compile uses it)"
    "${PIP[@]}" uninstall --quiet --yes triton
fi

say "checking the imports"
"$VENV/bin/python" -c "$IMPORT_CHECK" || die "the venv was installed but the import check failed"
echo "${REQUIREMENTS[*]}" > "$STAMP"

say "done in $(( $(date +%s) - start )) s; $VENV takes $(du -sh "$VENV" | cut -f1)"
say "run: $VENV/bin/python $BENCH_DIR/python_peers.py --model DIR --input FILE --threads 2 --batch-size 32"
say " or: $VENV/bin/python $BENCH_DIR/ner_hf.py --train T.jsonl --dev D.jsonl --test E.jsonl --model DIR"
