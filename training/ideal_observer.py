#!/usr/bin/env python3
"""The mAP50 a dose-limited ideal observer would score on an exported test set.

The observer knows the scene's lattice, where every column and channel is, and the exact signal
a vacancy or an interstitial would add there; all it lacks is a noise-free frame. Its best test
at each site is the matched filter, whose score is d' + N(0, 1) where a defect of
detectability d' sits (the d' the exporter writes into each sidecar label, `synth/
detectability.rs`) and N(0, 1) at every other site. It ranks all its scores over all frames, as
mAP does. A score counts as a true positive when its defect is labelled (d' at or above the
threshold the set was exported with, or every defect with `--all-defects`); grain boundaries are
taken as found perfectly (AP 1). The observer knows the background exactly and meets shot and
read noise only, so real clutter (amorphous layers, thickness, scan tears) costs it nothing: its
score bounds every detector's from above.

    defect-detector export --out .work/test-big-d5 --n 400 --seed 20261205 --size 384 \\
        --augment none --split 0,0,1 --sampling independent --min-detectability 5
    python training/ideal_observer.py .work/test-big-d5                 # the d' >= 5 labels
    python training/ideal_observer.py .work/test-big-d5 --all-defects   # every defect labelled

Needs an export made with `--min-detectability` (its sidecars carry every defect's d').
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss_budget import ap101  # noqa: E402

POINT_CLASSES = ("vacancy", "interstitial")


def read_frames(ds):
    """Per frame: column and channel site counts, and each point defect's d' by class."""
    frames = []
    for path in sorted(glob.glob(os.path.join(ds, "sidecars", "*.json"))):
        s = json.load(open(path))
        p = s["params"]
        cr = p["crystal"]["custom"]
        area = (p["width"] * p["pixel_size_pm"] / 100.0) * (p["height"] * p["pixel_size_pm"] / 100.0)
        cells = area / (cr["a_u"] * cr["b_v"])
        d = {c: [] for c in POINT_CLASSES}
        for lab in s["labels"]:
            if lab["class"] in d:
                if lab.get("detectability") is None:
                    sys.exit(f"{path}: a point label without d'; export with --min-detectability")
                d[lab["class"]].append(lab["detectability"])
        frames.append({"sites": {"vacancy": cells * len(cr["sites"]),
                                 "interstitial": cells * len(cr["interstitial_sites"])},
                       "d": d})
    if not frames:
        sys.exit(f"no sidecars in {ds}/sidecars: not a folder written by `defect-detector export`")
    return frames


def observer_ap(dprime, sites, threshold, rng):
    """AP50 of one class: defects score d' + N(0,1), empty sites N(0,1), ranked together."""
    dprime = np.asarray(dprime, float)
    labelled = dprime >= threshold
    if labelled.sum() == 0:
        return None
    null = rng.standard_normal(int(round(sites)))
    # Empty sites below 1 sigma rank under every defect that matters; leaving them out changes
    # nothing but the sort's cost.
    null = null[null > 1.0]
    score = np.concatenate([dprime + rng.standard_normal(len(dprime)), null])
    truth = np.concatenate([labelled, np.zeros(len(null), bool)])
    order = np.argsort(-score, kind="stable")
    tp = truth[order]
    tpc, fpc = np.cumsum(tp), np.cumsum(~tp)
    return ap101(tpc / labelled.sum(), tpc / np.maximum(tpc + fpc, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--min-detectability", type=float, default=5.0,
                    help="the labels' d' threshold (the export's --min-detectability)")
    ap.add_argument("--all-defects", action="store_true",
                    help="every defect labelled, whatever its d' (the realistic labels)")
    ap.add_argument("--repeats", type=int, default=20, help="noise draws averaged")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    frames = read_frames(a.dataset)
    threshold = -np.inf if a.all_defects else a.min_detectability
    rng = np.random.default_rng(a.seed)
    per_class = {c: [] for c in POINT_CLASSES}
    for _ in range(a.repeats):
        for c in POINT_CLASSES:
            d = np.concatenate([np.asarray(f["d"][c], float) for f in frames])
            sites = sum(f["sites"][c] for f in frames)
            v = observer_ap(d, sites, threshold, rng)
            if v is not None:
                per_class[c].append(v)
    aps = {c: float(np.mean(v)) for c, v in per_class.items() if v}
    m = float(np.mean([1.0] + list(aps.values())))
    counts = {c: {"defects": int(sum(len(f["d"][c]) for f in frames)),
                  "labelled": int(sum(int(np.sum(np.asarray(f["d"][c]) >= threshold)) for f in frames))}
              for c in POINT_CLASSES}
    out = {"frames": len(frames), "labels": "every defect" if a.all_defects
           else f"d' >= {a.min_detectability:g}", "map50": m, "ap50": aps, "counts": counts,
           "repeats": a.repeats}
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{len(frames)} frames, labels: {out['labels']}; ideal observer (matched filter, "
          f"shot and read noise only, boundaries perfect), {a.repeats} noise draws")
    for c in POINT_CLASSES:
        if c in aps:
            print(f"  {c:<13} {counts[c]['labelled']:>5} labelled of {counts[c]['defects']:>5}   AP50 {aps[c]:.4f}")
    print(f"  mAP50 {m:.4f}")


if __name__ == "__main__":
    main()
