#!/usr/bin/env python3
"""Reference for `defect-detector eval`: Ultralytics' own OBB `val` on the same ONNX model and
dataset split. Prints one JSON object (overall and per-class mAP50, mAP50-95, P, R).

    python training/val_ultralytics.py --model M.onnx --data DATASET/data.yaml --split test
"""
import argparse
import json
import logging

from train import WORK, offline_env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--imgsz", type=int, default=None, help="default: the model's input size")
    a = ap.parse_args()
    offline_env()
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)
    model = YOLO(a.model, task="obb")
    kw = {"imgsz": a.imgsz} if a.imgsz else {}
    m = model.val(data=a.data, split=a.split, batch=1, plots=False, verbose=False,
                  project=str(WORK / "runs"), name="val-reference", exist_ok=True, **kw)
    names = m.names
    per_class = {}
    for i, c in enumerate(m.box.ap_class_index):
        p, r, ap50, ap = m.box.class_result(i)
        per_class[names[int(c)]] = {"precision": p, "recall": r, "mAP50": ap50, "mAP50-95": ap}
    print(json.dumps({
        "job": "ultralytics-val",
        "model": a.model,
        "data": a.data,
        "split": a.split,
        "mAP50": float(m.box.map50),
        "mAP50-95": float(m.box.map),
        "precision": float(m.box.mp),
        "recall": float(m.box.mr),
        "per_class": per_class,
    }, indent=2, default=float))


if __name__ == "__main__":
    main()
