#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: the ONNX Runtime library that `ort` loads at
# run time, from the PyPI wheel, into a project-local venv, linked at .ort/libonnxruntime.so.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION=1.31.1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION')" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "onnxruntime==$ORT_VERSION"
fi
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
mkdir -p .ort
ln -sfn "../$lib" .ort/libonnxruntime.so
echo "ONNX Runtime: .ort/libonnxruntime.so -> $lib"
