#!/usr/bin/env python3
"""Train yolo11n-obb on a dataset exported by `defect-detector export`, fully offline, export
ONNX with the metadata the app reads (class names, input size, nominal pixel size) and write a
model card next to it.

    python training/train.py --data DATASET/data.yaml --name cdte-obb --epochs 30 --imgsz 640 \
        --nm-per-px 0.02 --out models/

See training/README.md for CPU and GPU recipes.
"""
import argparse
import json
import subprocess
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".work" / "ultralytics"


def offline_env():
    import polars_shim

    polars_shim.install()
    # Ultralytics probes the network and writes to $HOME unless told otherwise.
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(WORK / "config"))
    os.environ.setdefault("MPLCONFIGDIR", str(WORK / "mpl"))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    font = font_dir / "Arial.ttf"
    if not font.exists():
        import matplotlib

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copy(src, font)


def add_metadata(onnx_path: Path, extra: dict):
    import onnx

    m = onnx.load(str(onnx_path))
    keep = [p for p in m.metadata_props if p.key not in extra]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in extra.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    tmp = onnx_path.with_suffix(".onnx.tmp")
    onnx.save(m, str(tmp))
    tmp.replace(onnx_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data.yaml of an exported dataset")
    ap.add_argument("--name", default="cdte-yolo11n-obb")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu, 0 (first GPU), ...")
    ap.add_argument("--nm-per-px", type=float, required=True, help="nominal pixel size the model expects (nm/px)")
    ap.add_argument("--out", default=str(ROOT / "models"))
    ap.add_argument("--nm-per-px-range", default="0.006,0.03",
                    help="LO,HI: the pixel sizes (nm/px) the training frames were drawn from (the recipe's "
                         "pixel_size_pm span; dr-realistic.json: 6-30 pm). The app also runs a calibrated "
                         "frame inside this span as sampled and fuses the boxes; empty: never")
    ap.add_argument("--recipe", default="", help="free text or JSON describing how the data was made")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crystal", default="cdte110",
                    help="crystal the training realism ranges are measured with (cdte110, si110, gaas110)")
    ap.add_argument("--realism-data", metavar="DIR",
                    help="exported dataset folder whose training images the card's realism ranges "
                    "are measured on (default: the folder of --data); for a data.yaml that lists "
                    "the train folders of several exports of one recipe, name one of them")
    ap.add_argument("--patience", type=int, default=100)
    ap.add_argument("--lr0", type=float, default=None,
                    help="AdamW at this initial learning rate instead of Ultralytics' automatic choice "
                    "(for a fine-tune that should move the weights less than a fresh start)")
    ap.add_argument("--time", type=float, default=None,
                    help="training budget in hours; overrides --epochs and fits the LR schedule to it")
    ap.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability (last 10 epochs run without)")
    ap.add_argument("--scale", type=float, default=0.25,
                    help="random zoom gain; small because the exporter already randomizes the pixel size")
    ap.add_argument("--weights", help="skip training: validate and export these weights (best.pt)")
    ap.add_argument("--run", help="with --weights: the training run (its folder name under "
                    ".work/ultralytics/runs) whose epochs and time go into the card; default --name")
    ap.add_argument("--test-data", help="dataset folder with a test split from unseen seeds: scored by "
                    "`defect-detector eval` into the card (synthetic_test)")
    ap.add_argument("--test-data-detectable", help="the same test set exported with "
                    "--min-detectability (only the point defects the dose shows): scored into the "
                    "card as synthetic_test_detectable")
    ap.add_argument("--train-only", action="store_true",
                    help="stop after training (no val, export or card): a GPU lease returns "
                    "best.pt and the card is written here with --weights")
    ap.add_argument("--static", action="store_true",
                    help="export a fixed imgsz x imgsz input (default: dynamic, whole frames in one pass)")
    ap.add_argument("--from", dest="init", metavar="WEIGHTS.pt",
                    help="start from these weights instead of a random init (fine-tune, e.g. on an "
                         "`export --like` dataset: --from models/cdte-yolo11n-obb.pt)")
    a = ap.parse_args()

    offline_env()
    from ultralytics import YOLO
    import ultralytics
    import torch

    runs = WORK / "runs"
    t0 = time.time()
    if a.weights:
        best = Path(a.weights)
        train_s = None
    else:
        best = train(a, runs, YOLO)
        train_s = time.time() - t0
        if a.train_only:
            print(f"trained in {train_s:.0f} s: {best}")
            return
    finish(a, runs, best, train_s, YOLO, ultralytics, torch)


def train(a, runs, YOLO):
    # Architecture only (random init, no weight download), or the weights to fine-tune.
    model = YOLO(a.init) if a.init else YOLO("yolo11n-obb.yaml")
    model.train(
        data=a.data, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, device=a.device,
        workers=0 if a.device == "cpu" else 8, amp=a.device != "cpu", seed=a.seed, deterministic=True,
        project=str(runs), name=a.name, exist_ok=True, plots=False, patience=a.patience,
        # Microscope images have no preferred orientation or handedness.
        flipud=0.5, fliplr=0.5, degrees=0.0, mosaic=a.mosaic, scale=a.scale, hsv_h=0.0, hsv_s=0.0, hsv_v=0.3,
        **({"time": a.time} if a.time else {}),
        **({"optimizer": "AdamW", "lr0": a.lr0} if a.lr0 else {}),
    )
    return runs / a.name / "weights" / "best.pt"


def training_seconds(run_dir: Path):
    # Ultralytics' results.csv records the cumulative training time per epoch ("time"), so a
    # card written later with --weights still states how long training took.
    csv = run_dir / "results.csv"
    if not csv.exists():
        return None
    lines = csv.read_text().strip().splitlines()
    head = [h.strip() for h in lines[0].split(",")]
    if "time" not in head or len(lines) < 2:
        return None
    return float(lines[-1].split(",")[head.index("time")])


def epochs_run(run_dir: Path):
    # With --time Ultralytics picks the epoch count itself; results.csv has one row per epoch.
    csv = run_dir / "results.csv"
    if not csv.exists():
        return None
    return max(0, len(csv.read_text().strip().splitlines()) - 1)


def finish(a, runs, best, train_s, YOLO, ultralytics, torch):
    trained = YOLO(str(best))
    metrics = trained.val(data=a.data, imgsz=a.imgsz, batch=a.batch, device=a.device, plots=False,
                          project=str(runs), name=a.name + "-val", exist_ok=True)
    # A dynamic input lets the app run whole frames (up to 1024 px) in one pass instead of
    # tiles of the training size; imgsz stays in the metadata as the training size.
    onnx_file = Path(trained.export(format="onnx", imgsz=a.imgsz, opset=17, simplify=True,
                                    dynamic=not a.static))
    meta = {"nm_per_px": a.nm_per_px, "training_data": a.recipe[:2000]}
    if a.nm_per_px_range:
        meta["nm_per_px_range"] = a.nm_per_px_range
    add_metadata(onnx_file, meta)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"{a.name}.onnx"
    shutil.copy(onnx_file, dst)
    # The PyTorch weights beside the ONNX, so users can fine-tune (train.py --from).
    shutil.copy(best, out / f"{a.name}.pt")
    names = trained.names
    # A weight average (training/soup.py) records its ingredients in its checkpoint.
    soup = (trained.ckpt or {}).get("soup")
    card = {
        "name": a.name,
        "file": dst.name,
        "architecture": "yolo11n-obb (Ultralytics), "
        + (f"the weight average of {len(soup)} checkpoints (training/soup.py)" if soup
           else f"fine-tuned from {rel(Path(a.init))}" if a.init else "trained from scratch")
        + " on synthetic data only",
        "weights": f"{a.name}.pt",
        "dynamic_input": not a.static,
        "classes": [names[i] for i in sorted(names)],
        "input_size": a.imgsz,
        "nm_per_px": a.nm_per_px,
        "nm_per_px_range": [float(v) for v in a.nm_per_px_range.split(",")] if a.nm_per_px_range else None,
        "training_data": a.recipe,
        "dataset_yaml": str(a.data),
        "epochs": epochs_run(runs / (a.run or a.name)) or a.epochs,
        "time_budget_h": a.time,
        "augmentation": {"mosaic": a.mosaic, "scale": a.scale, "flipud": 0.5, "fliplr": 0.5, "hsv_v": 0.3},
        "batch": a.batch,
        "optimizer": {"name": "AdamW", "lr0": a.lr0} if a.lr0 else "auto",
        "seed": a.seed,
        "training_time_s": round(train_s, 1) if train_s is not None else training_seconds(runs / (a.run or a.name)),
        "hardware": {
            "device": a.device,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and a.device != "cpu" else None,
        },
        "software": {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "ultralytics_val_on_val_split": {
            "mAP50": float(metrics.box.map50),
            "mAP50-95": float(metrics.box.map),
            "precision": float(metrics.box.mp),
            "recall": float(metrics.box.mr),
        },
    }
    if soup:
        card["soup"] = [{**s, "checkpoint": rel(Path(s["checkpoint"]))} for s in soup]
        if not a.run:
            # An average has no run of its own, and this script's training settings were never
            # used on it.
            card["epochs"] = card["training_time_s"] = None
            for k in ("time_budget_h", "augmentation", "batch", "optimizer", "seed"):
                card.pop(k)
    card_path = out / f"{a.name}.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_training_realism(card_path, Path(a.realism_data or Path(a.data).parent), a.crystal)
    if a.test_data:
        write_synthetic_test(card_path, dst, Path(a.test_data))
    if a.test_data_detectable:
        write_synthetic_test(card_path, dst, Path(a.test_data_detectable),
                             key="synthetic_test_detectable")
    write_real_frames(card_path, dst)
    print(card_path.read_text())


def write_training_realism(card_path: Path, dataset_dir: Path, crystal: str):
    """The realism statistics' 5-95 % ranges over the training images, measured by the Rust
    tool on the raw counts its sidecars regenerate, into the card (the Viewer's
    out-of-distribution warning reads them)."""
    subprocess.run([rust_tool(), "realism", "--against", str(dataset_dir), "--crystal", crystal,
                    "--write-card", str(card_path),
                    "--source", f"training images of {dataset_dir} (up to 200 base images)"],
                   check=True)


def rel(p: Path) -> str:
    """A path relative to the repository when it is inside it (cards travel)."""
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def rust_tool():
    return os.environ.get("DEFECT_DETECTOR", str(ROOT / "target/release/defect-detector"))


def write_synthetic_test(card_path: Path, model: Path, test_dir: Path, key="synthetic_test"):
    """Our evaluator on a test set from unseen seeds, recorded in the card under `key`."""
    subprocess.run([rust_tool(), "eval", "--model", str(model), str(test_dir), "--split", "test",
                    "--write-card", str(card_path), "--card-key", key], check=True)


def write_real_frames(card_path: Path, model: Path):
    """The labelled real frames (assets/real-set), recorded in the card as real_frames. Skipped,
    with a note, when the samples folder the set points at is absent."""
    set_file = ROOT / "assets" / "real-set" / "set.json"
    samples = (set_file.parent / json.loads(set_file.read_text())["samples"]).resolve()
    if not samples.is_dir():
        print(f"note: {samples} is absent; the card gets no real_frames", file=sys.stderr)
        return
    subprocess.run([rust_tool(), "eval-real", "--model", str(model), "--set", str(set_file),
                    "--write-card", str(card_path)], check=True)


if __name__ == "__main__":
    main()
