#!/usr/bin/env python3
"""Load a dataset written by `defect-detector export` with Ultralytics' own dataset code and
compare what Ultralytics sees with the dataset's manifest.json.

Checks, per split: the images Ultralytics finds, the labels it accepts (none corrupt or
missing), boxes per class, per-image box counts against the manifest, and that one sample goes
through the OBB data pipeline (letterbox + Format) with the right number of rotated boxes.

Usage (offline; any Python with `ultralytics` installed):
    python training/check_dataset.py DATASET_DIR [--imgsz 768]
Exit status 0 when everything agrees, 1 otherwise.

Note: like any Ultralytics run, this writes label caches (labels/<split>.cache) into the dataset.
"""

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path


def offline_env():
    # Must happen before `import ultralytics` (it probes the network and writes settings).
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    work = Path(tempfile.gettempdir()) / "dd-ultralytics-config"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work))
    os.environ.setdefault("MPLCONFIGDIR", str(work / "mpl"))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="folder holding data.yaml and manifest.json")
    ap.add_argument("--imgsz", type=int, default=None, help="default: the manifest's image size")
    a = ap.parse_args()
    offline_env()
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    root = a.dataset.resolve()
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("shard") is not None:
        sys.exit(f"{root} is a shard; merge the shards first")
    names = ["grain_boundary", "vacancy", "interstitial"]
    data = check_det_dataset(str(root / "data.yaml"))
    if [data["names"][i] for i in range(len(data["names"]))] != names:
        sys.exit(f"unexpected class names {data['names']}")
    imgsz = a.imgsz or manifest["config"]["size"]
    by_file = {str(root / i["file"]): i for i in manifest["images"]}
    problems = []
    print(f"{'split':<6} {'images':>7} {'ultra':>7} " + " ".join(f"{n:>15}" for n in names))
    for split in ("train", "val", "test"):
        want = manifest["splits"][split]
        if want["images"] == 0:
            print(f"{split:<6} {0:>7} {'-':>7}  (empty split, skipped)")
            continue
        ds = YOLODataset(
            img_path=data[split], data=data, task="obb", imgsz=imgsz, augment=False,
            prefix=f"{split}: ",
        )
        counts = Counter()
        for lb in ds.labels:
            cls = lb["cls"].reshape(-1).astype(int).tolist()
            counts.update(cls)
            rec = by_file.get(str(Path(lb["im_file"]).resolve()))
            if rec is None:
                problems.append(f"{split}: Ultralytics loaded {lb['im_file']}, not in the manifest")
                continue
            per = Counter(cls)
            exp = [rec["labels"][n] for n in names]
            got = [per.get(k, 0) for k in range(3)]
            if got != exp:
                problems.append(f"{lb['im_file']}: Ultralytics sees {got} boxes, manifest {exp}")
            segs = lb.get("segments") or []
            if len(segs) != len(cls) or any(s.shape != (4, 2) for s in segs):
                problems.append(f"{lb['im_file']}: OBB corners not read as 4-point polygons")
        got = [counts.get(k, 0) for k in range(3)]
        exp = [want["labels"][n] for n in names]
        print(f"{split:<6} {want['images']:>7} {len(ds.labels):>7} "
              + " ".join(f"{g:>7} (exp {e:>4})" for g, e in zip(got, exp)))
        if len(ds.labels) != want["images"]:
            problems.append(f"{split}: Ultralytics accepted {len(ds.labels)} images, manifest lists {want['images']}")
        if got != exp:
            problems.append(f"{split}: boxes per class {got}, manifest {exp}")
        # One sample through the OBB training pipeline (letterbox + Format).
        sample = ds[0]
        n_boxes = len(ds.labels[0]["cls"])
        if sample["img"].shape[-2:] != (imgsz, imgsz) or sample["bboxes"].shape != (n_boxes, 5):
            problems.append(
                f"{split}: sample 0 came out as img {tuple(sample['img'].shape)}, "
                f"bboxes {tuple(sample['bboxes'].shape)} (expected {n_boxes} xywhr boxes)"
            )
    if problems:
        print(f"{len(problems)} problem(s):")
        for p in problems[:50]:
            print("  " + p)
        sys.exit(1)
    print("Ultralytics reads the dataset exactly as the manifest describes it.")


if __name__ == "__main__":
    main()
