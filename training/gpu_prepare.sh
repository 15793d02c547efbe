#!/usr/bin/env bash
# Here, before a GPU lease: packs what the lease's one command needs into .gpu/ (ignored by git,
# named in the device call's `carry`): the release binary (stripped, xz) to export the dataset
# there, and the Ultralytics wheels the GPU machine lacks (it has PyTorch, OpenCV, NumPy, SciPy,
# matplotlib, PyYAML, psutil; polars is stood in for by training/polars_shim.py).
# About 13 MB beside the 26 MB of tracked files (a lease carries 64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cargo build --release
rm -rf .gpu && mkdir -p .gpu/whl
strip -o .gpu/defect-detector target/release/defect-detector
xz -T0 -6 .gpu/defect-detector
ver() { grep -E "^$1==" training/requirements.txt | cut -d= -f3; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .gpu/whl \
    "ultralytics==$(ver ultralytics)" "ultralytics-thop==2.2.3" "ultralytics-platform==0.1.99"
du -sh .gpu
