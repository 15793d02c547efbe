#!/usr/bin/env python3
"""Reference for `defect-detector bench detect`: Ultralytics' own ONNX `predict` on the same
model and a same-sized grey image held in memory (numpy), timed the same way (medians over
repeated runs after warm-up). Prints one JSON object.

    python training/bench_ultralytics.py --model M.onnx --image synth.png [--runs 20]
"""
import argparse
import json
import logging
import statistics
import time

from train import offline_env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True, help="a grey PNG/TIFF, e.g. from `defect-detector synth`")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    offline_env()
    import numpy as np
    import onnxruntime
    from PIL import Image
    from ultralytics import YOLO

    img = np.array(Image.open(a.image).convert("RGB"))
    imgsz = max(img.shape[:2])
    # Ultralytics' logger announces the model on stdout; keep stdout for the JSON alone.
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)
    model = YOLO(a.model, task="obb")
    for _ in range(3):
        model.predict(img, imgsz=imgsz, verbose=False)
    total, pre, inf, post = [], [], [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        r = model.predict(img, imgsz=imgsz, verbose=False)[0]
        total.append((time.perf_counter() - t0) * 1e3)
        pre.append(r.speed["preprocess"])
        inf.append(r.speed["inference"])
        post.append(r.speed["postprocess"])
    print(json.dumps({
        "job": "ultralytics-predict",
        "model": a.model,
        "image_shape": list(img.shape),
        "runs": a.runs,
        "predict_ms": statistics.median(total),
        "stages_ms": {"preprocess": statistics.median(pre), "inference": statistics.median(inf),
                      "postprocess": statistics.median(post)},
        "detections": len(r.obb),
        "onnxruntime": onnxruntime.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
