"""Compare the results of two run directories: ``python tests/golden/compare_runs.py RUN_A RUN_B``.

Prints, for the summary's result keys (points, results, ensemble, selection, bootstrap, suites), whether they are
identical; whether predictions.parquet holds the same rows byte for byte (sorted by point, suite, split, example);
and whether per_alpha.csv is identical. Used to show that a refactor changed no number (e.g. the quick demo before
and after, with ``harness demo --no-store``). Exit 0 when everything is identical, else 1.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

KEYS = ("points", "results", "ensemble", "selection", "bootstrap", "suites")


def _bytes(v):
    return v.tobytes() if hasattr(v, "tobytes") else v


def main(a: str, b: str) -> int:
    sa, sb = (json.load(open(f"{d}/summary.json")) for d in (a, b))
    same = True
    for k in KEYS:
        eq = json.dumps(sa.get(k), sort_keys=True) == json.dumps(sb.get(k), sort_keys=True)
        same &= eq
        print(k, "identical" if eq else "DIFFERENT")
    key = ["point", "suite", "split", "example_id"]
    pa, pb = (pd.read_parquet(f"{d}/predictions.parquet").sort_values(key).reset_index(drop=True) for d in (a, b))
    eq = list(pa.columns) == list(pb.columns) and len(pa) == len(pb) and all(
        (pa[c].map(_bytes) == pb[c].map(_bytes)).all() for c in pa.columns)
    same &= eq
    print("predictions", "byte-identical" if eq else "DIFFERENT", len(pa), "rows")
    eq = open(f"{a}/per_alpha.csv").read() == open(f"{b}/per_alpha.csv").read()
    same &= eq
    print("per_alpha.csv", "identical" if eq else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
