"""Report sections of issue 18: selection honesty (stability of the choice, conditional test intervals, gate uses
of the test splits) and the calibration estimators; and the gate-use ledger behind the counts."""

from __future__ import annotations

import json
import re

from test_report import make_run

from harness.metrics.split_uses import count_uses, record_uses
from harness.report import render_report


def _with_noise(run, stability: float | None = None, warning: str = "") -> dict:
    summary = json.loads((run / "summary.json").read_text())
    points = [p["id"] for p in summary["points"]]
    chosen = summary["selection"]["chosen_point"]
    p_sel = {p: (1 - stability) / (len(points) - 1) if stability is not None else 1 / len(points) for p in points}
    p_sel[chosen] = stability if stability is not None else 1 / len(points)
    summary["selection_noise"] = {
        "n_resamples": 500, "seed": 0, "level": 0.95, "p_selected": p_sel,
        "indistinguishable": points[:2] + ([chosen] if chosen not in points[:2] else []),
        "rule": "the stated rule", "pick": chosen, "stability": p_sel[chosen], "warning": warning}
    (run / "summary.json").write_text(json.dumps(summary))
    return summary


def test_selection_honesty_and_calibration_sections(tmp_path):
    run = make_run(tmp_path / "run")
    _with_noise(run, warning="alpha was chosen on differences inside the intervals")
    verdict = json.loads((run / "verdict.json").read_text())
    verdict["outcomes"][0]["info"]["test_split_uses"] = {"movies/test": 7}
    (run / "verdict.json").write_text(json.dumps(verdict))
    md = render_report(run).markdown.read_text()
    assert "## Selection honesty" in md and "conditional on the choice made on the validation splits" in md
    assert "> **Note:** Alpha was chosen on differences inside the intervals." in md
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


def test_stability_table_has_a_header_for_every_column(tmp_path):
    run = make_run(tmp_path / "run")
    _with_noise(run)
    out = render_report(run)
    md, html = out.markdown.read_text(), out.html.read_text()
    part = md[md.index("### Stability of the choice"):]
    header = next(line for line in part.splitlines() if line.startswith("| point"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[-1] == "role in the choice" and all(cells), header
    table = html[html.index("Stability of the choice"):]
    table = table[table.index("<table"):table.index("</table>")]
    assert "role in the choice" in table and re.search(r"<th[^>]*>\s*</th>", table) is None


def test_stable_choice_is_called_stable_and_not_warned(tmp_path):
    """A chosen alpha picked in 96% of resamples is stable: no warning, even one stored by an older run."""
    run = make_run(tmp_path / "run")
    _with_noise(run, 0.96, warning="alpha 0.5 was chosen on differences inside the intervals")
    md = render_report(run).markdown.read_text()
    assert "picked in 96% of them, so the choice is stable (stable means picked in at least 90%)" in md
    assert "Warning:" not in md.split("## Selection honesty")[1].split("\n## ")[0]


def test_unstable_choice_is_called_unstable_and_warned(tmp_path):
    run = make_run(tmp_path / "run")
    _with_noise(run, 0.6, warning="the choice of alpha 0.5 is unstable")
    md = render_report(run).markdown.read_text()
    assert "picked in 60% of them, so the choice is unstable" in md
    assert "> **Note:** The choice of alpha 0.5 is unstable." in md and "Note:** Warning:" not in md
