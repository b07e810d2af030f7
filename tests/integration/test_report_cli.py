"""Through the CLI: ``sweep --gate`` names every failed rule with its numbers (issue 19 item 4), and dataset
text reaches report.html only on request (``report --examples``, ``sweep --report-examples``; issue 19 item 6)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from harness.cli import main

POLICY = """kind: policy
name: strict
candidate: chosen
n_resamples: 200
rules:
  - {name: id_gain, kind: delta, metric: accuracy, suites: id, reference: base, min_delta: 0.5}
  - {name: big_enough, kind: delta, metric: accuracy, suites: shift, reference: base, max_drop: 0.05,
     min_n: 100000}
"""


@pytest.fixture(scope="module")
def gated(tiny_pair, tiny_suites, tmp_path_factory):
    root = tmp_path_factory.mktemp("gated")
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    out = root / "run"
    return policy, out, ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                         *map(str, tiny_suites[:2]), "--alphas", "0,0.5,1", "--gate", str(policy), "--out",
                         str(out), "--n-resamples", "200"]


def test_sweep_gate_prints_each_failed_rule(gated, capsys):
    policy, out, argv = gated
    assert main(argv + ["--no-report"]) == 1
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("FAIL ")]
    assert any(ln.strip().startswith("FAIL id_gain (accuracy) on tiny-id/test: value=") and "threshold=0.5000" in ln
               for ln in lines), text
    big = next(ln for ln in lines if "big_enough" in ln)
    assert "threshold=-0.0500" in big and "min_n" in big
    assert re.search(r" n=\d+: n = \d+ examples is below min_n", big), big  # CI trial: the count is shown
    assert text.rstrip().splitlines()[-1].startswith("gate: FAIL")  # the one-line verdict stays last
    ET.parse(out / "junit.xml")


@pytest.mark.slow  # three sweeps and three report renders
def test_examples_only_on_request(gated, tiny_suites, capsys):
    _, out, argv = gated
    assert main(argv + ["--quiet"]) == 1
    assert main(["report", str(out), "--quiet"]) == 0
    assert "Largest negative flips" not in (out / "report.html").read_text()
    assert main(["report", str(out), "--examples", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "Largest negative flips" in page
    texts = pd.read_csv(tiny_suites[0].parent / "id.csv")["text"]
    assert any(t in page for t in texts), "no dataset sentence shown"
    assert "Largest negative flips" not in (out / "report.md").read_text()  # never in Markdown
    assert main(argv + ["--quiet", "--report-examples"]) == 1
    assert "Largest negative flips" in (out / "report.html").read_text()


def test_examples_of_a_capped_run_are_read_from_the_same_sample(tiny_pair, tiny_suites, tmp_path, caplog):
    """CI-integration trial (2026-12-01): on a ``--max-examples`` run (the demo's quick profile too) every split
    was called "changed since the run" and no text was shown: the report read the whole split, whose fingerprint
    differs from the scored sample's. It now reads the suites as the run did (the same seeded cap, and the run's
    --max-length, which is part of a split's fingerprint), so the texts appear. A derived suite whose parent is
    not in the run (read from the file beside it) is capped through its parent, in the sweep and in the report."""
    import shutil

    from harness.report.texts import _split_texts
    from harness.rundir import read_manifest

    root = tmp_path / "suites"
    shutil.copytree(tiny_suites[0].parent, root)
    (root / "shift-typos.yaml").write_text(
        "kind: suite\nname: tiny-shift-typos\nrole: shift\nshift_type: synthetic\n"
        "derived_from: {suite: tiny-shift, splits: [validation, test]}\n"
        "transforms: [{name: typos, params: {rate: 0.1}, seed: 3}]\nclasses: [negative, positive]\n"
        "max_length: 32\nmetrics: [accuracy, nll]\n")
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 str(root / "id.yaml"), str(root / "shift-typos.yaml"), "--alphas", "0,1", "--max-examples", "30",
                 "--max-length", "16", "--n-resamples", "50", "--no-report", "--quiet", "--out", str(out)]) == 0
    preds = pd.read_parquet(out / "predictions.parquet")
    sizes = preds.groupby(["point", "suite", "split"]).size()
    assert sizes.max() <= 30 and set(preds["suite"]) == {"tiny-id", "tiny-shift-typos"}, sizes  # 60-80 uncapped
    with caplog.at_level("WARNING"):
        texts = _split_texts(read_manifest(out))
    assert "changed since the run" not in caplog.text, caplog.text
    for (suite, split), rows in preds.groupby(["suite", "split"]):
        text, _ = texts[(suite, split)]
        assert set(rows["example_id"]) <= set(text.index)
