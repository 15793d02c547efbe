"""A stand-in for the one polars call Ultralytics makes while training, for machines without
polars (its runtime wheel is 40 MB, more than a GPU lease can carry beside the project).

Ultralytics reads its own results.csv with `pl.read_csv(path, infer_schema_length=None)
.to_dict(as_series=False)` to store the metrics in each checkpoint; everything else it does
with polars (plots, exports of tables) is switched off in `train.py` (plots=False)."""

import csv
import sys
import types


class _Frame:
    def __init__(self, columns):
        self._columns = columns

    def to_dict(self, as_series=True):
        return {k: list(v) for k, v in self._columns.items()}


def _number(s):
    try:
        f = float(s)
    except ValueError:
        return s
    return int(f) if f.is_integer() and "." not in s and "e" not in s.lower() else f


def read_csv(path, **_):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]]
    cols = {h: [] for h in head}
    for r in rows[1:]:
        for h, v in zip(head, r):
            cols[h].append(_number(v.strip()))
    return _Frame(cols)


def install():
    """Registers the stand-in as `polars` unless the real one imports."""
    try:
        import polars  # noqa: F401
    except ImportError:
        mod = types.ModuleType("polars")
        mod.read_csv = read_csv
        sys.modules["polars"] = mod
