"""Fits the lattice analysis' point-defect confidence (`lattice::points::confidence`).

Runs `defect-detector lattice --json` on every test frame of exported datasets (each with its
own crystal, read from its sidecar; no pixel size, as `eval` and `detect` read PNG frames),
marks each vacancy/interstitial finding true when its centre lies in a label box of its class,
and fits per class a logistic in (1, ln sigmas, departure) by maximum likelihood (Newton).
With --check, prints the reliability of given coefficients on other datasets instead.

    python training/fit_lattice_point_confidence.py .work/val-r3 .work/test-r3
    python training/fit_lattice_point_confidence.py --check .work/cal-r3

The coefficients printed go into `src/lattice/points.rs` by hand, with the data they came from.
"""
import argparse
import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "defect-detector"
NAMES = {0: "grain_boundary", 1: "vacancy", 2: "interstitial"}
SHIPPED = {"vacancy": [-7.782, 0.569, 6.937], "interstitial": [-3.418, 1.490, 0.624]}


def inside(poly, p):
    sign = None
    for i in range(4):
        a, b = poly[i], poly[(i + 1) % 4]
        c = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
        if abs(c) < 1e-12:
            continue
        if sign is None:
            sign = c > 0
        elif (c > 0) != sign:
            return False
    return True


def findings(ds: Path):
    rows = []
    for im in sorted((ds / "images" / "test").iterdir()):
        base = im.name.split("_")[0]
        side = json.loads((ds / "sidecars" / f"{base}.json").read_text())
        crystal = side["params"]["crystal"]["preset"]
        r = subprocess.run([str(BIN), "lattice", "--json", "--crystal", crystal, str(im)],
                           capture_output=True, text=True, env=os.environ)
        if r.returncode != 0:
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        w, h = Image.open(im).size
        labels = []
        for line in (ds / "labels" / "test" / f"{im.stem}.txt").read_text().splitlines():
            v = line.split()
            if v:
                pts = [(float(v[1 + 2 * k]) * w, float(v[2 + 2 * k]) * h) for k in range(4)]
                labels.append((NAMES[int(v[0])], pts))
        used = set()
        for d in res["point_defects"]:
            c = (d["obb"]["cx"], d["obb"]["cy"])
            hit = next((j for j, (cls, pts) in enumerate(labels)
                        if cls == d["class"] and j not in used and inside(pts, c)), None)
            if hit is not None:
                used.add(hit)
            rows.append((d["class"], d["sigmas"], d["departure"], hit is not None))
    return rows


def design(rows, cls):
    sel = [r for r in rows if r[0] == cls]
    x = np.array([[1.0, np.log(r[1]), r[2]] for r in sel])
    y = np.array([r[3] for r in sel], float)
    return x, y


def reliability(x, y, w):
    p = 1 / (1 + np.exp(-x @ np.asarray(w)))
    for lo in np.arange(0, 1, 0.2):
        m = (p >= lo) & (p < lo + 0.2)
        if m.sum():
            print(f"  confidence {lo:.1f}-{lo + 0.2:.1f}: {m.sum():4d} findings, mean {p[m].mean():.2f}, "
                  f"precision {y[m].mean():.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--check", action="store_true", help="reliability of the shipped coefficients")
    a = ap.parse_args()
    rows = [r for ds in a.datasets for r in findings(ds)]
    for cls in ("vacancy", "interstitial"):
        x, y = design(rows, cls)
        print(f"{cls}: {len(y)} findings, precision {y.mean():.3f}")
        if a.check:
            reliability(x, y, SHIPPED[cls])
            continue
        w = np.zeros(3)
        for _ in range(100):
            p = 1 / (1 + np.exp(-x @ w))
            grad = x.T @ (y - p)
            hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(3)
            w += np.linalg.solve(hess, grad)
        print(f"  coefficients (1, ln sigmas, departure): {np.round(w, 3).tolist()}")
        reliability(x, y, w)


if __name__ == "__main__":
    main()
