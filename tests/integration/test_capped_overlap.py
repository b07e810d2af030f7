"""The train/test overlap check of a capped run (``--max-examples``) reads the ID train split whole: a sample of it
would undercount the evaluated rows it holds, and a ``max_overlap`` gate rule could pass on partial data (second
review, 2026-12-01)."""

from __future__ import annotations

import json

from conftest import synth_rows, write_csv
from harness.cli import main


def test_a_capped_run_checks_overlap_against_the_whole_train_split(tiny_pair, tmp_path):
    rows = synth_rows(200, 7)
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "val.csv", synth_rows(60, 8))
    write_csv(tmp_path / "test.csv", rows[-60:])  # every test row is also a train row, near the end of the file
    (tmp_path / "id.yaml").write_text(
        "kind: suite\nname: dup-id\nrole: id\nsource: {type: local, files: [train.csv]}\n"
        "classes: [negative, positive]\nsplits:\n  - {name: train, role: train, files: [train.csv]}\n"
        "  - {name: validation, role: validation, files: [val.csv]}\n"
        "  - {name: test, role: test, files: [test.csv]}\nmax_length: 32\nmetrics: [accuracy]\n")
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 str(tmp_path / "id.yaml"), "--alphas", "0,1", "--select", "id-only", "--max-examples", "20",
                 "--n-resamples", "50", "--no-report", "--quiet", "--out", str(out)]) == 0
    overlap = {(e["a"], e["b"]): e for e in json.loads((out / "summary.json").read_text())["overlap"]}
    test = overlap["dup-id/train", "dup-id/test"]
    assert test["n_a"] == 200 and test["n_b"] <= 20  # the train split whole, the evaluated split capped
    assert test["by_text"] == test["n_b"] and test["fraction"] == 1.0, test
