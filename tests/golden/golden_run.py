"""The golden regression run: a tiny fixture sweep whose ``summary.json`` results, ``per_alpha.csv`` and predictions
are compared with committed files in ``tests/golden/expected/`` (peft's ``tests/regression/`` idea).

Everything is built here from fixed seeds (tiny BERT classifiers from a config, synthetic CSV suites), so the run
needs no network and no file outside this folder. The expected files change only by an explicit command::

    python tests/golden/golden_run.py --regenerate

Run that only when a change of numbers is intended, and say why in the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
sys.path.insert(0, str(HERE.parent))  # conftest's model and suite builders

#: summary.json keys compared (versions, command lines and timings are not results)
SUMMARY_KEYS = ("points", "results", "ensemble", "selection", "bootstrap", "suites")
OPTIONS = dict(n_resamples=50, seed=0, report=False, progress=False, use_store=False)


def build_inputs(root: Path) -> tuple[Path, Path, list[Path]]:
    """Write the tiny base/adapted pair and three suites (ID, natural shift, synthetic typos) under ``root``."""
    from conftest import make_tiny_bert, synth_rows, write_csv

    labels = {0: "negative", 1: "positive"}
    base = make_tiny_bert(root / "base", seed=11, id2label=labels)
    adapted = make_tiny_bert(root / "adapted", seed=12, id2label=labels, base_dir=base, noise=0.08)
    write_csv(root / "id.csv", synth_rows(120, 21))
    write_csv(root / "shift.csv", synth_rows(100, 22, vocab_bias=0.25))
    head = "classes: [negative, positive]\nsplits:\n  - {name: validation, role: validation, fraction: 0.5}\n" \
           "  - {name: test, role: test, fraction: 0.5}\nmax_length: 32\n"
    (root / "id.yaml").write_text("kind: suite\nname: golden-id\nrole: id\nsource: {type: local, files: [id.csv]}\n"
                                  + head + "metrics: [accuracy, macro_f1, balanced_accuracy, nll, ece]\n")
    (root / "shift.yaml").write_text("kind: suite\nname: golden-shift\nrole: shift\nshift_type: natural\n"
                                     "source: {type: local, files: [shift.csv]}\n" + head
                                     + "metrics: [accuracy, macro_f1, nll, ece]\n")
    (root / "typos.yaml").write_text(
        "kind: suite\nname: golden-typos\nrole: shift\nshift_type: synthetic\n"
        "derived_from: {suite: golden-id, splits: [validation, test]}\n"
        "transforms: [{name: typos, params: {rate: 0.15}, seed: 5}]\nclasses: [negative, positive]\n"
        "max_length: 32\nmetrics: [accuracy, nll]\n")
    return base, adapted, [root / "id.yaml", root / "shift.yaml", root / "typos.yaml"]


def run(root: Path) -> Path:
    """Build the inputs and run the sweep (default 11-point grid) into ``root/run``; return the run directory."""
    import harness.api as api

    base, adapted, suites = build_inputs(root)
    out = root / "run"
    api.run_sweep(base, adapted, suites, out=out, **OPTIONS)
    return out


def canonical(run_dir: Path) -> dict[str, object]:
    """The compared content of a run directory: summary keys, per_alpha rows and prediction rows."""
    summary = json.loads((run_dir / "summary.json").read_text())
    per_alpha = pd.read_csv(run_dir / "per_alpha.csv")
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    preds = preds.assign(logits=[list(map(float, v)) for v in preds["logits"]])
    return {"summary": {k: summary[k] for k in SUMMARY_KEYS},
            "per_alpha": per_alpha.to_dict(orient="records"),
            "predictions": preds.to_dict(orient="records")}


def write_expected(run_dir: Path) -> None:
    EXPECTED.mkdir(parents=True, exist_ok=True)
    got = canonical(run_dir)
    for name, content in got.items():
        (EXPECTED / f"{name}.json").write_text(json.dumps(content, indent=1, sort_keys=True, allow_nan=True) + "\n")


def read_expected() -> dict[str, object]:
    return {name: json.loads((EXPECTED / f"{name}.json").read_text())
            for name in ("summary", "per_alpha", "predictions")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--regenerate", action="store_true", help="rewrite tests/golden/expected/ from a fresh run")
    args = p.parse_args(argv)
    if not args.regenerate:
        p.error("nothing to do: pass --regenerate (the comparison runs under pytest)")
    os.environ.setdefault("HARNESS_CACHE", tempfile.mkdtemp(prefix="harness-golden-cache-"))
    with tempfile.TemporaryDirectory() as d:
        write_expected(run(Path(d)))
    print(f"wrote {EXPECTED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
