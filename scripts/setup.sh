#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: the ONNX Runtime library that `ort` loads at
# run time, from the PyPI wheel, into a project-local venv, linked at .ort/libonnxruntime.so.
#
# With an NVIDIA GPU (`nvidia-smi -L` lists one) the GPU wheel of the same version is installed
# with its CUDA and cuDNN libraries from PyPI (`onnxruntime-gpu[cuda,cudnn]`); the app loads
# them before ONNX Runtime's CUDA provider. DEFECT_DETECTOR_ORT=cpu|gpu overrides the choice;
# SETUP_DRY_RUN=1 prints the choice and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION=1.31.1

variant=${DEFECT_DETECTOR_ORT:-}
if [ -z "$variant" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    variant=gpu
  else
    variant=cpu
  fi
fi
case "$variant" in
  gpu) package=onnxruntime-gpu; other=onnxruntime; spec="onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION" ;;
  cpu) package=onnxruntime; other=onnxruntime-gpu; spec="onnxruntime==$ORT_VERSION" ;;
  *) echo "DEFECT_DETECTOR_ORT must be cpu or gpu, not '$variant'" >&2; exit 2 ;;
esac
echo "ONNX Runtime wheel: $spec"
if [ -n "${SETUP_DRY_RUN:-}" ]; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/pip --quiet --disable-pip-version-check)
installed() { .venv/bin/pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if [ "$(installed "$package")" != "$ORT_VERSION" ] || [ -n "$(installed "$other")" ]; then
  # Both wheels install the same `onnxruntime` package folder: never keep the two, and
  # reinstall ours after removing the other (its removal deletes shared files).
  if [ -n "$(installed "$other")" ]; then
    "${pip[@]}" uninstall -y "$other"
    "${pip[@]}" install --force-reinstall --no-deps "$package==$ORT_VERSION"
  fi
  "${pip[@]}" install "$spec"
fi
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
mkdir -p .ort
ln -sfn "../$lib" .ort/libonnxruntime.so
echo "ONNX Runtime ($variant): .ort/libonnxruntime.so -> $lib"
