"""The gate's inputs, checked (stage 8, beside :mod:`harness.gate`): a stored run (:class:`RunView`), one point's
predictions on one split with every check that keeps a rule from passing by accident (missing point, suite,
split, metric or predictions; duplicate ids; non-finite scores; a summary that disagrees with its predictions),
the pairing of candidate and reference by ``example_id``, and the identity checks of a baseline run. Every
problem raises :class:`RuleFailure` with the reason the rule's outcome reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import likely_typo
from harness.metrics.base import n_non_finite
from harness.metrics.registry import examples_right, point_value
from harness.rundir import predictions_for, read_predictions, read_summary
from harness.spec.policy import Rule
from harness.summary import Summary

__all__ = ["RunView", "RuleFailure", "Side", "SUMMARY_TOLERANCE", "right_or_fail", "checked_side", "align",
           "check_same_suite"]

#: Largest allowed |summary.json value - value recomputed from predictions.parquet|.
SUMMARY_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class RunView:
    """A stored run as the gate sees it: its summary and its predictions.

    ``predictions`` has the columns of ``predictions.parquet`` (:mod:`harness.rundir`): ``point``, ``suite``,
    ``split``, ``example_id``, ``source_id``, ``label``, ``logits``.
    """

    summary: Summary
    predictions: pd.DataFrame
    path: str = ""

    @classmethod
    def from_dir(cls, path: str | Path) -> "RunView":
        """Read ``summary.json`` and ``predictions.parquet`` of a run directory.

        Raises
        ------
        harness.errors.DataError
            If either file is missing or invalid.
        """
        return cls(read_summary(path), read_predictions(path), str(path))


class RuleFailure(Exception):
    """Internal: the rule cannot be judged (missing or mismatched data); carries the reason, and the examples
    judged when they were counted (shown as the outcome's n)."""

    def __init__(self, reason: str, n: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.n = n


@dataclass(frozen=True)
class Side:
    """One point's predictions on one split (after every check)."""

    point: str
    example_ids: np.ndarray
    source_ids: np.ndarray
    labels: np.ndarray
    outputs: dict[str, np.ndarray]


def right_or_fail(side: Side, metric: str | None = None) -> np.ndarray:
    """Whether each example is right, bool (n,): by ``metric``'s per-example rule (the argmax class for accuracy,
    the highest-scoring choice for acc/acc_norm, a match for generation), or the task's own when none is named."""
    right = examples_right(side.labels, side.outputs, metric)
    if right is None:
        raise RuleFailure("this rule needs each example to be right or wrong, which these records do not define "
                           "(perplexity); use a floor or a relative rule on a perplexity metric instead")
    return right


def checked_side(run: RunView | None, point: str | None, problem: str, suite: str, rule: Rule, role: str) -> Side:
    """One point's checked predictions on ``suite/rule.split`` (raises :class:`RuleFailure` with the reason)."""
    if run is None or point is None:
        raise RuleFailure(problem or f"no {role} point")
    s = run.summary
    where = f"{role} point {point!r}"
    if point not in {p.id for p in s.points}:
        raise RuleFailure(f"missing point: the run has no {where} (points: {[p.id for p in s.points]})")
    suites = s.results.get(point, {})
    if suite not in suites:
        run_suites = ", ".join(f"{n} ({getattr(i.role, 'value', i.role)})" for n, i in sorted(s.suites.items()))
        close = None if suite in s.suites else likely_typo(suite, sorted(s.suites))
        typo = f"typo? the closest suite of the run is {close!r}; " if close else ""
        raise RuleFailure(f"missing suite: {where} has no results for suite {suite!r} (has: {sorted(suites)}); "
                           f"fix: {typo}edit the policy's suites: (or this rule's suites:) to the run's suite names: "
                           f"{run_suites}; or rerun with {suite!r} among --suite")
    if rule.split not in suites[suite]:
        raise RuleFailure(f"missing split: {where} has no split {rule.split!r} of {suite!r} "
                           f"(has: {sorted(suites[suite])})")
    entry = suites[suite][rule.split]
    stored = None
    if rule.metric is not None:
        if rule.metric not in entry.metrics:
            raise RuleFailure(f"missing metric: {rule.metric!r} was not computed for {where} on "
                               f"{suite}/{rule.split} (has: {sorted(entry.metrics)})")
        stored = entry.metrics[rule.metric].value
        if stored is None or not np.isfinite(stored):
            raise RuleFailure(f"NaN value: summary.json holds no finite {rule.metric} for {where} on "
                               f"{suite}/{rule.split} (non-finite outputs, e.g. an fp16 overflow: rerun with "
                               "--dtype bf16 or fp32)")
    rows = predictions_for(run.predictions, point, suite, rule.split)
    if rows is None:
        raise RuleFailure(f"missing predictions: predictions.parquet has no rows for {where} on "
                           f"{suite}/{rule.split}")
    ids, src, labels, outputs = rows
    if len(np.unique(ids)) != len(ids):
        raise RuleFailure(f"duplicate example ids in the predictions of {where} on {suite}/{rule.split}")
    bad = n_non_finite(outputs)
    if bad:
        raise RuleFailure(f"NaN value: {bad} examples of {where} on {suite}/{rule.split} have non-finite scores "
                           f"(an overflow, e.g. in fp16: rerun with --dtype bf16 or fp32)")
    if stored is not None:
        fresh = point_value(rule.metric, labels, outputs)
        if not abs(fresh - stored) <= SUMMARY_TOLERANCE:
            raise RuleFailure(f"summary.json says {rule.metric} = {stored:.6f} for {where} on {suite}/{rule.split}"
                               f" but its predictions give {fresh:.6f}; the run directory is inconsistent")
    return Side(point, ids, src, labels, outputs)


def align(cand: Side, ref: Side) -> Side:
    """Reorder the reference to the candidate's example order; fail unless both hold the same examples."""
    index = pd.Index(ref.example_ids)
    pos = index.get_indexer(cand.example_ids)
    only_cand = int((pos < 0).sum())
    only_ref = len(ref.example_ids) - (len(cand.example_ids) - only_cand)
    if only_cand or only_ref:
        sample = [str(x) for x in cand.example_ids[pos < 0][:3]]
        raise RuleFailure(f"candidate and reference were scored on different examples: {only_cand} example ids "
                           f"only in the candidate (e.g. {sample}), {only_ref} only in the reference")
    labels = ref.labels[pos]
    if not np.array_equal(labels, cand.labels):
        raise RuleFailure(f"candidate and reference disagree on the labels of {int((labels != cand.labels).sum())} "
                           "examples")
    return Side(ref.point, cand.example_ids, cand.source_ids, labels, {k: v[pos] for k, v in ref.outputs.items()})


def _cap_hint(cand, base, split: str) -> str:
    """Why two runs' spec hashes of one suite may differ when the suite file did not change: a different row cap
    (``--max-examples`` or a split's ``max_examples``, part of the hash), seen as a different number of examples
    kept or capped on ``split``; empty when the counts agree (CI trial: a baseline scored with --max-examples 12
    and a candidate with 8 read only "spec hash differs")."""
    def counts(info) -> tuple:
        sp = info.splits.get(split, {})
        return sp.get("n"), (sp.get("drop_reasons") or {}).get("cap", 0)
    (n_c, cap_c), (n_b, cap_b) = counts(cand), counts(base)
    if (n_c, cap_c) == (n_b, cap_b) or not (cap_c or cap_b):
        return ""
    return (f": {split} kept {n_b} examples ({cap_b} capped) in the baseline and {n_c} ({cap_c} capped) in the "
            f"candidate run, so the row cap differs (--max-examples, or the split's max_examples): score both with "
            f"the same cap")


def check_same_suite(cand: Summary, base: Summary, suite: str, split: str) -> None:
    a, b = cand.suites.get(suite), base.suites.get(suite)
    if a is None:
        raise RuleFailure(f"the candidate run records no identity (version, hash) for suite {suite!r}")
    if b is None:
        raise RuleFailure(f"the baseline run has no suite {suite!r} (has: {sorted(base.suites)})")
    if a.version != b.version:
        raise RuleFailure(f"baseline mismatch: suite {suite!r} is version {b.version!r} in the baseline and "
                           f"{a.version!r} in the candidate run; refresh the baseline")
    if a.spec_hash != b.spec_hash:
        raise RuleFailure(f"baseline mismatch: suite {suite!r} spec hash differs ({b.spec_hash[:12]} in the "
                           f"baseline, {a.spec_hash[:12]} in the candidate run){_cap_hint(a, b, split)}; refresh the "
                           f"baseline")
    fa, fb = (x.splits.get(split, {}).get("fingerprint") for x in (a, b))
    if not fa or not fb:
        raise RuleFailure(f"baseline mismatch: no data fingerprint recorded for {suite}/{split} in the "
                           f"{'candidate run' if not fa else 'baseline'}; the data cannot be shown to be the same")
    if fa != fb:
        raise RuleFailure(f"baseline mismatch: the data of {suite}/{split} differs (fingerprint {fb[:12]} in the "
                           f"baseline, {fa[:12]} in the candidate run); refresh the baseline")
