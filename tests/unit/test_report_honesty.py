"""Report sections of issue 18: selection honesty (stability of the choice, conditional test intervals, gate uses
of the test splits) and the calibration estimators; and the gate-use ledger behind the counts."""

from __future__ import annotations

import json

from test_report import make_run

from harness.metrics.split_uses import count_uses, record_uses
from harness.report import render_report


def test_selection_honesty_and_calibration_sections(tmp_path):
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    points = [p["id"] for p in summary["points"]]
    chosen = summary["selection"]["chosen_point"]
    summary["selection_noise"] = {
        "n_resamples": 500, "seed": 0, "level": 0.95, "p_selected": {p: 1 / len(points) for p in points},
        "indistinguishable": points[:2] + ([chosen] if chosen not in points[:2] else []),
        "rule": "the stated rule", "pick": chosen, "stability": 1 / len(points),
        "warning": "alpha was chosen on differences inside the intervals"}
    (run / "summary.json").write_text(json.dumps(summary))
    verdict = json.loads((run / "verdict.json").read_text())
    verdict["outcomes"][0]["info"]["test_split_uses"] = {"movies/test": 7}
    (run / "verdict.json").write_text(json.dumps(verdict))
    md = render_report(run).markdown.read_text()
    assert "## Selection honesty" in md and "conditional on the choice made on the validation splits" in md
    assert "Warning: alpha was chosen on differences inside the intervals" in md
    assert "P(selected)" in md and "rule's pick" in md
    assert "| movies/test | 7 |" in md
    assert "## Calibration error estimators" in md and "l2 debiased (Kumar et al. 2019)" in md


def test_old_run_without_noise_still_renders(tmp_path):
    md = render_report(make_run(tmp_path / "run", verdict=False)).markdown.read_text()
    assert "records no resampling of the selection" in md and "No gate verdict with use counts" in md


def test_ledger_counts_uses_per_split_content(tmp_path):
    first = record_uses([("movies", "test", "fp1"), ("tweets", "test", "fp2")], policy="p", run_dir="a",
                        root=tmp_path)
    assert first == {"movies/test": 1, "tweets/test": 1}
    # a second gate on another run directory, same movies content, renamed tweets content
    second = record_uses([("movies", "test", "fp1"), ("tweets", "test", "fp3"), ("nofp", "test", "")],
                         policy="p", run_dir="b", root=tmp_path)
    assert second == {"movies/test": 2, "tweets/test": 1, "nofp/test": 0}
    (tmp_path / "gate_uses.jsonl").open("a").write("not json\n")
    assert count_uses(tmp_path)["fp1"] == 2
