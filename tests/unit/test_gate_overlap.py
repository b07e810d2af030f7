"""The max_overlap gate rule (issue 17 item 8): fails on train/test overlap above its threshold, and fails when a
split has no recorded overlap check (never a pass without evidence)."""

from __future__ import annotations

import pytest

from harness.gate import RunView, judge
from harness.spec.policy import GatePolicy
from harness.summary import OverlapEntry, OverlapUnchecked

from _gate_runs import build_run, standard_data


def _policy(max_rate: float) -> GatePolicy:
    return GatePolicy.model_validate({
        "kind": "policy", "name": "overlap", "candidate": "chosen", "min_clusters": 1,
        "rules": [{"name": "no_contamination", "kind": "max_overlap", "suites": ["movies"], "split": "test",
                   "max_rate": max_rate, "mode": "point"}]})


def _with_overlap(run: RunView, entries: list[OverlapEntry], unchecked: list | None = None) -> RunView:
    update = {"overlap": entries, "overlap_unchecked": unchecked or []}
    return RunView(summary=run.summary.model_copy(update=update), predictions=run.predictions, path=run.path)


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


def test_a_pair_left_unchecked_fails_even_when_the_recorded_pairs_are_clean(run):
    """An ID train split that could not be read (summary.overlap_unchecked): the rule cannot be judged, so FAIL."""
    n = run.summary.results["base"]["movies"]["test"].n
    clean = [OverlapEntry(a="movies/validation", b="movies/test", n_a=100, n_b=n, by_id=0, by_text=0, fraction=0.0)]
    assert judge(_with_overlap(run, clean), _policy(0.5)).passed
    why = "data file not found (where: /data/absent-train.csv)"
    v = judge(_with_overlap(run, clean, [OverlapUnchecked(a="movies/train", b="movies/test", reason=why)]),
              _policy(0.5))
    assert not v.passed
    reason = v.outcomes[0].reason
    assert "overlap of movies/test with movies/train was not checked" in reason and why in reason
    # a pair of another split does not touch this rule
    other = [OverlapUnchecked(a="movies/train", b="movies/validation", reason=why)]
    assert judge(_with_overlap(run, clean, other), _policy(0.5)).passed


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
