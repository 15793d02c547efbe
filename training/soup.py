"""Average the weights of several fine-tuned checkpoints of one model ("model soup",
Wortsman et al. 2022; checkpoint averaging as in SWA).

Every stage since the first fine-tunes the last, so the stages lie in one basin of the loss, and
their mean is a flatter point than any of them: on this project's validation sets the mean of
stages 15, 16 and 19 scored above each of them (training/README, "Stage 20").

    python training/soup.py OUT.pt 1 a.pt 2 b.pt 1 c.pt

writes OUT.pt, an Ultralytics checkpoint (the first input's, with the averaged weights as its
`model`, no EMA or optimizer state) that `train.py --weights OUT.pt` finalizes like a trained one
and `train.py --from OUT.pt` fine-tunes. The ingredients and their weights are recorded in the
checkpoint under `soup`, and `train.py` copies them into the model card.
"""
import argparse
import copy
import hashlib
import os
import sys
from pathlib import Path


def parse_pairs(items):
    if len(items) < 4 or len(items) % 2:
        raise SystemExit("give WEIGHT CHECKPOINT pairs, at least two")
    pairs = []
    for i in range(0, len(items), 2):
        try:
            w = float(items[i])
        except ValueError:
            raise SystemExit(f"not a weight: {items[i]!r} (give WEIGHT CHECKPOINT pairs)")
        if not w > 0:
            raise SystemExit(f"weights must be positive: {items[i]}")
        pairs.append((w, Path(items[i + 1])))
    return pairs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the averaged checkpoint to write (.pt)")
    ap.add_argument("pairs", nargs="+", help="WEIGHT CHECKPOINT.pt pairs")
    a = ap.parse_args()
    pairs = parse_pairs(a.pairs)
    for _, p in pairs:
        if not p.is_file():
            raise SystemExit(f"no such checkpoint: {p}")

    import torch

    total = sum(w for w, _ in pairs)
    base = model = acc = None
    keys = None
    for w, p in pairs:
        ck = torch.load(p, map_location="cpu", weights_only=False)
        # Ultralytics keeps the EMA weights (the ones it validates) under "ema" while training
        # and moves them to "model" when a run ends.
        net = (ck.get("ema") or ck["model"]).float()
        sd = net.state_dict()
        if keys is None:
            base, model, keys = ck, net, list(sd)
            acc = {k: (v.float() * (w / total) if v.is_floating_point() else v.clone()) for k, v in sd.items()}
            continue
        if list(sd) != keys or any(sd[k].shape != acc[k].shape for k in keys):
            raise SystemExit(f"{p} is not the same architecture as {pairs[0][1]}")
        for k, v in sd.items():
            # Integer buffers (BatchNorm's batch counter) are kept from the first checkpoint.
            if v.is_floating_point():
                acc[k] += v.float() * (w / total)
    model.load_state_dict(acc)
    base["model"] = copy.deepcopy(model).half()
    base["ema"] = None
    base["optimizer"] = None
    base["soup"] = [{"weight": w / total, "checkpoint": str(p), "sha256": sha256(p)} for w, p in pairs]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    torch.save(base, tmp)
    os.replace(tmp, out)
    for s in base["soup"]:
        print(f"{s['weight']:.3f}  {s['checkpoint']}")
    print(f"-> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
