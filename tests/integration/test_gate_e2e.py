"""Through the CLI: a deliberately regressed adapted model fails the gate (exit 1), a good one passes (exit 0)."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main

POLICY = """kind: policy
name: e2e
candidate: adapted
n_resamples: 500
rules:
  - {name: id_no_regression, kind: delta, metric: accuracy, suites: id, reference: base, max_drop: 0.05}
  - {name: shift_no_regression, kind: delta, metric: accuracy, suites: shift, aggregate: worst, reference: base,
     max_drop: 0.05}
  - {name: few_flips, kind: negative_flips, suites: id, reference: base, max_rate: 0.1}
"""


def with_bias(src, dst, bias: tuple[float, float], noise: float = 0.0):
    """Copy a tiny checkpoint, set its classifier bias (which class it leans to) and add weight noise."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(src))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=g))
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    return dst


@pytest.fixture(scope="module")
def models(tiny_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("gate-models")
    # the tiny suites are mostly positive: the base leans positive, the regressed model leans negative
    base = with_bias(tiny_pair[0], root / "base", (-4.0, 4.0))
    good = with_bias(base, root / "good", (-4.0, 4.0), noise=1e-3)
    bad = with_bias(base, root / "bad", (4.0, -4.0))
    return base, good, bad


@pytest.mark.parametrize("which, code", [("good", 0), ("bad", 1)])
def test_regressed_model_fails_and_good_model_passes(models, tiny_suites, tmp_path, which, code):
    base, good, bad = models
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "run"
    adapted = good if which == "good" else bad
    got = main(["sweep", "--base", str(base), "--adapted", str(adapted), "--suite", *map(str, tiny_suites[:2]),
                "--alphas", "0,0.5,1", "--gate", str(policy), "--out", str(out), "--no-report", "--quiet",
                "--n-resamples", "200"])
    assert got == code
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["passed"] is (code == 0)
    junit = (out / "junit.xml").read_text()
    assert junit.count("<testcase") == len(verdict["outcomes"]) >= 3
    if which == "bad":
        failed = {o["rule"] for o in verdict["outcomes"] if not o["passed"]}
        assert {"id_no_regression", "shift_no_regression", "few_flips"} <= failed
    # the stored run can be re-judged without any model: same verdict
    assert main(["gate", str(out), "--policy", str(policy), "--quiet"]) == code
