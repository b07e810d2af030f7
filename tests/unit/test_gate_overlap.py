"""The max_overlap gate rule (issue 17 item 8): fails on train/test overlap above its threshold, and fails when a
split has no recorded overlap check (never a pass without evidence)."""

from __future__ import annotations

import pytest

from harness.gate import RunView, judge
from harness.spec.policy import GatePolicy
from harness.summary import OverlapEntry

from _gate_runs import build_run, standard_data


def _policy(max_rate: float) -> GatePolicy:
    return GatePolicy.model_validate({
        "kind": "policy", "name": "overlap", "candidate": "chosen", "min_clusters": 1,
        "rules": [{"name": "no_contamination", "kind": "max_overlap", "suites": ["movies"], "split": "test",
                   "max_rate": max_rate, "mode": "point"}]})


def _with_overlap(run: RunView, entries: list[OverlapEntry]) -> RunView:
    return RunView(summary=run.summary.model_copy(update={"overlap": entries}), predictions=run.predictions,
                   path=run.path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("overlap"), standard_data())


def test_overlap_above_the_threshold_fails_and_below_passes(run):
    n = run.summary.results["base"]["movies"]["test"].n
    dirty = _with_overlap(run, [OverlapEntry(a="movies/train", b="movies/test", n_a=100, n_b=n, by_id=None,
                                             by_text=n // 10, fraction=(n // 10) / n)])
    v = judge(dirty, _policy(0.05))
    assert not v.passed and "also occur in movies/train" in v.outcomes[0].reason
    assert judge(dirty, _policy(0.2)).passed


def test_a_split_without_an_overlap_check_fails(run):
    v = judge(_with_overlap(run, []), _policy(0.5))
    assert not v.passed and "no overlap check is recorded" in v.outcomes[0].reason


def test_non_finite_scores_fail_and_suggest_another_dtype(run):
    """Issue 17 item 4: an overflowed point fails the gate, and the reason says how to avoid it."""
    import numpy as np

    frame = run.predictions.copy()
    cand = run.summary.chosen.id
    rows = frame.index[(frame["point"] == cand) & (frame["suite"] == "movies") & (frame["split"] == "test")]
    frame.at[rows[0], "logits"] = np.array([np.nan, 0.0], dtype=np.float32)
    policy = GatePolicy.model_validate({
        "kind": "policy", "name": "nan", "candidate": "chosen", "min_clusters": 1,
        "rules": [{"name": "floor", "kind": "floor", "metric": "accuracy", "suites": ["movies"], "floor": 0.1,
                   "mode": "point"}]})
    v = judge(RunView(summary=run.summary, predictions=frame, path=run.path), policy)
    assert not v.passed and "bf16 or fp32" in v.outcomes[0].reason
