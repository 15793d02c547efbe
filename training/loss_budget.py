#!/usr/bin/env python3
"""Where a model's mAP50 goes: each false-positive kind's share of what is lost.

Reads a dataset written by `defect-detector export` (labels, sidecars) and the detections
`defect-detector eval --save-detections DIR` scored on it, recomputes mAP50 as `eval` does
(Ultralytics' OBB val: ProbIoU matching at 0.50:0.05:0.95, 101-point interpolated AP), sorts
every unmatched box at IoU 0.5 into a kind, and reports the mAP50 with each kind left out:

  boundary        a grain-boundary box that matches no label (fragment, duplicate, or none)
  edge            a point box that reaches past the frame's edge, where the labels place none
                  (`detect` drops these; `eval --points-inside-frame` scores that)
  hidden, same    a point box on a defect the export hid (`--min-detectability`) of its class:
                  a real defect the dose shows too weakly to count (d' below the threshold)
  hidden, other   the same, of the other point class
  duplicate       a point box on a labelled defect of its class already matched
  confused        a point box on a labelled defect of the other class
  clutter, band   a point box on nothing, inside a boundary label's band
  clutter, near   ... within three half-widths of a boundary
  clutter, far    ... anywhere else: the frame's noise, amorphous layer, scan jitter

Leaving a kind out is an oracle, not a detector: it says how much that kind costs, so that
work goes where the loss is.

    defect-detector eval --model M.onnx .work/val-big-d5 --merge-boundaries --fit-cells \
        --clip-boundaries --tta --save-detections .work/dets-val
    python training/loss_budget.py .work/val-big-d5 .work/dets-val [--split test]
"""

import argparse
import glob
import json
import math
import os
import struct
import sys

import numpy as np

IOUS = np.linspace(0.5, 0.95, 10)
CLASS_IDS = {"grain_boundary": 0, "vacancy": 1, "interstitial": 2}
NAMES = ["grain_boundary", "vacancy", "interstitial"]


def xywhr(p):
    """Corners (4 x 2) to centre, the p0-p1 side, the p1-p2 side and the p0-p1 angle."""
    cx = sum(q[0] for q in p) / 4
    cy = sum(q[1] for q in p) / 4
    w = math.hypot(p[1][0] - p[0][0], p[1][1] - p[0][1])
    h = math.hypot(p[2][0] - p[1][0], p[2][1] - p[1][1])
    return (cx, cy, w, h, math.atan2(p[1][1] - p[0][1], p[1][0] - p[0][0]))


def _cov(b):
    _, _, w, h, t = b
    a, bb, c, s = w * w / 12, h * h / 12, math.cos(t), math.sin(t)
    return a * c * c + bb * s * s, a * s * s + bb * c * c, (a - bb) * c * s


def probiou(b1, b2, eps=1e-7):
    """Ultralytics' ProbIoU of two boxes (1 - Hellinger distance of their Gaussians)."""
    a1, b1_, c1 = _cov(b1)
    a2, b2_, c2 = _cov(b2)
    dx, dy = b1[0] - b2[0], b1[1] - b2[1]
    den = (a1 + a2) * (b1_ + b2_) - (c1 + c2) ** 2 + eps
    t1 = ((a1 + a2) * dy * dy + (b1_ + b2_) * dx * dx) / den * 0.25
    t2 = ((c1 + c2) * (-dx) * dy) / den * 0.5
    t3 = 0.5 * math.log(
        den / (4 * math.sqrt(max(a1 * b1_ - c1 * c1, 0) * max(a2 * b2_ - c2 * c2, 0)) + eps) + eps
    )
    bd = min(max(t1 + t2 + t3, eps), 100.0)
    return 1 - math.sqrt(1.0 - math.exp(-bd) + eps)


def read_boxes(path, w, h, with_conf):
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path):
        v = line.split()
        if len(v) < 9:
            continue
        p = [(float(v[1 + 2 * i]) * w, float(v[2 + 2 * i]) * h) for i in range(4)]
        out.append((int(v[0]), xywhr(p), float(v[9]) if with_conf else 1.0))
    return out


def image_size(path):
    """Width and height from a PNG's header (`export` writes PNG), without an imaging library."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG (this script reads the datasets `export` writes)")
    return struct.unpack(">II", head[16:24])


def load(ds, dets_dir, split):
    # A dataset not written by `export` has no manifest, so no hidden defects to sort by.
    manifest_path = os.path.join(ds, "manifest.json")
    sidecar_of = {}
    if os.path.exists(manifest_path):
        manifest = json.load(open(manifest_path))
        sidecar_of = {os.path.basename(r["file"]): r["sidecar"] for r in manifest["images"]}
    frames = []
    for img in sorted(glob.glob(os.path.join(ds, "images", split, "*"))):
        name = os.path.basename(img)
        stem = os.path.splitext(name)[0]
        w, h = image_size(img)
        gts = read_boxes(os.path.join(ds, "labels", split, stem + ".txt"), w, h, False)
        dets = read_boxes(os.path.join(dets_dir, stem + ".txt"), w, h, True)
        hidden = []
        sc = sidecar_of.get(name)
        if sc is not None and stem.endswith("_r0"):
            # Hidden defects are in the base image's frame; only the untransformed copy
            # (`--augment none` writes `_r0`) shares it.
            for lab in json.load(open(os.path.join(ds, sc)))["labels"]:
                d = lab.get("detectability")
                if d is not None and lab["class"] != "grain_boundary":
                    o = lab["obb"]
                    box = (o["cx"], o["cy"], o["w"], o["h"], o["angle"])
                    if not any(probiou(box, g[1]) > 0.99 for g in gts):
                        hidden.append((CLASS_IDS[lab["class"]], box))
        frames.append({"stem": stem, "size": (w, h), "gts": gts, "dets": dets, "hidden": hidden})
    return frames


def match(frame):
    """True positives per detection and IoU threshold, as Ultralytics' match_predictions."""
    gts, dets = frame["gts"], frame["dets"]
    tp = np.zeros((len(dets), len(IOUS)), bool)
    if not gts or not dets:
        return tp
    iou = np.array([[probiou(g[1], d[1]) if g[0] == d[0] else 0.0 for d in dets] for g in gts])
    for k, t in enumerate(IOUS):
        m = np.argwhere(iou >= t)
        if len(m) == 0:
            continue
        m = m[iou[m[:, 0], m[:, 1]].argsort()[::-1]]
        m = m[np.unique(m[:, 1], return_index=True)[1]]
        m = m[np.unique(m[:, 0], return_index=True)[1]]
        tp[m[:, 1], k] = True
    return tp


def ap101(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate(([1.0], prec, [0.0])))))
    x = np.linspace(0, 1, 101)
    return np.trapezoid(np.interp(x, mrec, mpre), x)


def m_ap(frames, keep):
    tps, confs, cls = [], [], []
    n = np.zeros(len(NAMES))
    for f in frames:
        for i, d in enumerate(f["dets"]):
            if keep(f, i):
                tps.append(f["tp"][i])
                confs.append(d[2])
                cls.append(d[0])
        for g in f["gts"]:
            n[g[0]] += 1
    tps, confs, cls = np.array(tps).reshape(-1, len(IOUS)), np.array(confs), np.array(cls)
    order = np.argsort(-confs, kind="stable")
    tps, cls = tps[order], cls[order]
    per_class = {}
    for c in range(len(NAMES)):
        if n[c] == 0:
            continue
        s = cls == c
        tpc, fpc = tps[s].cumsum(0), (~tps[s]).cumsum(0)
        rec, prec = tpc / n[c], tpc / np.maximum(tpc + fpc, 1)
        per_class[NAMES[c]] = [ap101(rec[:, k], prec[:, k]) for k in range(len(IOUS))]
    ap = np.array(list(per_class.values()))
    return ap[:, 0].mean(), ap.mean(), {k: v[0] for k, v in per_class.items()}


def inside(box, centre):
    return math.hypot(box[0] - centre[0], box[1] - centre[1]) < 0.5 * max(box[2], box[3])


def boundary_distance(f, c):
    """Distance from `c` to the nearest boundary label's line, in its half-widths."""
    best = math.inf
    for g in f["gts"]:
        if g[0] != 0:
            continue
        cx, cy, w, h, t = g[1]
        if h > w:
            w, h, t = h, w, t + math.pi / 2
        ux, uy = math.cos(t), math.sin(t)
        dx, dy = c[0] - cx, c[1] - cy
        if abs(ux * dx + uy * dy) <= w / 2:
            best = min(best, abs(-uy * dx + ux * dy) / (h / 2))
    return best


def reaches_past(box, size):
    """Whether any corner of `box` lies outside the `size` frame."""
    cx, cy, w, h, t = box
    c, s = abs(math.cos(t)), abs(math.sin(t))
    hx, hy = 0.5 * (w * c + h * s), 0.5 * (w * s + h * c)
    return cx - hx < 0 or cy - hy < 0 or cx + hx > size[0] or cy + hy > size[1]


def kind(f, i):
    d = f["dets"][i]
    if f["tp"][i, 0]:
        return "true"
    if d[0] == 0:
        return "boundary"
    if reaches_past(d[1], f["size"]):
        return "edge"
    c = d[1][:2]
    for cls, box in f["hidden"]:
        if inside(box, c):
            return "hidden, same" if cls == d[0] else "hidden, other"
    for cls, box, _ in f["gts"]:
        if cls != 0 and inside(box, c):
            return "duplicate" if cls == d[0] else "confused"
    g = boundary_distance(f, c)
    return "clutter, band" if g <= 1 else "clutter, near" if g <= 3 else "clutter, far"


KINDS = [
    "boundary",
    "edge",
    "hidden, same",
    "hidden, other",
    "duplicate",
    "confused",
    "clutter, band",
    "clutter, near",
    "clutter, far",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("detections", help="the folder `eval --save-detections` wrote")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", help="also write the table as JSON here")
    a = ap.parse_args()
    if not glob.glob(os.path.join(a.detections, "*.txt")):
        sys.exit(f"{a.detections}: no detection files (write them with `eval --save-detections`)")
    frames = load(a.dataset, a.detections, a.split)
    if not frames:
        sys.exit(f"no images in {a.dataset}/images/{a.split}")
    for f in frames:
        f["tp"] = match(f)
        f["kind"] = [kind(f, i) for i in range(len(f["dets"]))]
    base = m_ap(frames, lambda f, i: True)
    rows = []
    print(f"{len(frames)} frames; mAP50 {base[0]:.4f}, mAP50-95 {base[1]:.4f}; per class "
          + ", ".join(f"{k} {v:.4f}" for k, v in base[2].items()))
    print(f"{'left out':16s} {'boxes >= 0.25':>13s} {'>= 0.5':>7s} {'mAP50':>7s} {'gain':>7s}")
    for k in KINDS:
        n25 = sum(1 for f in frames for i, d in enumerate(f["dets"]) if f["kind"][i] == k and d[2] >= 0.25)
        n50 = sum(1 for f in frames for i, d in enumerate(f["dets"]) if f["kind"][i] == k and d[2] >= 0.5)
        r = m_ap(frames, lambda f, i, k=k: f["kind"][i] != k)
        n = sum(1 for f in frames for i in range(len(f["dets"])) if f["kind"][i] == k)
        rows.append({"kind": k, "boxes": n, "boxes_at_0.25": n25, "boxes_at_0.5": n50, "map50": r[0],
                     "gain": r[0] - base[0]})
        print(f"{k:16s} {n25:13d} {n50:7d} {r[0]:7.4f} {r[0] - base[0]:+7.4f}")
    every = m_ap(frames, lambda f, i: f["kind"][i] == "true")
    print(f"{'every kind':16s} {'':13s} {'':7s} {every[0]:7.4f} {every[0] - base[0]:+7.4f}")
    if a.json:
        json.dump({"frames": len(frames), "map50": base[0], "map50_95": base[1], "per_class": base[2],
                   "left_out": rows, "every_kind_left_out": every[0]}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
