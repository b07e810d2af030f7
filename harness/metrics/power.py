"""Stage 6, power analysis of a gate policy: the false-fail rate on an equal candidate and the power against a
stated regression, by the normal approximation of each rule's one-sided bound test (``harness gate --plan``).

Model (per suite, ``n`` paired test examples, a share ``d`` on which candidate and base disagree, base accuracy
``p``, a design effect ``deff`` for clustered examples; effects are fractions in the metric's good direction):

* ``delta`` on accuracy (macro-F1 and balanced accuracy are approximated by accuracy, which they track on
  balanced classes): the paired difference has ``se = sqrt(deff * (d - effect^2) / n)``; the rule passes with
  probability ``Phi((effect + margin) / se - z_confidence)`` (:func:`harness.metrics.exact.pass_probability`);
  ``mean`` aggregates average effects and variances, ``worst`` and ``each`` multiply per-suite pass probabilities.
  A margin below the minimum detectable effect fails always when ``on_underpowered: fail``.
* ``negative_flips``: the flip rate is ``(d - effect) / 2`` with a binomial ``se``.
* ``floor`` / ``ceiling`` on accuracy and ``class_recall_floor`` (``n / n_classes`` examples per class): a
  binomial level ``p + effect``. The language models' right-or-wrong metrics (``acc``, ``acc_norm``,
  ``acc_bytes``, ``exact_match``, ``numeric_match``, ``contains``) are modelled as accuracy. Other metrics
  (ECE, token ``f1``, perplexities) are not modelled: counted as passing, and the plan says how many rules that
  leaves out of its rates.
* A rule whose suites have fewer than ``min_n`` examples fails always.

The whole gate passes only when every rule passes; rules are treated as independent, so the false-fail rate is
``1 - prod(pass)``. Rules on the same examples are positively correlated, which makes the true rate a little
lower: the plan errs on the side of reporting too many false fails. ``benchmarks/bench_gate_power.py`` measures
both numbers by simulation through :func:`harness.gate.judge`.

Note: at a drop exactly equal to a rule's margin, the power of that rule alone is its ``confidence`` whatever
``n`` is; ``n`` buys a low false-fail rate, not power at the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import DataError, SpecError, format_error
from harness.metrics.evidence import agreement_rate
from harness.metrics.exact import design_effect, min_detectable_effect, pass_probability
from harness.metrics.registry import examples_right
from harness.rundir import predictions_for, read_predictions, read_summary
from harness.spec.policy import Aggregate, CandidateChoice, GatePolicy, Mode, Rule, RuleKind
from harness.summary import Summary

__all__ = ["PlanSettings", "RulePlan", "Plan", "plan_policy", "plan_settings", "format_plan", "plan_command"]

#: Metrics the plan models as a share of examples right (the language-model ones are exactly that: each example
#: is right or wrong, as :func:`harness.metrics.registry.examples_right` scores it; macro-F1 and balanced accuracy
#: are approximated by accuracy).
_ACCURACY_LIKE = ("accuracy", "macro_f1", "balanced_accuracy", "acc", "acc_norm", "acc_bytes", "exact_match",
                  "numeric_match", "contains")


@dataclass(frozen=True)
class PlanSettings:
    """What the plan assumes.

    Attributes
    ----------
    n : int or dict of str to int
        Test examples per suite (one number for every suite, or per suite name).
    disagreement : float, default=0.10
        Share of examples on which an equal candidate and the base disagree (fraction).
    base_accuracy : float, default=0.80
    drop : float, default=0.02
        The regression to detect: accuracy drop (fraction) on ``drop_suite``.
    drop_suite : str, default=None
        The suite that regresses; default the first shift suite.
    design_effect : float, default=1.0
        Variance inflation from clustered examples (1 = independent examples).
    suites : dict of str to str, default=None
        Suite name -> role (``id``/``shift``); default the policy's declared suites, else one of each role.
    n_classes : int, default=2
    """

    n: int | dict[str, int]
    disagreement: float = 0.10
    base_accuracy: float = 0.80
    drop: float = 0.02
    drop_suite: str | None = None
    design_effect: float = 1.0
    suites: dict[str, str] | None = None
    n_classes: int = 2

    def n_of(self, suite: str) -> int:
        """Examples of ``suite``."""
        return int(self.n[suite]) if isinstance(self.n, dict) else int(self.n)


@dataclass(frozen=True)
class RulePlan:
    """One rule's pass probability with an equal candidate and under the regression."""

    rule: str
    suites: tuple[str, ...]
    pass_equal: float
    pass_drop: float
    note: str = ""
    modelled: bool = True  # False: counted as passing, left out of what the rates say


@dataclass(frozen=True)
class Plan:
    """The policy's false-fail rate (equal candidate) and power (regression), with the per-rule detail."""

    policy: str
    settings: PlanSettings
    rules: tuple[RulePlan, ...]
    false_fail: float = field(init=False)
    power: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "false_fail", 1.0 - math.prod(r.pass_equal for r in self.rules))
        object.__setattr__(self, "power", 1.0 - math.prod(r.pass_drop for r in self.rules))


def _suites_of(rule: Rule, suites: dict[str, str]) -> list[str]:
    if isinstance(rule.suites, list):
        return list(rule.suites)
    return [s for s, role in suites.items() if role == rule.suites]


def _level(rule: Rule, policy: GatePolicy) -> float:
    """The one-sided level the rule's test runs at (0.5, i.e. z = 0, for a point-mode rule)."""
    return policy.confidence if rule.mode is Mode.BOUND else 0.5


def _delta_pass(rule: Rule, policy: GatePolicy, s: PlanSettings, effects: dict[str, float]) -> tuple[float, str]:
    conf, margin = _level(rule, policy), -rule.threshold
    # the disagreement is at least the median-unbiased rate when none is seen (the gate's agreement floor,
    # harness.metrics.evidence.agreement_se): a plan from a run whose candidate and base agree everywhere
    # otherwise models se 0 and calls any margin detectable
    ses = {k: math.sqrt(max(s.design_effect * (max(s.disagreement, agreement_rate(s.n_of(k))) - e * e), 1e-12)
                        / s.n_of(k)) for k, e in effects.items()}
    note = f"{rule.metric} approximated by accuracy" if rule.metric in ("macro_f1", "balanced_accuracy") else ""
    if rule.aggregate is Aggregate.MEAN:
        k = len(effects)
        groups = [(sum(effects.values()) / k, math.sqrt(sum(v * v for v in ses.values())) / k)]
    else:
        groups = [(effects[k], ses[k]) for k in effects]
    prob = 1.0
    for effect, se in groups:
        if policy.on_underpowered == "fail" and rule.mode is Mode.BOUND and 0 < margin < \
                min_detectable_effect(se, policy.confidence, policy.power):
            return 0.0, "underpowered (fails always)"
        prob *= pass_probability(effect, margin, se, conf)
    return prob, note


def _level_pass(rule: Rule, policy: GatePolicy, s: PlanSettings, effects: dict[str, float]) -> tuple[float, str]:
    conf, prob = _level(rule, policy), 1.0
    for k, e in effects.items():
        if rule.kind is RuleKind.NEGATIVE_FLIPS:
            f = (s.disagreement - e) / 2
            se = math.sqrt(s.design_effect * f * (1 - f) / s.n_of(k))
            prob *= pass_probability(0.0, rule.threshold - f, se, conf)
            continue
        p = s.base_accuracy + e
        n = s.n_of(k) / (s.n_classes if rule.kind is RuleKind.CLASS_RECALL_FLOOR else 1)
        se = math.sqrt(s.design_effect * p * (1 - p) / n)
        one = pass_probability(0.0, p - rule.threshold if rule.at_least else rule.threshold - p, se, conf)
        prob *= one ** (s.n_classes if rule.kind is RuleKind.CLASS_RECALL_FLOOR else 1)
    return prob, ""


def _rule_plan(rule: Rule, policy: GatePolicy, s: PlanSettings, suites: dict[str, str], drop_suite: str) -> RulePlan:
    names = _suites_of(rule, suites)
    if not names:
        return RulePlan(rule.name, (), 0.0, 0.0, "no suite of this role: fails")
    if rule.min_n is not None and any(s.n_of(k) < rule.min_n for k in names):
        return RulePlan(rule.name, tuple(names), 0.0, 0.0, f"n below min_n = {rule.min_n}: fails always")
    modelled = rule.kind in (RuleKind.NEGATIVE_FLIPS, RuleKind.CLASS_RECALL_FLOOR) or rule.metric in _ACCURACY_LIKE
    if not modelled:
        return RulePlan(rule.name, tuple(names), 1.0, 1.0, f"{rule.metric} {rule.kind.value}: not modelled (counted "
                                                           "as passing)", modelled=False)
    out = []
    for effects in ({k: 0.0 for k in names}, {k: (-s.drop if k == drop_suite else 0.0) for k in names}):
        fn = _delta_pass if rule.kind is RuleKind.DELTA else _level_pass
        out.append(fn(rule, policy, s, effects))
    return RulePlan(rule.name, tuple(names), out[0][0], out[1][0], out[0][1] or out[1][1])


def plan_policy(policy: GatePolicy, settings: PlanSettings) -> Plan:
    """False-fail rate and power of ``policy`` under ``settings`` (see the module docstring for the model).

    Returns
    -------
    Plan
        ``false_fail`` = ``1 - prod(pass_equal)``, ``power`` = ``1 - prod(pass_drop)``, and one :class:`RulePlan`
        per rule.
    """
    suites = settings.suites
    if suites is None and policy.suites is not None:
        suites = {k: "id" for k in policy.suites.id} | {k: "shift" for k in policy.suites.shift}
    suites = suites or {"id": "id", "shift": "shift"}
    shifts = [k for k, r in suites.items() if r == "shift"]
    drop_suite = settings.drop_suite or (shifts[0] if shifts else next(iter(suites)))
    rules = tuple(_rule_plan(r, policy, settings, suites, drop_suite) for r in policy.rules)
    return Plan(policy.name, PlanSettings(**{**settings.__dict__, "suites": suites, "drop_suite": drop_suite}), rules)


def _floored(s: PlanSettings) -> bool:
    """Whether the plan's disagreement is below the no-disagreement floor for some suite's n (the rate the plan
    then models instead, :func:`plan_policy`)."""
    ns = s.n.values() if isinstance(s.n, dict) else [s.n]
    return any(s.disagreement < agreement_rate(n) for n in ns)


def format_plan(plan: Plan) -> str:
    """A plain-text table of the plan, for the terminal."""
    s = plan.settings
    n = s.n if isinstance(s.n, int) else ", ".join(f"{k} {v}" for k, v in s.n.items())
    lines = [f"plan for policy {plan.policy!r}: n = {n} per suite, disagreement {s.disagreement:.1%}, base accuracy "
             f"{s.base_accuracy:.1%}, design effect {s.design_effect:.2f}",
             *(["  disagreement below the floor: the rate is taken as at least the median-unbiased 1 - 0.5^(1/n) "
                "of no disagreement seen in n (docs/gate.md), so the rates below are not those of a candidate that "
                "never disagrees"] if _floored(s) else []),
             f"  regression: accuracy {s.drop:.1%} lower on {s.drop_suite}",
             f"  {'rule':34s} {'P(pass | equal)':>16s} {'P(pass | drop)':>15s}  note"]
    for r in plan.rules:
        lines.append(f"  {r.rule:34s} {r.pass_equal:16.4f} {r.pass_drop:15.4f}  {r.note}")
    lines.append(f"false-fail rate (equal candidate fails): {plan.false_fail:.2%}")
    lines.append(f"power (the regression fails the gate):   {plan.power:.2%}")
    left = [r.rule for r in plan.rules if not r.modelled]
    if left:  # CI trial: 3 of 4 rules left out, and the rates read as the policy's
        lines.append(f"{len(left)} of {len(plan.rules)} rules not modelled ({', '.join(left)}): both rates cover "
                     f"only the other {len(plan.rules) - len(left)}" if len(left) < len(plan.rules) else
                     f"no rule of the policy is modelled ({', '.join(left)}): the rates above say nothing about it")
    lines.append("normal approximation, rules treated as independent; benchmarks/bench_gate_power.py measures both "
                 "by simulation")
    return "\n".join(lines)


def plan_settings(summary: Summary, predictions: pd.DataFrame, policy: GatePolicy, *, drop: float = 0.02,
                  split: str = "test") -> PlanSettings:
    """What ``harness gate RUN --plan`` assumes, measured on a stored run's candidate and base.

    Per suite of the run with ``split``: ``n``; the disagreement (share of examples where candidate and base
    differ in correctness; the largest over suites), the base accuracy (mean over suites) and the design effect of
    the paired difference (largest over suites, :func:`harness.metrics.exact.design_effect`).

    Raises
    ------
    harness.errors.DataError
        If the run has no candidate or base predictions on ``split``.
    """
    chosen = summary.chosen
    cand = "adapted" if policy.candidate is CandidateChoice.ADAPTED else (chosen.id if chosen else None)
    n, disagree, acc, deff, roles = {}, [], [], [], {}
    for suite, info in summary.suites.items():
        rows = [predictions_for(predictions, p, suite, split) for p in (cand, "base")]
        if cand is None or any(r is None for r in rows):
            continue
        c_right, b_right = (examples_right(r[2], r[3]) for r in rows)
        if c_right is None or b_right is None:  # perplexity: no right or wrong to plan with
            continue
        b_right = b_right[pd.Index(rows[1][0]).get_indexer(rows[0][0])]
        n[suite], roles[suite] = len(c_right), info.role
        disagree.append(float((c_right != b_right).mean()))
        acc.append(float(b_right.mean()))
        deff.append(design_effect(c_right.astype(float) - b_right, rows[0][1]))
    if not n:
        raise DataError(format_error("the run has no candidate and base predictions to plan from",
                                     expected=f"points {cand!r} and 'base' on split {split!r}",
                                     fix="plan for a given size instead: harness gate --plan --plan-n N"))
    return PlanSettings(n=n, disagreement=max(disagree), base_accuracy=float(np.mean(acc)), drop=drop,
                        design_effect=max(deff), suites=roles)


def plan_command(policy_path: str | Path, run_dir: str | Path | None = None, *, n: int | None = None,
                 disagreement: float = 0.10, drop: float = 0.02, base_accuracy: float = 0.80) -> Plan:
    """``harness gate [RUN_DIR] --policy FILE --plan``: the plan for a stored run, or for ``n`` examples per suite.

    Raises
    ------
    harness.errors.SpecError
        Neither a run directory nor ``n`` given, or values out of range.
    harness.errors.DataError
        An unreadable run directory.
    """
    from harness.spec.load import load_spec

    policy = load_spec(policy_path, kind="policy")
    for name, v, lo, hi in (("--plan-disagreement", disagreement, 0.0, 1.0), ("--plan-drop", drop, 0.0, 1.0),
                            ("--plan-base-accuracy", base_accuracy, 0.0, 1.0)):
        if not lo < v < hi:
            raise SpecError(format_error(f"{name} must be a fraction in ({lo:g}, {hi:g})", where=name, got=v))
    if n is not None:
        if n < 1:
            raise SpecError(format_error("--plan-n must be a positive number of examples per suite", got=n))
        return plan_policy(policy, PlanSettings(n=n, disagreement=disagreement, drop=drop,
                                                base_accuracy=base_accuracy))
    if run_dir is None:
        raise SpecError(format_error("--plan needs a run directory or --plan-n", where="harness gate --plan",
                                     fix="harness gate RUN_DIR --policy FILE --plan, or harness gate --policy FILE "
                                         "--plan --plan-n 4300"))
    return plan_policy(policy, plan_settings(read_summary(run_dir), read_predictions(run_dir), policy, drop=drop))
