#!/usr/bin/env bash
# On the GPU machine, as one device call from the repository root, after training/gpu_prepare.sh
# here (carry: [".gpu"]):
#   run(command="bash training/gpu_train.sh", carry=[".gpu"], timeout_s=600)
# Exports a dataset of the realistic recipe there (16 cores), fine-tunes the shipped model on it
# for HOURS and returns best.pt, results.csv and args.yaml in $OUT. The ONNX, the card and every
# score are made here afterwards (training/README.md, "GPU").
# Knobs (environment): N base images (1280), SIZE px (768), AUGMENT (r0,f_r90), SEED (509),
# HOURS of training (0.11: 6.6 minutes, inside a 10-minute call with the export and the start),
# BATCH (32), DEVICE (0; cpu for a dry run here), PY (python3), MIN_D (5: leave out the point
# defects the dose hides; empty for every label).
set -euo pipefail
: "${OUT:?OUT must name the folder whose files come back}"
N=${N:-1280} SIZE=${SIZE:-768} AUGMENT=${AUGMENT:-r0,f_r90} SEED=${SEED:-509}
HOURS=${HOURS:-0.11} BATCH=${BATCH:-32} DEVICE=${DEVICE:-0} PY=${PY:-python3} MIN_D=${MIN_D-5}
t0=$(date +%s)
if [ -d .gpu/whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
DD=/tmp/gpu-defect-detector
xz -dc .gpu/defect-detector.xz > "$DD" && chmod +x "$DD"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
rm -rf /tmp/gpu-ds
"$DD" export --out /tmp/gpu-ds --n "$N" --seed "$SEED" --size "$SIZE" --augment "$AUGMENT" \
    --split 0.9,0.1,0 ${MIN_D:+--min-detectability "$MIN_D"} | tail -4 | tee "$OUT/dataset.txt"
echo "export done after $(( $(date +%s) - t0 )) s"
PYTHONUNBUFFERED=1 "$PY" training/train.py --data /tmp/gpu-ds/data.yaml --name gpu-run \
    --imgsz "$SIZE" --batch "$BATCH" --device "$DEVICE" --time "$HOURS" --nm-per-px 0.016 \
    --from models/cdte-yolo11n-obb.pt --train-only 2>&1 | tr '\r' '\n' | grep -v "━\|──" | tail -40
RUN=.work/ultralytics/runs/gpu-run
cp "$RUN/weights/best.pt" "$RUN/results.csv" "$RUN/args.yaml" "$OUT/"
echo "done after $(( $(date +%s) - t0 )) s"
