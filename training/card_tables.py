"""Print a model card's measured figures as the Markdown tables the README's model section shows,
so no figure there is typed by hand: every number below is read from the card that `train.py`,
`eval --write-card`, `eval-real --write-card` and `realism --write-card` wrote.

    python3 training/card_tables.py models/cdte-yolo11n-obb.json [--against OTHER.json]

`--against` adds the other card's mAP50 / mAP50-95 beside each synthetic row (e.g. the model
shipped before), which is how a stage is compared before it replaces the shipped one.
Standard library only (runs outside the training venv).
"""
import argparse
import json
import sys

# Card keys of the synthetic test sets, in the README's order, with how each was scored.
SYNTHETIC_ROWS = [
    ("synthetic_test", "realistic", "as drawn (Ultralytics val)"),
    ("synthetic_test_fitted", "realistic", "finished"),
    ("synthetic_test_tta_fitted", "realistic", "`--tta` + finished"),
    ("synthetic_test_both_fitted", "realistic", "`both`, finished"),
    ("synthetic_test_both_tta_fitted", "realistic", "`both`, `--tta` + finished"),
    ("synthetic_test_large_tta_fitted", "realistic, 400 frames", "`--tta` + finished"),
    ("synthetic_test_detectable", "d′ ≥ 5", "as drawn (Ultralytics val)"),
    ("synthetic_test_detectable_fitted", "d′ ≥ 5", "finished"),
    ("synthetic_test_detectable_tta_fitted", "d′ ≥ 5", "`--tta` + finished"),
    ("synthetic_test_detectable_fitted_calibrated", "d′ ≥ 5",
     "finished, calibrated as the app feeds it (`--calibrated`)"),
    ("synthetic_test_detectable_tta_fitted_calibrated", "d′ ≥ 5",
     "`--tta` + finished, calibrated as the app feeds it (`--calibrated`)"),
    ("synthetic_test_detectable_fitted_dont_care", "d′ ≥ 5", "finished, hidden defects don't care"),
    ("synthetic_test_detectable_tta_fitted_dont_care", "d′ ≥ 5",
     "`--tta` + finished, hidden defects don't care"),
    ("synthetic_test_detectable_both_fitted", "d′ ≥ 5", "`both`, finished"),
    ("synthetic_test_detectable_both_tta_fitted", "d′ ≥ 5", "`both`, `--tta` + finished"),
    ("synthetic_test_detectable_large_tta_fitted", "d′ ≥ 5, 400 frames", "`--tta` + finished"),
    ("synthetic_test_detectable_large_tta_fitted_dont_care", "d′ ≥ 5, 400 frames",
     "`--tta` + finished, hidden defects don't care"),
    ("synthetic_test_detectable_large_fitted_calibrated", "d′ ≥ 5, 400 frames",
     "finished, calibrated as the app feeds it (`--calibrated`)"),
    ("synthetic_test_detectable_large_tta_fitted_calibrated", "d′ ≥ 5, 400 frames",
     "`--tta` + finished, calibrated as the app feeds it (`--calibrated`)"),
    ("synthetic_test_previous_recipe", "previous recipe", "as drawn (Ultralytics val)"),
    ("synthetic_test_previous_recipe_fitted", "previous recipe", "finished"),
    ("synthetic_test_previous_recipe_tta_fitted", "previous recipe", "`--tta` + finished"),
]

REAL_ROWS = [
    ("real_frames", "`both`"),
    ("real_frames_tta", "`both`, `--tta`"),
    ("real_frames_as_cdte110", "`both`, read as CdTe"),
    ("real_frames_as_cdte110_tta", "`both`, read as CdTe, `--tta`"),
]


def report(card, key):
    entry = card.get(key)
    if not isinstance(entry, dict):
        return None
    rep = entry.get("report")
    if not isinstance(rep, dict) or "metrics" not in rep:
        return None
    return rep


def synthetic_table(card, other):
    head = "| test set | scored | mAP50 | mAP50-95 | boundary | vacancy | interstitial (mAP50) |"
    if other is not None:
        head += " other card |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, test_set, how in SYNTHETIC_ROWS:
        rep = report(card, key)
        if rep is None:
            continue
        m = rep["metrics"]
        per = {c["name"]: c["map50"] for c in rep.get("per_class", [])}
        # With a bootstrap over frames (`eval --bootstrap`), its 95 % interval beside each mAP.
        ci = rep.get("bootstrap") or {}

        def with_ci(value, key):
            iv = ci.get(key)
            return f"{value:.3f} ({iv['lo']:.3f}–{iv['hi']:.3f})" if iv else f"{value:.3f}"

        cells = [test_set, how, with_ci(m["mAP50"], "map50"), with_ci(m["mAP50-95"], "map50_95")]
        cells += [f"{per[n]:.3f}" if n in per else "–"
                  for n in ("grain_boundary", "vacancy", "interstitial")]
        if other is not None:
            o = report(other, key)
            cells.append(f"{o['metrics']['mAP50']:.3f} / {o['metrics']['mAP50-95']:.3f}"
                         if o else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_table(card):
    lines = ["| detector | " + " | ".join(["frame", "found", "other boundary boxes",
                                            "unscored point boxes", "target"]) + " |",
             "|---|---|---|---|---|---|"]
    for key, label in REAL_ROWS:
        entry = card.get(key)
        if not isinstance(entry, dict) or "frames" not in entry:
            continue
        met = {t["what"].split(":")[0]: t for t in entry.get("targets", [])}
        for f in entry["frames"]:
            found = sum(1 for b in f.get("boundaries", []) if b.get("found"))
            unscored = ", ".join(f"{n} {c}" for n, c in sorted(f.get("unscored", {}).items()))
            t = met.get(f["image"])
            verdict = ("met" if t["met"] else "**not met**") if t else "–"
            lines.append(f"| {label} | {f['image']} | {found}/{len(f.get('boundaries', []))} | "
                         f"{f.get('boundary_false_positives', 0)} | {unscored or '–'} | {verdict} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("card", help="model card (models/NAME.json)")
    ap.add_argument("--against", help="another card whose synthetic figures go beside")
    a = ap.parse_args()
    try:
        with open(a.card) as f:
            card = json.load(f)
        other = None
        if a.against:
            with open(a.against) as f:
                other = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: {e}")
    print(f"Synthetic test sets ({a.card}):\n")
    print(synthetic_table(card, other))
    print(f"\nReal frames ({a.card}, confidence {card.get('real_frames', {}).get('conf', '?')}):\n")
    print(real_table(card))


if __name__ == "__main__":
    main()
