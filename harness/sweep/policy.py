"""Selection policies, alpha parsing and the choice of alpha on validation splits (see :mod:`harness.sweep`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import MetricError, SpecError, format_error, unknown_name
from harness.metrics.registry import get_metric, is_share, same_scale
from harness.records import (SplitResult, SplitRole, SuiteRole, canonical_alpha)

POLICIES = ("max-shift-within-id", "weighted", "id-only")
TIE_BREAK = "smallest alpha (closest to base) among alphas whose objective is within 1e-9 of the best"
DEFAULT_GRID = tuple(canonical_alpha(i / 10) for i in range(11))
_EPS = 1e-9


@dataclass(frozen=True)
class SelectionPolicy:
    """How to choose alpha: ``name`` in :data:`POLICIES`, the selection ``metric`` (``None``: each suite's own,
    :attr:`harness.spec.schema.Suite.selection_metric`), the ID ``tolerance`` (a fraction, for
    max-shift-within-id) and the ID ``weight`` w in [0, 1] (for weighted).

    Raises
    ------
    SpecError
        For an unknown policy name or out-of-range parameters.
    """

    name: str = "max-shift-within-id"
    metric: str | None = None
    tolerance: float = 0.01
    weight: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise SpecError(unknown_name("selection policy (--select)", self.name, POLICIES))
        if not (math.isfinite(self.tolerance) and 0.0 <= self.tolerance <= 1.0):
            raise SpecError(format_error("tolerance out of range", where="--tolerance", expected="a fraction in [0, 1]",
                                         got=self.tolerance))
        if not (math.isfinite(self.weight) and 0.0 <= self.weight <= 1.0):
            raise SpecError(format_error("weight out of range", where="--weight", expected="a fraction in [0, 1]",
                                         got=self.weight))

    @property
    def params(self) -> dict[str, float]:
        """The parameters that matter for this policy (recorded in summary.json)."""
        if self.name == "max-shift-within-id":
            return {"tolerance": self.tolerance}
        if self.name == "weighted":
            return {"weight": self.weight}
        return {}


@dataclass(frozen=True)
class Selection:
    """The outcome of a selection: chosen alpha, objective and feasibility per alpha, the Pareto front (alphas)
    and the validation splits (``suite/split``) that selected."""

    policy: SelectionPolicy
    chosen_alpha: float
    objective: dict[float, float]
    feasible: dict[float, bool]
    pareto: list[float]
    selected_on: list[str]
    id_score: dict[float, float]
    shift_score: dict[float, float | None]


def parse_alphas(spec: str | Sequence[float] | None) -> tuple[float, ...] | str:
    """Parse ``--alphas``: ``None`` (the default grid 0, 0.1, ..., 1), ``"adaptive"``, a comma list such as
    ``"0,0.25,0.5,1"`` or a sequence of floats. Alphas are canonical decimals, sorted, deduplicated; 0 and 1 are
    always included (the base and adapted endpoints). :func:`parse_alphas_noted` says what was rewritten.

    Raises
    ------
    SpecError
        For values that are not numbers in [0, 1], or an empty list.
    """
    return parse_alphas_noted(spec)[0]


def parse_alphas_noted(spec: str | Sequence[float] | None) -> tuple[tuple[float, ...] | str, list[str]]:
    """:func:`parse_alphas` plus one note per rewrite of the list given (issue 17: nothing is rewritten silently):
    rounding to 6 decimals, duplicates (also after rounding), sorting, and the endpoints 0 and 1 added.

    Raises
    ------
    SpecError
        As :func:`parse_alphas`, and for an empty item in a comma list (``"0,,1"``, ``"0,1,"``).
    """
    if spec is None:
        return DEFAULT_GRID, []
    if isinstance(spec, str):
        if spec.strip() == "adaptive":
            return "adaptive", []
        parts = spec.replace(" ", "").split(",") if spec.strip() else []
        if "" in parts:  # "0,,1" or "0,1,": a number left out, or a stray comma; either way not silently dropped
            raise SpecError(format_error("the list of alphas has an empty item", where="--alphas",
                                         expected="numbers in [0, 1] separated by single commas, e.g. 0,0.5,1",
                                         got=repr(spec), fix="remove the extra comma, or put back the number"))
    else:
        parts = list(spec)
    if not parts:
        raise SpecError(format_error("the list of alphas is empty", where="--alphas",
                                     expected="e.g. 0,0.1,0.5,1 or adaptive (or leave --alphas out for 0, 0.1, ..., 1)",
                                     got=repr(spec)))
    given: list[float] = []
    notes: list[str] = []
    for p in parts:
        try:
            raw = float(p)
            a = canonical_alpha(raw)
        except (TypeError, ValueError) as e:
            raise SpecError(format_error("alpha must be a number in [0, 1]", where="--alphas",
                                         expected="e.g. 0,0.1,0.5,1 or adaptive", got=p)) from e
        if abs(a - raw) > 1e-9:
            notes.append(f"alpha {p} is kept to 6 decimals: {a:g}" + (" (already in the list)" if a in given else ""))
        elif a in given:
            notes.append(f"alpha {a:g} is given twice; evaluated once")
        given.append(a)
    out = tuple(sorted(set(given) | {0.0, 1.0}))
    added = [f"{e:g}" for e in (0.0, 1.0) if e not in given]
    if added:
        notes.append(f"alpha {' and '.join(added)} added (the base and adapted endpoints are always evaluated)")
    if list(dict.fromkeys(given)) != sorted(set(given)):
        notes.append("alphas sorted in increasing order")
    if notes:
        notes.append(f"alphas evaluated: {', '.join(f'{a:g}' for a in out)}")
    return out, notes


def selects(metric: str | Mapping[str, str] | None, suite: str) -> bool:
    """Whether ``suite`` enters the selection: always with one metric name, else when the mapping names it (the
    pipeline leaves out suites with ``in_selection: false``)."""
    return not isinstance(metric, Mapping) or suite in metric


def metric_for(metric: str | Mapping[str, str] | None, suite: str) -> str:
    """The selection metric of ``suite``: one name for every suite, a mapping suite -> name, or ``None`` for
    ``accuracy`` (the classification default; the pipeline passes each suite's own metric)."""
    if metric is None:
        return "accuracy"
    return metric if isinstance(metric, str) else metric[suite]


def _goodness(metric: str, value: float) -> float:
    return value if get_metric(metric).higher_is_better else -value


def check_selectable(suites: Sequence, metric: str | None = None, policy: str = "max-shift-within-id") -> None:
    """Refuse, before any model is loaded, a sweep that could not select alpha, or would select it on a
    meaningless score: no ID suite among ``suites`` that selects (``in_selection``); no ID suite with a validation
    split (a derived ID suite, whose splits come from its parent, is trusted here); a policy that weighs shift
    (every one but ``id-only``) when ``in_selection: false`` leaves out every shift suite given; or scores that
    would average metrics of different scales (:func:`check_comparable`).

    Parameters
    ----------
    suites : sequence of (Suite, Path or None)
        As :func:`harness.pipeline.common.load_suites` returns them.
    metric : str, default=None
        ``--select-metric`` (one metric for every suite), else each suite's own ``selection_metric``.
    policy : str, default="max-shift-within-id"
        The selection policy's name (:data:`POLICIES`).

    Raises
    ------
    SpecError
        Naming the suites given, their roles and selection metrics.
    """
    given = ", ".join(f"{s.name} (role: {s.role.value}{'' if s.in_selection else ', in_selection: false'})"
                      for s, _ in suites)
    ids = [s for s, _ in suites if s.role is SuiteRole.ID and s.in_selection]
    if not ids:
        raise SpecError(format_error("none of the --suite files is an ID suite (role: id) that selects alpha, so "
                                     "alpha cannot be selected", where="--suite",
                                     expected="at least one suite with role: id (and in_selection left true)",
                                     got=given, fix="pass the ID suite too (alpha is selected on its validation "
                                                    "split; shift suites are scored against it)"))
    if not any(s.derived_from is not None and not s.splits for s in ids) and \
            not any(sp.role is SplitRole.VALIDATION for s in ids for sp in s.splits):
        names = ", ".join(f"{s.name}: {', '.join(f'{sp.name} (role: {sp.role.value})' for sp in s.splits)}"
                          for s in ids)
        raise SpecError(format_error("no ID validation split to select alpha on", where="--suite",
                                     expected="an ID suite (role: id) with a split of role: validation",
                                     got=names, fix="add a split with role: validation to the ID suite (alpha is "
                                                    "never selected on test splits)"))
    by_name = {s.name: s for s, _ in suites}
    selecting = [s for s, _ in suites if s.in_selection and _validates(s, by_name) is not False]
    # every selecting suite with a validation split is scored on --select-metric, shift ones under id-only too
    # (the shift score and the Pareto front are recorded); a derived suite whose parent is not given is left to
    # the scoring, which knows its splits
    lacking = [s for s in selecting if metric is not None and metric not in s.metrics
               and _validates(s, by_name) is True]
    if lacking:  # caught here, not after every alpha is scored (trial)
        raise SpecError(format_error(
            f"--select-metric {metric} is not among the metrics of {', '.join(s.name for s in lacking)}",
            where="--select-metric", expected="a metric every selecting suite computes",
            got="; ".join(f"{s.name} ({s.task_name}): {', '.join(s.metrics)}" for s in lacking),
            fix="choose one of those metrics, or drop --select-metric (each suite then selects on its own "
                "select_metric)"))
    if policy != "id-only" and not any(s.role is SuiteRole.SHIFT for s in selecting):
        shifts = [s for s, _ in suites if s.role is SuiteRole.SHIFT]
        if any(not s.in_selection for s in shifts):  # in_selection: false left every shift suite out
            raise SpecError(format_error(
                f"the {policy} policy weighs the shift score, but no shift suite selects alpha", where="--suite",
                expected="a shift suite with a validation split and in_selection left true", got=given,
                fix="give a shift suite a validation split or set its in_selection back to true, or pass --select "
                    "id-only"))
        got = ", ".join(f"{s.name}: {', '.join(f'{sp.name} (role: {sp.role.value})' for sp in s.splits)}"
                        for s in shifts) if shifts else f"no shift suite among {given}"
        raise SpecError(format_error(
            f"the {policy} policy needs a shift validation split, and no shift suite has one", where="--suite",
            expected="a shift suite (role: shift) with a split of role: validation", got=got,
            fix="pass a shift suite with a validation split (or add one to a shift suite given), or pass --select "
                "id-only to select on the ID score alone"))
    check_comparable([(s.name, s.role, metric or s.selection_metric) for s in selecting
                      if _validates(s, by_name) is True], policy)


def _validates(suite, by_name: Mapping) -> bool | None:
    """Whether ``suite`` has a validation split (``None``: a derived suite whose parent is not among the suites
    given, so its splits' roles are not known here)."""
    if suite.derived_from is None or suite.splits:
        return any(sp.role is SplitRole.VALIDATION for sp in suite.splits)
    parent = by_name.get(suite.derived_from.suite)
    if parent is None:
        return None
    roles = {sp.name: sp.role for sp in parent.splits}
    return any(roles.get(name) is SplitRole.VALIDATION for name in suite.derived_from.split_names)


def _described(name: str) -> str:
    spec = get_metric(name)
    lo, hi = spec.range
    return f"{name} ({lo:g} to {hi:g}, {'higher' if spec.higher_is_better else 'lower'} is better)"


def check_comparable(selected: Sequence[tuple], policy: str = "max-shift-within-id") -> None:
    """Refuse a selection that would average metrics of different scales.

    The ID score is the mean over the ID suites' validation splits and the shift score the mean over the shift
    suites (:func:`validation_scores`), each suite on its own selection metric turned into goodness; the
    ``weighted`` policy then adds the two. Shares of examples (accuracy, acc_norm, exact_match, ...) average
    meaningfully; bits_per_byte (0 to infinity, lower is better) next to accuracy does not: one suite's unit would
    outweigh the others' and decide alpha (new-user trial, 2026-12-01: a bits_per_byte shift suite beside
    acc_norm and exact_match ones chose alpha). One metric for a whole group, whatever it is, is fine. Under
    ``id-only`` the shift score moves nothing and is not checked; under ``weighted`` ID and shift together form
    one group.

    Parameters
    ----------
    selected : sequence of (str, SuiteRole, str)
        Each suite that enters the selection (it has a validation split and ``in_selection``), its role and its
        selection metric.
    policy : str, default="max-shift-within-id"

    Raises
    ------
    SpecError
        Naming each suite of the offending group with its metric, its range and direction, and the ways out.
    """
    groups = {"id": [SuiteRole.ID]} if policy == "id-only" else {"id": [SuiteRole.ID], "shift": [SuiteRole.SHIFT]}
    if policy == "weighted":
        groups["ID and shift"] = [SuiteRole.ID, SuiteRole.SHIFT]
    for label, roles in groups.items():
        metrics = {name: m for name, role, m in selected if role in roles}
        if same_scale(metrics.values()):
            continue
        got = "; ".join(f"{suite}: {_described(m)}" for suite, m in metrics.items())
        odd = [suite for suite, m in metrics.items() if not is_share(m)] or list(metrics)
        what = ("the weighted policy's sum of the ID and shift scores" if len(roles) == 2 else
                f"the {label} score that selects alpha")
        raise SpecError(format_error(
            f"{what} would average metrics of different scales", where="--suite",
            expected=f"the {label} suites selecting on one metric, or each on a share of examples in [0, 1] "
                     "(accuracy, acc, acc_norm, exact_match, ...)", got=got,
            fix=f"set `in_selection: false` in {', '.join(odd)} (still evaluated, reported and judged by gate "
                "rules, but not selected on), give it a `select_metric:` that is a share of examples, or pass "
                "--select-metric NAME if every suite computes NAME"))


def validation_scores(results: dict[float, dict[tuple, SplitResult]], refs: Iterable, metric: str | Mapping[str, str],
                      policy: str = "max-shift-within-id"
                      ) -> tuple[dict[float, float], dict[float, float | None], list[str]]:
    """Per-alpha ID score and macro-mean shift score (goodness of ``metric``) on validation splits only.

    ``results[alpha][ref]`` holds the :class:`SplitResult` of each split ``ref`` (a SplitRef). ``metric`` is one
    name for every suite or a mapping suite name -> metric name (suites of different tasks select on their own
    metric: ``acc_norm``, ``exact_match``, ``bits_per_byte``...; a suite the mapping leaves out is not selected
    on); each is turned into goodness by its direction. An ID or shift group whose metrics do not share a scale
    is refused (:func:`check_comparable` under ``policy``, the selection policy's name): before the sweep for the
    suites :func:`check_selectable` can see, here for the rest (a derived suite whose parent was read from a file).
    ID score: mean over ID validation splits; shift score: mean over shift suites of each suite's mean over its
    validation splits (``None`` when no shift suite has a validation split).

    Raises
    ------
    SpecError
        If no ID suite has a validation split, or a result lacks the metric.
    """
    refs = [r for r in refs if r.role is SplitRole.VALIDATION and selects(metric, r.suite)]
    id_refs = [r for r in refs if r.suite_role is SuiteRole.ID]
    shift_refs = [r for r in refs if r.suite_role is SuiteRole.SHIFT]
    if not id_refs:
        raise SpecError(format_error("no ID validation split to select alpha on",
                                     expected="an ID suite (role: id) with a split of role: validation",
                                     fix="add a validation split to the ID suite (alpha is never selected on test "
                                         "splits)"))
    check_comparable(list({r.suite: (r.suite, r.suite_role, metric_for(metric, r.suite))
                           for r in id_refs + shift_refs}.values()), policy)  # derived suites only known here
    id_score: dict[float, float] = {}
    shift_score: dict[float, float | None] = {}
    for alpha, res in results.items():
        def val(r):
            name = metric_for(metric, r.suite)
            m = res[r].metrics.get(name)
            if m is None:
                raise SpecError(format_error(f"selection metric {name!r} was not computed", where=r.key,
                                             fix=f"add {name} to the suite's metrics or choose another "
                                                 "--select-metric"))
            return _goodness(name, m.value)

        id_score[alpha] = float(np.mean([val(r) for r in id_refs]))
        suites: dict[str, list[float]] = {}
        for r in shift_refs:
            suites.setdefault(r.suite, []).append(val(r))
        shift_score[alpha] = float(np.mean([np.mean(v) for v in suites.values()])) if suites else None
    return id_score, shift_score, [r.key for r in id_refs + shift_refs]


def pareto_front(id_score: dict[float, float], shift_score: dict[float, float | None]) -> list[float]:
    """Alphas not dominated in (ID goodness, mean-shift goodness): no other alpha is at least as good on both
    and strictly better on one. Without shift scores, the alphas with the best ID score."""
    alphas = sorted(id_score)
    if any(shift_score.get(a) is None for a in alphas):
        best = max(id_score.values())
        return [a for a in alphas if id_score[a] >= best - _EPS]
    front = []
    for a in alphas:
        dominated = any(
            id_score[b] >= id_score[a] - _EPS and shift_score[b] >= shift_score[a] - _EPS
            and (id_score[b] > id_score[a] + _EPS or shift_score[b] > shift_score[a] + _EPS)
            for b in alphas if b != a)
        if not dominated:
            front.append(a)
    return front


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def select_alpha(id_score: dict[float, float], shift_score: dict[float, float | None], policy: SelectionPolicy,
                 selected_on: list[str]) -> Selection:
    """Apply ``policy`` to per-alpha validation scores (see the module docstring for the rules and tie-break).

    Raises
    ------
    SpecError
        If a policy that needs shift scores has none (the message points to ``--select id-only``).
    MetricError
        If every alpha has a NaN score (alphas with NaN scores are infeasible).
    """
    alphas = sorted(id_score)
    if policy.name != "id-only" and any(shift_score.get(a) is None for a in alphas):
        raise SpecError(format_error(f"selection policy {policy.name!r} needs a shift validation split",
                                     expected="at least one shift suite with a split of role: validation",
                                     fix="add validation splits to the shift suites, or pass --select id-only"))
    # an alpha whose scores are NaN (non-finite outputs, e.g. an fp16 overflow) is infeasible: never chosen, and
    # left out of the best ID score the tolerance is measured from
    usable = {a: _finite(id_score[a]) and (policy.name == "id-only" or _finite(shift_score[a])) for a in alphas}
    if policy.name == "id-only":
        objective = dict(id_score)
        feasible = dict(usable)
    elif policy.name == "weighted":
        objective = {a: policy.weight * id_score[a] + (1 - policy.weight) * shift_score[a] for a in alphas}
        feasible = dict(usable)
    else:
        best_id = max((id_score[a] for a in alphas if usable[a]), default=math.nan)
        feasible = {a: usable[a] and id_score[a] >= best_id - policy.tolerance - _EPS for a in alphas}
        objective = {a: shift_score[a] for a in alphas}
    candidates = [a for a in alphas if feasible[a]]
    if not candidates:
        raise MetricError(format_error(
            "every alpha has NaN validation metrics, so none can be selected", where=", ".join(selected_on),
            got=f"ID scores {id_score}, shift scores {shift_score}",
            fix="look for non-finite outputs in the notes (an fp16 overflow: rerun with --dtype bf16 or fp32)"))
    best = max(objective[a] for a in candidates)
    chosen = min(a for a in candidates if objective[a] >= best - _EPS)
    return Selection(policy=policy, chosen_alpha=chosen, objective=objective, feasible=feasible,
                     pareto=pareto_front(id_score, shift_score), selected_on=selected_on, id_score=id_score,
                     shift_score=shift_score)


