"""Stage 8, the release gate: ``judge(candidate run, policy, baseline run) -> Verdict``, a pure function.

What is compared
    The candidate is the run's chosen point (``candidate: chosen``, the default) or its ``adapted`` point. A
    relative rule's reference is the ``base`` or ``adapted`` point of the *same* run, or, for ``reference:
    baseline``, the chosen point of the ``--baseline`` run (its only point when it holds exactly one point and no
    selection ran). Every number is recomputed from ``predictions.parquet`` and cross-checked against
    ``summary.json``.

Statistics
    Paired: candidate and reference are matched by ``example_id`` and resampled with the same cluster bootstrap
    weights (clusters are ``source_id`` values; :mod:`harness.metrics.bootstrap`). Each suite is resampled
    independently (its own seed, derived from the policy seed and ``suite/split``); ``mean`` and ``worst``
    aggregates are taken per resample. A ``delta`` is the gain in the metric's good direction (the registry's
    ``higher_is_better``): ``candidate - reference``, or ``reference - candidate`` for lower-is-better metrics.
    In ``bound`` mode, a rule that needs the number to be at least its threshold (delta, floor) judges the
    ``1 - confidence`` quantile of the bootstrap distribution, and one that needs it at most its threshold
    (ceiling, negative_flips) the ``confidence`` quantile: a one-sided non-inferiority or superiority test at
    level ``confidence`` (percentile bootstrap, Efron & Tibshirani 1993). ``point`` mode judges the estimate.

Evidence checks (the bootstrap has no variance where the data has none)
    * ``min_n`` examples and ``min_clusters`` clusters (``source_id`` values; policy default 50) per suite, or the
      rule fails: with one cluster the bound collapses to the point estimate.
    * Floors and ceilings on accuracy, negative-flip rates and class recalls are also held to a one-sided
      Clopper-Pearson bound at the cluster-adjusted effective n (Korn & Graubard 1998;
      :mod:`harness.metrics.exact`); the more conservative of the two bounds is judged (5 of 5 correct has a
      95% lower bound of 0.549, 0 flips of 20 an upper bound of 0.139).
    * A superiority rule (``min_delta >= 0``) passes only when its bound is *strictly* above ``min_delta`` (a
      candidate identical to its reference fails), and on accuracy also needs the exact one-sided sign test
      (McNemar's exact test on discordant pairs, McNemar 1947) significant at ``1 - confidence``.
    * A non-inferiority rule whose margin is smaller than the minimum detectable effect
      ``(z_confidence + z_power) * se`` (``se``: the bootstrap standard deviation of the paired difference) is
      ``underpowered``: an equal candidate would fail it more often than ``1 - power``. It fails
      (``on_underpowered: fail``, the default) or passes with a warning in ``info`` (``warn``). With no
      discordant pair on any of its suites (se 0) ``se`` is taken from the median-unbiased disagreement rate
      over the independent units (:func:`harness.metrics.evidence.agreement_se`).
    * A policy that declares its ``suites`` fails every ``id`` / ``shift`` rule for a declared suite the run lacks.
      Such a rule judges the declared suites of its role *and* every other suite of that role in the run (a shift
      suite the policy does not name is never skipped); each outcome's ``info["suites_judged"]`` says which
      suites came from the policy and which from the run.
    Multiplicity: the gate passes only when every rule passes (an intersection-union test, Berger 1982), so the
    chance of passing a bad candidate is bounded per rule; no Holm or Bonferroni correction is applied.

Never passes by accident
    A missing point, suite, split, metric or prediction; a NaN or infinite value or logit; a summary that disagrees
    with its predictions; candidate and reference on different examples or labels; a baseline whose suite version,
    spec hash or split fingerprint differs; a missing baseline; a selector that matches no suite; ``n`` below
    ``min_n``; a threshold outside the metric's range: each fails its rule with the reason. A verdict passes only
    if it holds at least one outcome and every outcome passed.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics.bootstrap import cluster_weights, metric_distribution
from harness.metrics.calibration import calibration_errors
from harness.metrics.evidence import (agreement_se, class_recall_evidence, discordant_counts, flip_evidence,
                                      power_check, superiority_check)
from harness.metrics.exact import proportion_bound
from harness.metrics.registry import get_metric, point_value
from harness.metrics.split_uses import record_uses
from harness.numfmt import fmt_g, fmt_num
from harness.gate_sides import (SUMMARY_TOLERANCE, RuleFailure, RunView, align, check_same_suite, checked_side,
                                 right_or_fail)
from harness.records import RuleOutcome, Verdict
from harness.spec.policy import (Aggregate, CandidateChoice, GatePolicy, Mode, Reference, Rule, RuleKind,
                                 policy_metric_problems, policy_suite_notes)
from harness.summary import Summary

__all__ = ["RunView", "judge", "note_split_uses", "threshold_problem", "policy_problems", "point_problems",
           "SUMMARY_TOLERANCE"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Stat:
    """One suite's statistic: point estimate, bootstrap distribution (B,), n and details; ``exact``: the
    cluster-adjusted Clopper-Pearson bound in the rule's direction (proportions only); ``signs``: (candidate-only
    right, reference-only right) discordant counts for accuracy deltas."""

    point: float
    dist: np.ndarray
    n: int
    info: dict[str, Any]
    exact: float | None = None
    signs: tuple[int, int] | None = None


@dataclass
class _Context:
    policy: GatePolicy
    candidate: RunView
    cand_point: str | None
    cand_problem: str
    baseline: RunView | None
    base_point: str | None
    base_problem: str
    weights: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def judge(candidate: RunView, policy: GatePolicy, baseline: RunView | None = None, *,
          baseline_error: str | None = None) -> Verdict:
    """Judge a run against a gate policy.

    Parameters
    ----------
    candidate : RunView
        The run holding the candidate point (and the ``base`` / ``adapted`` references).
    policy : GatePolicy
        The rules, confidence, resamples and seed.
    baseline : RunView, default=None
        A stored run for ``reference: baseline`` rules; without it those rules fail.
    baseline_error : str, default=None
        Why the baseline could not be read (e.g. a ``DataError`` message); becomes the failure reason of every
        ``reference: baseline`` rule, so an unreadable baseline fails the gate rather than skipping it.

    Returns
    -------
    Verdict
        One :class:`~harness.records.RuleOutcome` per rule and suite (or aggregate); ``passed`` only if there is at
        least one outcome and all passed. Missing or mismatched data fails the affected rule; nothing is raised.
    """
    cand_point, cand_problem = _candidate_point(candidate.summary, policy.candidate)
    if baseline is not None:
        base_point, base_problem = _baseline_point(baseline.summary)
    else:
        base_point = None
        base_problem = baseline_error or "the policy compares with a baseline but no --baseline run was given"
    ctx = _Context(policy, candidate, cand_point, cand_problem, baseline, base_point, base_problem)
    outcomes: list[RuleOutcome] = []
    for rule in policy.rules:
        outcomes += _judge_rule(rule, ctx)
    if not outcomes:
        outcomes.append(RuleOutcome(rule="(policy)", kind="none", metric="", suite="", split="", mode="",
                                    passed=False, value=None, bound=None, threshold=None, margin=None, n=None,
                                    reason="the policy produced no check; a gate with no check fails"))
    refs = sorted({str(o.info["reference"]) for o in outcomes if o.info.get("reference")})
    if len(refs) > 1 and "absolute" in refs:
        refs.remove("absolute")
    return Verdict(policy=policy.name, candidate=cand_point or "(none)", reference=", ".join(refs) or "(none)",
                   passed=all(o.passed for o in outcomes), outcomes=tuple(outcomes),
                   confidence=policy.confidence, n_resamples=policy.n_resamples, seed=policy.seed)


def note_split_uses(verdict: Verdict, run: RunView, root: str | Path | None = None) -> dict[str, int]:
    """Record this gate's use of the run's test splits in the store's ledger (:mod:`harness.metrics.split_uses`)
    and note the counts in the verdict: each outcome's ``info["test_split_uses"]`` maps ``suite/split`` of its
    suites to the number of gate uses of that split's content in this store, this one included.

    Returns
    -------
    dict of str to int
        ``suite/split`` -> uses, for every test split the verdict's rules judged.
    """
    judged = {(n, o.split) for o in verdict.outcomes for n in set(re.split(r"[(),\s]+", o.suite)) if o.split}
    entries = [(name, sp, str(info.splits[sp].get("fingerprint", "")))
               for name, info in sorted(run.summary.suites.items()) for sp in sorted(info.splits)
               if (name, sp) in judged and info.splits[sp].get("role", "test") == "test"]
    counts = record_uses(entries, policy=verdict.policy, run_dir=run.path)
    for o in verdict.outcomes:
        mine = set(re.split(r"[(),\s]+", o.suite))
        o.info["test_split_uses"] = {k: v for k, v in counts.items() if k.split("/")[0] in mine}
    return counts


def point_problems(policy: GatePolicy, summary: Summary) -> list[str]:
    """The points ``policy`` needs that the run of ``summary`` does not have: its candidate (``candidate:``) and
    the ``base`` / ``adapted`` points its relative rules compare with (a ``baseline`` reference is another run's,
    checked when it is read). An eval run holds one point (``model``), so a rule that compares with ``base``
    cannot be judged on it. ``harness gate`` refuses such a policy before judging (exit 2, nothing written);
    :func:`judge` fails the rules. Returns one line per problem, empty when every point is there."""
    ids = [p.id for p in summary.points]
    kind = "an eval run" if summary.selection is None and len(ids) == 1 else "the run"
    out = []
    _, problem = _candidate_point(summary, policy.candidate)
    if problem:
        out.append(f"candidate: {policy.candidate.value}: {problem}")
    for ref in (Reference.BASE, Reference.ADAPTED):
        rules = [r.name for r in policy.rules if r.resolved_reference is ref]
        if rules and ref.value not in ids:
            out.append(f"rule{'s' * (len(rules) > 1)} {', '.join(map(repr, rules))} compare{'s' * (len(rules) == 1)} "
                       f"with the run's {ref.value} point, but {kind} has only {ids}: gate the run of `harness "
                       f"sweep` (it holds base, adapted and the blends), or compare with a stored run (reference: "
                       f"baseline and --baseline RUN_DIR)")
    return out


def _candidate_point(summary: Summary, choice: CandidateChoice) -> tuple[str | None, str]:
    """The candidate's point id. ``adapted``: the point whose role is adapted (an eval run's single model has that
    role). ``chosen``: the selected blend, or the only point of a single-model (eval) run."""
    if choice is CandidateChoice.ADAPTED:
        ids = [p.id for p in summary.points if p.role == "adapted"]
        if ids:
            return ("adapted" if "adapted" in ids else ids[0]), ""
        return None, f"the run has no adapted point (points: {[p.id for p in summary.points]})"
    chosen = summary.chosen
    if chosen is None:
        if summary.selection is None and len(summary.points) == 1:
            return summary.points[0].id, ""
        return None, "the run has no chosen point (no alpha selection ran); use candidate: adapted or run a sweep"
    return chosen.id, ""


def _baseline_point(summary: Summary) -> tuple[str | None, str]:
    if summary.chosen is not None:
        return summary.chosen.id, ""
    if len(summary.points) == 1:
        return summary.points[0].id, ""
    return None, (f"the baseline run has no chosen point and {len(summary.points)} points; use a sweep run or a "
                  "single-model run as baseline")


def _judge_rule(rule: Rule, ctx: _Context) -> list[RuleOutcome]:
    try:
        suites, why = _select_suites(rule, ctx.candidate.summary, ctx.policy)
    except RuleFailure as e:
        return [_failed(rule, ctx, str(rule.suites), e.reason)]
    if rule.kind is RuleKind.MAX_OVERLAP:
        out = [_judge_overlap(rule, suite, ctx) for suite in suites]
    else:
        groups = [[s] for s in suites] if rule.aggregate is Aggregate.EACH else [suites]
        out = []
        for group in groups:
            label = group[0] if rule.aggregate is Aggregate.EACH else f"{rule.aggregate.value}({', '.join(group)})"
            try:
                out.append(_judge_group(rule, group, label, ctx))
            except RuleFailure as e:
                out.append(_failed(rule, ctx, label, e.reason, n=e.n))
    for o in out:  # which suites a role rule judged, and why (printed by the gate's outputs)
        o.info.update({"suites_judged": why} if why else {})
    return out


def _judge_overlap(rule: Rule, suite: str, ctx: _Context) -> RuleOutcome:
    """``max_overlap`` on one suite's split: the largest share of its rows found in another split of the run
    (``summary.overlap``; counted by :mod:`harness.data.overlap` when the run was made). No recorded check for the
    split fails (a run from before overlap counting, or nothing to compare it with), and so does a pair left
    unchecked because its train split could not be read (``summary.overlap_unchecked``): never a pass without
    data."""
    key = f"{suite}/{rule.split}"
    entries = [e for e in ctx.candidate.summary.overlap if e.b == key]
    unchecked = [u for u in ctx.candidate.summary.overlap_unchecked if u.b == key]
    if unchecked:
        return _failed(rule, ctx, suite, _unchecked_reason(key, unchecked))
    if not entries:
        return _failed(rule, ctx, suite, f"no overlap check is recorded for {key} in summary.json (a run from "
                                         "before overlap counting, or no train or validation split to compare "
                                         "it with); rerun the sweep with this harness version")
    worst = max(entries, key=lambda e: e.fraction)
    passed = worst.fraction <= rule.max_rate
    reason = "" if passed else (f"{worst.fraction:.1%} of {key} ({max(worst.by_id or 0, worst.by_text)} of "
                                f"{worst.n_b} rows) also occur in {worst.a}, above max_rate {fmt_g(rule.max_rate)}")
    return RuleOutcome(rule=rule.name, kind=rule.kind.value, metric="", suite=suite, split=rule.split,
                       mode=rule.mode.value, passed=passed, value=worst.fraction, bound=None,
                       threshold=rule.max_rate, margin=rule.max_rate - worst.fraction, n=worst.n_b, reason=reason,
                       info={"reference": "absolute", "candidate": ctx.cand_point,
                             "overlap": [e.model_dump() for e in entries]})


def _unchecked_reason(key: str, unchecked: list) -> str:
    splits = ", ".join(dict.fromkeys(u.a for u in unchecked))
    return (f"the overlap of {key} with {splits} was not checked: that train split could not be read when the run "
            f"was made ({unchecked[0].reason}); restore or fix its file (or, if the suite has no train data, remove "
            f"the split from the suite) and rerun eval or sweep")


def _select_suites(rule: Rule, summary: Summary, policy: GatePolicy) -> tuple[list[str], str]:
    """The suites a rule checks: its list, or every suite the policy declares for the role plus every suite of
    that role in the run (a declared suite the run lacks then fails as a missing suite); and, for a role rule, a
    line saying which suites came from where (``""`` for a rule's own list)."""
    if isinstance(rule.suites, list):
        return list(rule.suites), ""
    declared = policy.suites.of(rule.suites) if policy.suites is not None else []
    wrong = [n for n in declared if n in summary.suites and summary.suites[n].role != rule.suites]
    if wrong:
        raise RuleFailure(f"the policy declares {wrong} as {rule.suites} suites but the run records them as "
                           f"{summary.suites[wrong[0]].role}")
    in_run = sorted(n for n, info in summary.suites.items() if info.role == rule.suites)
    extra = [n for n in in_run if n not in declared]
    if not declared + extra:
        raise RuleFailure(f"the run has no suite with role {rule.suites!r} (suites: {sorted(summary.suites)}); "
                           "a rule that matches nothing fails")
    return declared + extra, _selection_line(rule.suites, declared, extra, policy.suites is not None)


def _selection_line(role: str, declared: list[str], extra: list[str], has_declared: bool) -> str:
    """``suites: <role>`` judges the suites the policy declares for the role AND every suite of that role in the
    run (so a shift suite the policy does not name is not skipped): which were which."""
    parts = [f"{', '.join(declared)} declared in the policy's suites.{role}"] if declared else []
    if extra:
        parts.append(f"{', '.join(extra)} added: {role} suite{'s' * (len(extra) > 1)} of the run"
                     + (" that the policy does not declare" if declared else "")
                     + ("" if has_declared else " (the policy declares no suites, so a suite the run lacks goes "
                                                "unnoticed)"))
    return (f"'{role}' = " + "; ".join(parts) + f" (a rule over '{role}' judges the suites the policy declares for "
            f"that role and every {role} suite of the run)")


def _reference_label(rule: Rule, ctx: _Context) -> str:
    ref = rule.resolved_reference
    if ref is None:
        return "absolute"
    if ref is Reference.BASELINE:
        where = f" ({ctx.baseline.path})" if ctx.baseline is not None and ctx.baseline.path else ""
        return f"baseline:{ctx.base_point or '?'}{where}"
    return ref.value


def _failed(rule: Rule, ctx: _Context, suite: str, reason: str, n: int | None = None) -> RuleOutcome:
    return RuleOutcome(rule=rule.name, kind=rule.kind.value, metric=rule.metric or "", suite=suite, split=rule.split,
                       mode=rule.mode.value, passed=False, value=None, bound=None, threshold=rule.threshold,
                       margin=None, n=n, reason=reason,
                       info={"reference": _reference_label(rule, ctx), "candidate": ctx.cand_point})


def _judge_group(rule: Rule, group: list[str], label: str, ctx: _Context) -> RuleOutcome:
    _check_threshold(rule)
    stats: dict[str, _Stat] = {}
    problems = []
    counted: list[int | None] = []
    for suite in group:
        try:
            stats[suite] = _suite_stat(rule, suite, ctx)
            counted.append(stats[suite].n)
        except RuleFailure as e:
            problems.append(e.reason if len(group) == 1 else f"{suite}: {e.reason}")
            counted.append(e.n)
    if problems:  # n: the examples judged, when every suite of the group got as far as counting them
        raise RuleFailure("; ".join(problems), n=None if None in counted else sum(counted))
    points = np.array([s.point for s in stats.values()])
    dists = np.stack([s.dist for s in stats.values()])
    if rule.aggregate is Aggregate.MEAN:
        point, dist = float(points.mean()), dists.mean(axis=0)
    else:  # each (one suite) or worst: the worst value per resample
        pick = np.min if rule.at_least else np.max
        point, dist = float(pick(points)), pick(dists, axis=0)
    n = sum(s.n for s in stats.values())
    info = {"reference": _reference_label(rule, ctx), "candidate": ctx.cand_point,
            "statistic": _statistic_name(rule), "confidence_one_sided": ctx.policy.confidence,
            "n_resamples": ctx.policy.n_resamples}
    if not isinstance(rule.suites, list):
        info["suites_from"] = "the policy's declared suites and the run" if ctx.policy.suites is not None else \
            "the run only (the policy declares no suites, so a suite the run lacks is not noticed)"
    info.update(stats[group[0]].info if len(group) == 1 else {"per_suite": {k: {"value": s.point, "n": s.n, **s.info}
                                                                           for k, s in stats.items()}})
    exacts = [s.exact for s in stats.values()]
    exact = None
    if rule.aggregate is not Aggregate.MEAN and all(e is not None for e in exacts):
        exact = (min if rule.at_least else max)(exacts)  # worst: the most conservative suite's exact bound
    signs = stats[group[0]].signs if len(group) == 1 else None
    floor, floor_from = _agreement_floor(rule, stats)
    return _decide(rule, ctx.policy, label, _Evidence(point, dist, n, exact, signs, floor, floor_from), info)


def _statistic_name(rule: Rule) -> str:
    if rule.kind is RuleKind.DELTA:
        return f"gain in {rule.metric} over the reference, in the metric's good direction"
    if rule.kind is RuleKind.NEGATIVE_FLIPS:
        return "share of examples the reference got right and the candidate gets wrong"
    if rule.kind is RuleKind.CLASS_RECALL_FLOOR:
        return "smallest per-class recall of the candidate (per resample)"
    return f"candidate {rule.metric}"


@dataclass(frozen=True)
class _Evidence:
    """What a rule is judged on: estimate, bootstrap distribution (B,), n, the exact bound (proportions) and the
    discordant counts (accuracy deltas on one suite)."""

    point: float
    dist: np.ndarray
    n: int
    exact: float | None = None
    signs: tuple[int, int] | None = None
    se_floor: float | None = None
    se_from: str | None = None


def _agreement_floor(rule: Rule, stats: dict[str, "_Stat"]) -> tuple[float | None, str | None]:
    """The se floor of a delta rule whose suites all show no discordant pair (a right-or-wrong metric where
    candidate and reference agree on every example: the bootstrap's se is 0): each suite's
    :func:`harness.metrics.evidence.agreement_se` at the smaller of its examples and clusters, combined as the
    rule combines the suites (``mean``: ``sqrt(sum se_k^2) / k``; ``worst``, one suite: the largest)."""
    if rule.kind is not RuleKind.DELTA or not stats or any(st.signs is None or sum(st.signs) for st in stats.values()):
        return None, None
    units = {k: min(st.n, int(st.info.get("n_clusters", st.n))) for k, st in stats.items()}
    floors = [agreement_se(u) for u in units.values()]
    floor = float(np.sqrt(np.sum(np.square(floors))) / len(floors)) if rule.aggregate is Aggregate.MEAN and \
        len(floors) > 1 else max(floors)
    shown = ", ".join(f"{k} {u}" for k, u in units.items())
    return floor, (f"no discordant pair (bootstrap se 0): se from the median-unbiased disagreement rate over the "
                   f"independent units (the smaller of examples and clusters: {shown})")


def _decide(rule: Rule, policy: GatePolicy, label: str, ev: _Evidence, info: dict[str, Any]) -> RuleOutcome:
    thr, conf = rule.threshold, policy.confidence
    bound = None
    if rule.mode is Mode.BOUND:
        q = 1.0 - conf if rule.at_least else conf
        bound = float(np.quantile(ev.dist, q)) if np.isfinite(ev.dist).all() else float("nan")
        if ev.exact is not None and np.isfinite(bound):
            info["bootstrap_bound"], info["exact_bound"] = bound, ev.exact
            bound = min(bound, ev.exact) if rule.at_least else max(bound, ev.exact)
            info["bound_from"] = "exact" if bound == ev.exact and bound != info["bootstrap_bound"] else "bootstrap"
    judged = ev.point if bound is None else bound
    common = dict(rule=rule.name, kind=rule.kind.value, metric=rule.metric or "", suite=label, split=rule.split,
                  mode=rule.mode.value, threshold=thr, n=ev.n, info=info)
    if not (np.isfinite(ev.point) and np.isfinite(judged)):
        return RuleOutcome(passed=False, value=_finite_or_none(ev.point), bound=_finite_or_none(bound), margin=None,
                           reason="the judged number is NaN or infinite", **common)
    margin = judged - thr if rule.at_least else thr - judged
    what = "bound" if bound is not None else "value"
    reasons = []
    if rule.superiority and margin == 0:  # at the threshold exactly: below it is said the plain way
        reasons.append(f"{what} {fmt_num(judged, 4)} is not strictly above min_delta {fmt_num(thr, 4)}: superiority "
                       "needs evidence of a gain, and a candidate equal to its reference shows none")
    elif margin < 0:
        reasons.append(f"{what} {fmt_num(judged, 4)} is {'below' if rule.at_least else 'above'} the threshold "
                       f"{fmt_num(thr, 4)} by {fmt_num(-margin, 4)}")
    if bound is not None:
        reasons += _evidence_reasons(rule, policy, ev, info)
    return RuleOutcome(passed=not reasons, value=ev.point, bound=bound, margin=float(margin),
                       reason="; ".join(reasons), **common)


def _evidence_reasons(rule: Rule, policy: GatePolicy, ev: _Evidence, info: dict[str, Any]) -> list[str]:
    """The exact sign test of a superiority rule on accuracy, and the ``underpowered`` check of a delta rule."""
    reasons = []
    if rule.superiority and ev.signs is not None:
        info["sign_test"], why = superiority_check(*ev.signs, policy.confidence)
        reasons.append(why)
    if rule.kind is RuleKind.DELTA and np.isfinite(ev.dist).all():
        power_info, why = power_check(ev.dist, -rule.threshold, policy.confidence, policy.power,
                                      se_floor=ev.se_floor, se_from=ev.se_from)
        info.update(power_info)
        if why and policy.on_underpowered == "warn":
            info["warning"] = why
        else:
            reasons.append(why)
    return [r for r in reasons if r]


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _check_threshold(rule: Rule) -> None:
    problem = threshold_problem(rule)
    if problem:
        raise RuleFailure(problem)


def policy_problems(policy: GatePolicy, suites: dict[str, tuple[str, list[str]]], *,
                    run: bool = False, run_suites: Collection[str] | None = None) -> tuple[list[str], list[str]]:
    """What decides a policy's verdict before any model runs, as ``(problems, warnings)``: problems are rule
    thresholds outside their metric's range (:func:`threshold_problem`; ``evaluate:`` metrics are not loaded),
    suite names a few edits from a given suite's (:func:`harness.spec.policy.policy_suite_notes`) and rules whose
    metric a suite they judge does not compute (:func:`harness.spec.policy.policy_metric_problems`); warnings
    are the other names no given suite has, and a declared suite's role that differs from its own. For one run's
    suites (``run=True``: ``sweep --gate``, ``harness gate``) those the gate fails for sure are problems too (a
    rule's own list names the suite, or a rule over the role it is declared for judges it).
    ``harness validate`` and ``sweep --gate`` report the same.

    Parameters
    ----------
    policy : GatePolicy
    suites : dict of str to (str, list of str)
        Name -> (role, the suite's metrics) of every suite given (may be empty: thresholds only).
    run : bool, default=False
        Whether the suites are one run's (``sweep --gate``): a role rule then judges every suite of its role.
    run_suites : collection of str, default=None
        With ``run=False``, the suites among ``suites`` whose metrics a role rule checks as one run's suites of its
        role (``harness validate POLICY SUITES...``: the suite files named one by one;
        :func:`harness.spec.policy.policy_metric_problems`).

    Returns
    -------
    (list of str, list of str)
    """
    problems = [f"rule {r.name!r}: {why}" for r in policy.rules for why in [threshold_problem(r, load_evaluate=False)]
                if why]
    notes = policy_suite_notes(policy, {n: role for n, (role, _) in suites.items()}, run=run) if suites else []
    problems += [line for flag, line in notes if flag]  # a likely typo; in a run also a suite the gate fails on
    for rule in policy.rules if run else ():  # a rule over a role that matches no suite fails (_select_suites)
        role = getattr(rule.suites, "value", rule.suites)
        if isinstance(rule.suites, list) or (policy.suites is not None and policy.suites.of(role)):
            continue
        if not any(r == role for r, _ in suites.values()):
            problems.append(f"rule {rule.name!r} judges the {role} suites, but the run has none and the policy "
                            f"declares none: the gate fails a rule that matches nothing (the run's suites: "
                            f"{', '.join(f'{n} ({r})' for n, (r, _) in sorted(suites.items()))})")
    problems += policy_metric_problems(policy, suites, run=run, run_suites=run_suites)
    return problems, [line for flag, line in notes if not flag]


def threshold_problem(rule: Rule, *, load_evaluate: bool = True) -> str | None:
    """Why a rule's threshold cannot be meant as written, or ``None``: a rate rule's threshold outside [0, 1], a
    delta larger than its metric's range, or a floor/ceiling outside it (thresholds are fractions: 0.02, not 2).
    The gate fails such a rule; ``harness validate`` and ``sweep --gate`` refuse the policy before any work.

    Parameters
    ----------
    rule : Rule
    load_evaluate : bool, default=True
        Whether to load an ``evaluate:`` metric to read its range; ``False`` skips those rules (``None``).

    Returns
    -------
    str or None
    """
    if rule.metric is None:
        if not 0.0 <= rule.threshold <= 1.0:
            return f"threshold {fmt_g(rule.threshold)} is outside [0, 1]; rates and recalls are fractions"
        return None
    if rule.metric.startswith("evaluate:") and not load_evaluate:
        return None
    lo, hi = get_metric(rule.metric).range
    thr = rule.threshold
    span = f"the range of {rule.metric} ([{fmt_g(lo)}, {fmt_g(hi)}])"
    if rule.kind is RuleKind.DELTA:
        if abs(thr) > hi - lo:
            return (f"a change of {fmt_g(abs(thr))} is larger than {span} allows; thresholds are fractions "
                    "(0.02, not 2)")
    elif not lo <= thr <= hi:
        return f"threshold {fmt_g(thr)} is outside {span}; thresholds are fractions (0.85, not 85)"
    return None


def _suite_stat(rule: Rule, suite: str, ctx: _Context) -> _Stat:
    """The rule's statistic on one suite: checks, pairing, bootstrap."""
    cand = checked_side(ctx.candidate, ctx.cand_point, ctx.cand_problem, suite, rule, "candidate")
    ref = None
    if rule.resolved_reference is not None:
        ref_run, ref_point, problem = _reference_run(rule, ctx)
        if ref_run is ctx.baseline and ref_run is not None:
            check_same_suite(ctx.candidate.summary, ref_run.summary, suite, rule.split)
        ref = align(cand, checked_side(ref_run, ref_point, problem, suite, rule, "reference"))
    n = int(cand.labels.shape[0])
    info: dict[str, Any] = {}
    if ref is not None and ref_run is ctx.candidate and ref.point == cand.point:
        info["note"] = f"the candidate is the reference point {cand.point!r} itself: the difference is 0"
    if rule.min_n is not None and n < rule.min_n:
        raise RuleFailure(f"n = {n} examples is below min_n = {rule.min_n}", n=n)
    key = (suite, rule.split)
    if key not in ctx.weights:
        seed = np.random.SeedSequence([ctx.policy.seed, zlib.crc32(f"{suite}/{rule.split}".encode())])
        ctx.weights[key] = cluster_weights(cand.source_ids, ctx.policy.n_resamples, seed)
    w, index = ctx.weights[key]
    info["n_clusters"] = int(w.shape[1])
    min_clusters = ctx.policy.min_clusters_of(rule)
    if w.shape[1] < min_clusters:
        raise RuleFailure(f"too few clusters: {w.shape[1]} distinct source_id values is below min_clusters = "
                           f"{min_clusters}; the bootstrap cannot see variation between documents it does not have "
                           "(give each independent document its own source_id, or add documents)", n=n)
    if rule.kind is RuleKind.NEGATIVE_FLIPS:
        point, dist, more = flip_evidence(right_or_fail(ref, rule.metric), right_or_fail(cand, rule.metric),
                                          cand.source_ids, w, index, ctx.policy.confidence)
        info.update(more)
        return _Stat(point, dist, n, info, exact=more["exact"]["bound"])
    if rule.kind is RuleKind.CLASS_RECALL_FLOOR:
        if "logits" not in cand.outputs:
            raise RuleFailure("a class recall floor needs a classification suite (class logits); this suite's "
                               "records come from a language-model task")
        point, dist, more = class_recall_evidence(cand.labels, cand.outputs["logits"], cand.source_ids, w, index,
                                                  ctx.policy.confidence)
        info.update(more)
        return _Stat(point, dist, n, info, exact=more["exact_lower"])
    spec = get_metric(rule.metric)
    info["higher_is_better"] = spec.higher_is_better
    pc = point_value(rule.metric, cand.labels, cand.outputs)
    dc = metric_distribution(rule.metric, cand.labels, cand.outputs, w, index)
    info["candidate_value"] = pc
    if rule.metric == "ece":
        info["calibration"] = {"candidate": calibration_errors(cand.labels, cand.outputs["logits"]),
                               "note": _ECE_NOTE}
    if ref is None:
        if rule.kind is RuleKind.FLOOR and not spec.higher_is_better:
            info["note"] = f"a floor on {rule.metric}, where lower is better"
        exact = None
        if spec.correct is not None:  # a share of right examples: an exact bound backs the bootstrap one
            ex = proportion_bound(right_or_fail(cand, rule.metric), cand.source_ids, ctx.policy.confidence,
                                  "lower" if rule.at_least else "upper")
            info["exact"], exact = ex, ex["bound"]
        return _Stat(pc, dc, n, info, exact=exact)
    pr = point_value(rule.metric, ref.labels, ref.outputs)
    dr = metric_distribution(rule.metric, ref.labels, ref.outputs, w, index)
    sign = 1.0 if spec.higher_is_better else -1.0
    info["reference_value"] = pr
    signs = None
    if spec.correct is not None:
        info["mcnemar"] = discordant_counts(right_or_fail(ref, rule.metric), right_or_fail(cand, rule.metric))
        signs = (info["mcnemar"]["candidate_only_right"], info["mcnemar"]["reference_only_right"])
    return _Stat(sign * (pc - pr), sign * (dc - dr), n, info, signs=signs)


_ECE_NOTE = ("ece (the judged metric) is the binned plug-in estimate, biased upward: a ceiling on it errs on the "
             "conservative side; ece_debiased_l2 is the debiased l2 estimator of Kumar et al. 2019, reported only")


def _reference_run(rule: Rule, ctx: _Context) -> tuple[RunView | None, str | None, str]:
    ref = rule.resolved_reference
    if ref is Reference.BASELINE:
        return ctx.baseline, ctx.base_point, ctx.base_problem
    return ctx.candidate, ref.value, ""
