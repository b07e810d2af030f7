"""Gate policy: the strict pydantic schema of a ``kind: policy`` YAML file (``suites/policies/*.yaml``).

A policy names a candidate point of a run (the ``chosen`` blend or the ``adapted`` model) and a list of rules. Each
rule compares the candidate with a reference (``base`` or ``adapted`` of the same run, or a stored ``baseline``
run), or with an absolute floor or ceiling, on one split of a selection of suites. Units: every value and threshold
is a fraction (0.85, not 85), like the metrics themselves.

Statistics (see :mod:`harness.gate`): differences are paired (same examples, same bootstrap resamples), clusters are
``source_id`` values, and ``mode: bound`` judges the one-sided bound at level ``confidence`` of the bootstrap
distribution instead of the point estimate. ``confidence`` is a *one-sided* level: the 0.95 default compares the
5th percentile of the gain with the threshold. (The lower end of a two-sided 95% interval is a 97.5% one-sided
bound; write ``confidence: 0.975`` to get that.)

A metric's direction comes from the metric registry (:mod:`harness.metrics.registry`), never from a rule: a
``delta`` is always measured in the metric's good direction (a gain), so ``max_drop: 0.02`` on ``ece`` allows ECE
to rise by at most 0.02.

Evidence checks (every rule, see :mod:`harness.gate`): a rule fails when its split has fewer than ``min_n``
examples or fewer than ``min_clusters`` clusters (policy default 50; the bootstrap cannot see variance between
clusters it does not have); floors, ceilings and rates on proportions are also held to a cluster-adjusted exact
(Clopper-Pearson) bound; a superiority rule (``min_delta >= 0``) needs its bound strictly above ``min_delta`` and,
on accuracy, an exact one-sided sign test on the discordant pairs at the same level; a non-inferiority rule whose
margin is below the minimum detectable effect at ``power`` is ``underpowered`` (fails, or warns with
``on_underpowered: warn``). ``suites:`` at the top of a policy names the suites a run must hold: a rule over ``id``
or ``shift`` checks every suite named there (and any other suite of that role in the run), and a missing one fails.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from enum import Enum
from typing import ClassVar, Literal, Union

from pydantic import Field, field_validator, model_validator

from harness.errors import did_you_mean, likely_typo
from harness.spec.schema import BUILTIN_METRICS, TASK_METRICS, Name, Strict

__all__ = ["RuleKind", "Aggregate", "Reference", "Mode", "CandidateChoice", "Rule", "DeclaredSuites", "GatePolicy",
           "policy_suite_notes", "policy_suite_warnings", "policy_metric_problems"]


class RuleKind(str, Enum):
    """``delta``: gain over a reference at least ``min_delta`` (or drop at most ``max_drop``); ``floor`` /
    ``ceiling``: absolute limits on the candidate's value; ``negative_flips``: share of examples the reference got
    right and the candidate gets wrong at most ``max_rate``; ``class_recall_floor``: the recall of every class
    (share of its examples predicted as it) at least ``floor``, the guard against a model that predicts one
    class; ``max_overlap``: the share of a split's rows that also occur in another split of the run (ID train, or
    the validation split of the same suite; by id or normalised text, ``summary.overlap``) at most ``max_rate``,
    the guard against train/test contamination (a split with no recorded overlap check fails, and so does
    one whose ID train split could not be read: ``summary.overlap_unchecked``)."""

    DELTA = "delta"
    FLOOR = "floor"
    CEILING = "ceiling"
    NEGATIVE_FLIPS = "negative_flips"
    CLASS_RECALL_FLOOR = "class_recall_floor"
    MAX_OVERLAP = "max_overlap"


class Aggregate(str, Enum):
    """``each``: one check per suite; ``mean``: one check on the mean over suites; ``worst``: one check on the
    worst suite (per bootstrap resample, so the bound accounts for which suite is worst)."""

    EACH = "each"
    MEAN = "mean"
    WORST = "worst"


class Reference(str, Enum):
    """``base`` / ``adapted``: that point of the candidate's own run; ``baseline``: the chosen point of the run
    directory given with ``--baseline`` (its only point when it holds one point and no selection ran)."""

    BASE = "base"
    ADAPTED = "adapted"
    BASELINE = "baseline"


class Mode(str, Enum):
    """``bound``: judge the one-sided bootstrap bound at the policy's ``confidence``; ``point``: the estimate."""

    POINT = "point"
    BOUND = "bound"


class CandidateChoice(str, Enum):
    """Which point of the run the gate judges: the ``chosen`` blend (needs a selection) or the ``adapted`` model."""

    CHOSEN = "chosen"
    ADAPTED = "adapted"


_THRESHOLDS = ("min_delta", "max_drop", "floor", "ceiling", "max_rate")
_NEEDS: dict[RuleKind, tuple[str, ...]] = {
    RuleKind.DELTA: ("min_delta", "max_drop"),
    RuleKind.FLOOR: ("floor",),
    RuleKind.CEILING: ("ceiling",),
    RuleKind.NEGATIVE_FLIPS: ("max_rate",),
    RuleKind.CLASS_RECALL_FLOOR: ("floor",),
    RuleKind.MAX_OVERLAP: ("max_rate",),
}
#: Rule kinds that count argmax correctness and take no metric.
_NO_METRIC = (RuleKind.NEGATIVE_FLIPS, RuleKind.CLASS_RECALL_FLOOR, RuleKind.MAX_OVERLAP)
#: Rule kinds judged on the candidate alone (no reference).
_ABSOLUTE = (RuleKind.FLOOR, RuleKind.CEILING, RuleKind.CLASS_RECALL_FLOOR, RuleKind.MAX_OVERLAP)


class Rule(Strict):
    """One gate rule; see the module docstring for the statistics."""

    #: Words a user may write for a threshold or a sample-size floor, to the keys they could mean (an unknown
    #: key's message names these first, :mod:`harness.spec.keys`): ``min:`` means a lower limit, not ``min_n``
    #: (the sample-size floor); ``min_samples:`` means ``min_n`` or ``min_clusters``; ``max_flips:`` ``max_rate``.
    keys_meant: ClassVar[dict[str, tuple[str, ...]]] = {
        **dict.fromkeys(("min", "minimum", "lower", "lower_bound", "at_least", "min_value", "min_gain"),
                        ("floor", "min_delta")),
        **dict.fromkeys(("max", "maximum", "upper", "upper_bound", "at_most", "max_value", "max_delta"),
                        ("ceiling", "max_drop", "max_rate")),
        **dict.fromkeys(("threshold", "limit", "bound", "margin", "value", "tolerance"), _THRESHOLDS),
        # sample size: the examples or the documents (bootstrap clusters) a suite's split must have
        **dict.fromkeys(("n", "min_samples", "min_examples", "min_size", "min_count", "min_rows", "sample_size",
                         "n_min", "min_support"), ("min_n", "min_clusters")),
        **dict.fromkeys(("min_documents", "min_docs", "min_groups", "min_sources", "min_source_ids"),
                        ("min_clusters",)),
        # rates: negative flips and train/test overlap
        **dict.fromkeys(("max_flips", "flips", "flip_rate", "max_flip_rate", "max_negative_flips",
                         "negative_flips", "rate", "max_overlap", "overlap", "overlap_rate", "contamination",
                         "max_contamination"), ("max_rate",)),
    }

    name: Name
    description: str = ""
    kind: RuleKind
    metric: str | None = Field(default=None, description="a built-in metric; not used by negative_flips and "
                                                        "class_recall_floor, which count argmax correctness")
    suites: Union[Literal["id", "shift"], list[str]] = Field(
        description="'id', 'shift' (the suites the policy declares for that role plus every suite of that role "
                    "in the run) or a list of suite names (taken as written)")
    split: str = "test"
    aggregate: Aggregate = Aggregate.EACH
    reference: Reference | None = Field(default=None, description="for delta and negative_flips; default base")
    min_delta: float | None = Field(default=None, allow_inf_nan=False,
                                    description="delta: gain at least this (negative allows a small loss)")
    max_drop: float | None = Field(default=None, ge=0.0, allow_inf_nan=False,
                                   description="delta: drop at most this (>= 0)")
    floor: float | None = Field(default=None, allow_inf_nan=False,
                                description="floor: value at least this; class_recall_floor: every class's "
                                            "recall at least this")
    ceiling: float | None = Field(default=None, allow_inf_nan=False, description="ceiling: value at most this")
    max_rate: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False,
                                   description="negative_flips: rate at most this; max_overlap: share of a split's "
                                               "rows found in another split at most this")
    mode: Mode = Mode.BOUND
    min_n: int | None = Field(default=None, ge=1, description="fail when a suite's split has fewer examples")
    min_clusters: int | None = Field(default=None, ge=1, description="fail when a suite's split has fewer "
                                                                     "clusters (source_id values); default: the "
                                                                     "policy's min_clusters")

    @field_validator(*_THRESHOLDS, mode="before")
    @classmethod
    def _finite(cls, v: object) -> object:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            raise ValueError(f"a threshold must be a finite number (a fraction such as 0.02); got {v!r}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN_METRICS:
            raise ValueError(f"gate rules take a built-in metric (its direction and paired bootstrap are known): "
                             f"one of {', '.join(BUILTIN_METRICS)}; got {v!r}"
                             f"{did_you_mean(v, BUILTIN_METRICS, families=False)}")
        return v

    @field_validator("suites")
    @classmethod
    def _suites(cls, v: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(v, list):
            if not v:
                raise ValueError("suites must name at least one suite (or be 'id' or 'shift')")
            dup = sorted({s for s in v if v.count(s) > 1})
            if dup:
                raise ValueError(f"suites are repeated: {dup}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Rule":
        needs = _NEEDS[self.kind]
        given = [t for t in _THRESHOLDS if getattr(self, t) is not None]
        stray = [t for t in given if t not in needs]
        if stray:
            raise ValueError(f"a {self.kind.value} rule takes {' or '.join(needs)}, not {', '.join(stray)}")
        chosen = [t for t in given if t in needs]
        if self.kind is RuleKind.DELTA and len(chosen) != 1:
            raise ValueError("a delta rule takes exactly one of min_delta (gain at least) or max_drop "
                             f"(drop at most); got {', '.join(chosen) or 'neither'}")
        if not chosen:
            raise ValueError(f"a {self.kind.value} rule needs {needs[0]}")
        if self.kind in _NO_METRIC:
            if self.metric is not None:
                raise ValueError(f"{self.kind.value} counts argmax correctness; remove metric")
        elif self.metric is None:
            raise ValueError(f"a {self.kind.value} rule needs metric: one of {', '.join(BUILTIN_METRICS)}")
        if self.kind in _ABSOLUTE and self.reference is not None:
            raise ValueError(f"a {self.kind.value} is absolute; remove reference")
        return self

    @property
    def resolved_reference(self) -> Reference | None:
        """The reference point kind (``base`` by default for relative rules; ``None`` for floors/ceilings)."""
        if self.kind in _ABSOLUTE:
            return None
        return self.reference or Reference.BASE

    @property
    def threshold(self) -> float:
        """The limit the judged number is compared with: ``min_delta``, ``-max_drop``, ``floor``, ``ceiling``
        or ``max_rate``."""
        if self.kind is RuleKind.DELTA:
            # 0.0 - x, not -x: max_drop 0 is a threshold of 0.0, never -0.0 (which prints as "-0.000")
            return float(self.min_delta) if self.min_delta is not None else 0.0 - float(self.max_drop)
        return float({RuleKind.FLOOR: self.floor, RuleKind.CEILING: self.ceiling,
                      RuleKind.NEGATIVE_FLIPS: self.max_rate, RuleKind.CLASS_RECALL_FLOOR: self.floor,
                      RuleKind.MAX_OVERLAP: self.max_rate}[self.kind])

    @property
    def at_least(self) -> bool:
        """Whether the judged number must be at least (``True``: delta, floor) or at most the threshold."""
        return self.kind in (RuleKind.DELTA, RuleKind.FLOOR, RuleKind.CLASS_RECALL_FLOOR)

    @property
    def superiority(self) -> bool:
        """Whether this is a superiority rule (``min_delta >= 0``: the candidate must be shown better, or at least
        ``min_delta`` better); its bound must lie strictly above ``min_delta``."""
        return self.kind is RuleKind.DELTA and self.min_delta is not None and self.min_delta >= 0.0


class DeclaredSuites(Strict):
    """The suites a policy is written for, by role; a run that lacks one fails every rule over that role."""

    id: list[Name] = Field(default_factory=list)
    shift: list[Name] = Field(default_factory=list)

    def of(self, role: str) -> list[str]:
        """The declared suites of ``role`` (``id`` or ``shift``)."""
        return list(self.id if role == "id" else self.shift)


class GatePolicy(Strict):
    """A ``kind: policy`` file: the candidate, the bootstrap settings and the rules of a release gate."""

    kind: Literal["policy"]
    schema_version: Literal[1] = 1
    name: Name
    description: str = ""
    candidate: CandidateChoice = CandidateChoice.CHOSEN
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, allow_inf_nan=False,
                              description="one-sided level of bound-mode rules (0.975 = the bound of a two-sided "
                                          "95% interval)")
    n_resamples: int = Field(default=2000, ge=200, le=100_000)
    seed: int = Field(default=0, ge=0)
    min_clusters: int = Field(default=50, ge=1, description="default of every rule's min_clusters")
    power: float = Field(default=0.80, gt=0.5, lt=1.0, allow_inf_nan=False,
                         description="power at which a non-inferiority margin must be detectable (underpowered "
                                     "check)")
    on_underpowered: Literal["fail", "warn"] = "fail"
    suites: DeclaredSuites | None = Field(default=None, description="suites a run must hold, by role")
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross(self) -> "GatePolicy":
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {dup}")
        if self.candidate is CandidateChoice.ADAPTED:
            same = [r.name for r in self.rules if r.resolved_reference is Reference.ADAPTED]
            if same:
                raise ValueError(f"rules {same} compare the adapted candidate with itself; use reference base "
                                 "or baseline")
        if self.suites is not None:
            both = sorted(set(self.suites.id) & set(self.suites.shift))
            if both:
                raise ValueError(f"suites {both} are declared both id and shift")
        return self

    def min_clusters_of(self, rule: Rule) -> int:
        """The rule's ``min_clusters``, or the policy's default."""
        return rule.min_clusters if rule.min_clusters is not None else self.min_clusters

    @property
    def needs_baseline(self) -> bool:
        """Whether any rule compares with a ``--baseline`` run."""
        return any(r.resolved_reference is Reference.BASELINE for r in self.rules)


def policy_suite_warnings(policy: GatePolicy, suites: Mapping[str, str]) -> list[str]:
    """Every line of :func:`policy_suite_notes`, typos included, in policy order."""
    return [line for _, line in policy_suite_notes(policy, suites)]


def policy_suite_notes(policy: GatePolicy, suites: Mapping[str, str], *, run: bool = False) -> list[tuple[bool, str]]:
    """What ``harness validate`` says about a policy checked together with suites: each suite name the policy uses
    (``suites.id``/``suites.shift`` at its top, or a rule's list) that none of ``suites`` has, with the closest name,
    and each declared suite whose role differs from its declaration. Warnings: a policy may be meant for other
    suites too; but a run of these suites fails the gate on each ("missing suite", wrong role). A name a few edits
    from a given suite's name (a likely typo, :func:`harness.errors.likely_typo`) is flagged, and
    ``harness validate`` treats it as an error.

    Parameters
    ----------
    policy : GatePolicy
    suites : mapping of str to str
        Name -> role (``id`` or ``shift``) of every suite given.
    run : bool, default=False
        Whether ``suites`` are one run's (``sweep --gate``, ``harness gate``): the flag then marks exactly the
        names the gate fails for sure (a rule's own list names it, or a rule over the role it is declared for judges
        it); a declared name no rule judges stays a warning, typo or not.

    Returns
    -------
    list of (bool, str)
        ``(flag, line)`` per name, in policy order (top ``suites:`` first, then the rules); ``flag``: a given
        suite's name is close to it (a likely typo), or with ``run``: the gate fails on it (a likely typo the gate
        ignores is then only named as such in the line).
    """
    where: dict[str, list[str]] = {}
    for role in ("id", "shift"):
        for name in policy.suites.of(role) if policy.suites is not None else []:
            where.setdefault(name, []).append(f"suites.{role}")
    for rule in policy.rules:
        for name in rule.suites if isinstance(rule.suites, list) else []:
            where.setdefault(name, []).append(f"rule {rule.name}")
    # the roles a rule over a role judges (``suites: id``): the gate fails such a rule on a declared suite of that
    # role the run lacks, or whose recorded role differs
    judged_roles = {getattr(r.suites, "value", r.suites) for r in policy.rules if not isinstance(r.suites, list)}
    given = ", ".join(f"{n} ({r})" for n, r in sorted(suites.items()))
    out = []
    for name, places in where.items():
        if name in suites:
            continue
        close = likely_typo(name, sorted(suites))
        typo = f"typo? the closest suite given is {close!r}; " if close else ""
        fails = any(p.startswith("rule ") or p.removeprefix("suites.") in judged_roles for p in places)
        then = ("the gate would fail it with 'missing suite'" if fails else
                "no rule judges it (it is only declared, and no rule is over that role), so the gate ignores it")
        if run:
            out.append((fails, f"policy {policy.name!r} names suite {name!r} ({', '.join(places)}) but the run has "
                        f"no suite of that name: {typo}{then} (the run's suites: {given})"))
            continue
        then = ("a run of these suites fails the gate with 'missing suite'" if fails else
                "no rule judges it (it is only declared, and no rule is over that role)")
        out.append((close is not None, f"policy {policy.name!r} names suite {name!r} ({', '.join(places)}) but no "
                    f"suite given has that name: {typo}{then} (suites given: {given}; ignore this if the policy is "
                    f"meant for other suites too)"))
    for role in ("id", "shift"):
        for name in policy.suites.of(role) if policy.suites is not None else []:
            if name in suites and suites[name] != role:
                fails = run and role in judged_roles
                out.append((fails, f"policy {policy.name!r} declares suite {name!r} under suites.{role} but the "
                                   f"suite's role is {suites[name]}: the gate fails every {role} rule on a run of "
                                   f"it; move it to suites.{suites[name]}"))
    return out


def policy_metric_problems(policy: GatePolicy, suites: Mapping[str, tuple[str, list[str]]], *,
                           run: bool = False, run_suites: Collection[str] | None = None) -> list[str]:
    """Rules whose metric a given suite they judge does not compute: the gate fails each on a run of these suites
    ("missing metric"), so ``harness validate`` (policy and suites together) and ``sweep --gate`` refuse them. The
    suites a rule judges here: its own list, or for a role rule the suites the policy declares for that role
    (``suites:`` at its top), among those given; with ``run`` also every given suite of that role, as the gate
    judges them (``run_suites``: only those named there, e.g. the suite files ``harness validate`` is given one
    by one, not found in a folder). A rule over suites of different tasks (which share no metric) is told to list
    its suites, one rule per task.

    Parameters
    ----------
    policy : GatePolicy
    suites : mapping of str to (str, list of str)
        Name -> (role ``id``/``shift``, the suite's ``metrics``) of every suite given.
    run : bool, default=False
        Whether the suites are one run's (``sweep --gate``), not files validated together.
    run_suites : collection of str, default=None
        With ``run=False``, the names among ``suites`` that a role rule judges as one run's suites of its role.

    Returns
    -------
    list of str
        One line per rule, naming the suites that lack the metric and what they compute.
    """
    out = []
    in_run = set(suites) if run else set(run_suites or ())
    for rule in policy.rules:
        if rule.metric is None:
            continue
        # a rule's own list, or the suites the policy declares for the role: a role rule also judges any other
        # suite of that role a run holds, but suites given together (a folder) need not be one run
        named = rule.suites if isinstance(rule.suites, list) else (
            policy.suites.of(rule.suites) if policy.suites is not None else [])
        if not isinstance(rule.suites, list):
            named = list(named) + sorted(n for n, (role, _) in suites.items() if role == rule.suites and n in in_run)
        names = list(dict.fromkeys(n for n in named if n in suites))
        lacking = [n for n in names if rule.metric not in suites[n][1]]
        if lacking:
            has = "; ".join(f"{n}: {', '.join(suites[n][1])}" for n in lacking)
            tasks = {n: _task_of(suites[n][1]) for n in lacking}
            can = sorted({m for t in tasks.values() if t for m in TASK_METRICS[t]})
            split = _per_task_rules(rule.metric, {n: _task_of(suites[n][1]) for n in names}, suites)
            if split:  # new-user trial: a shift rule over an ARC and a GSM8K suite cannot pass with any metric
                fix = split
            elif any(t and rule.metric not in TASK_METRICS[t] for t in tasks.values()):
                # new-user trial: "add it to the suite's metrics list" led to "metrics ['f1'] do not apply"
                kinds = ", ".join(sorted({t for t in tasks.values() if t}))
                close = likely_typo(rule.metric, can)
                fix = (f"{'typo? ' + repr(close) + '; ' if close else ''}use a metric the {kinds} task computes "
                       f"({', '.join(can)}), listed in the suite's metrics")
            else:
                fix = "use a metric they compute, or add it to the suite's metrics list"
            out.append(f"policy {policy.name!r} rule {rule.name!r} gates on metric {rule.metric!r}, which "
                       f"{'suite' if len(lacking) == 1 else 'suites'} {', '.join(lacking)} "
                       f"{'does' if len(lacking) == 1 else 'do'} not compute ({has}): the gate fails it with "
                       f"'missing metric'; {fix}")
    return out


def _per_task_rules(metric: str, tasks: Mapping[str, str | None], suites: Mapping[str, tuple[str, list[str]]]
                    ) -> str | None:
    """The fix for a rule whose suites are of two or more tasks (no metric is computed by two tasks): list the
    suites explicitly, one copy of the rule per task with a metric that task's suites compute; ``None`` when the
    suites (those whose task their metrics tell) are of one task."""
    known = {n: t for n, t in tasks.items() if t is not None}
    if len(set(known.values())) < 2:
        return None
    parts = []
    for task in dict.fromkeys(known.values()):
        group = [n for n, t in known.items() if t == task]
        shared = [m for m in suites[group[0]][1] if all(m in suites[n][1] for n in group)]
        use = metric if metric in shared else (shared or list(TASK_METRICS[task]))[0]
        parts.append(f"suites: [{', '.join(group)}] with metric: {use} ({task})")
    return ("its suites are of different tasks, which share no metric: list the suites explicitly, one rule per "
            "task (" + "; ".join(parts) + ")")


def _task_of(metrics: list[str]) -> str | None:
    """The task whose metrics (:data:`harness.spec.schema.TASK_METRICS`) include all of ``metrics`` (a suite's
    list), when exactly one does; ``None`` otherwise (``evaluate:`` metrics count as classification's)."""
    own = [m for m in metrics if not m.startswith("evaluate:")]
    found = [t for t, ms in TASK_METRICS.items() if own and all(m in ms for m in own)]
    return found[0] if len(found) == 1 else None
