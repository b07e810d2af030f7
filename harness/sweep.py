"""Stage 7: evaluate blends over alpha and choose alpha by a stated policy, on validation splits only.

Selection policies (``--select``), all computed on splits whose role is ``validation`` (ID validation plus, where
the user provides them, shift validation); ``test`` splits are reported, never used to select:

* ``max-shift-within-id`` (default): maximise the macro mean of the selection metric over shift suites, subject
  to ID metric >= best ID - tolerance (default 0.01) over the evaluated alphas.
* ``weighted``: maximise ``w * ID + (1 - w) * mean shift`` (default w = 0.5).
* ``id-only``: maximise the ID metric.

Metrics where lower is better (nll, ece) are negated first, so "best" always means "largest goodness".
Tie-break: among alphas whose objective is within 1e-9 of the best, the smallest alpha (closest to the base
model) wins. The Pareto front is computed on (ID, mean shift) goodness over all evaluated alphas.

The adaptive search (``--alphas adaptive``) evaluates 0, 1 and 0.5, then repeatedly bisects the wider gap next to
an anchor on the 0.1 grid (alternately the chosen alpha and the best-ID alpha, which defines the constraint) until
no anchor has an unexplored grid neighbour or the budget (default 6 evaluations, 55% of the grid) is spent.

The output-space ensemble ``p(alpha) = (1 - alpha) * softmax(base) + alpha * softmax(adapted)`` (the comparison
WiSE-FT reports) is derived from stored logits at every evaluated alpha, with no forward pass.

Source: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models" (CVPR); model soups' held-out selection
(Wortsman et al. 2022, ICML).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.errors import MetricError, SpecError, format_error, unknown_name
from harness.metrics.bootstrap import cluster_weights, metric_distribution
from harness.metrics.registry import get_metric
from harness.records import (PointResult, PointRole, Predictions, SplitResult, SplitRole, SuiteRole,
                             canonical_alpha, point_id)

__all__ = ["POLICIES", "TIE_BREAK", "DEFAULT_GRID", "SelectionPolicy", "Selection", "parse_alphas",
           "parse_alphas_noted",
           "validation_scores", "select_alpha", "select_points", "pareto_front", "adaptive_alphas",
           "search_alphas", "ensemble_logits", "output_ensembles", "SweepResult", "NOISE_RULE", "SelectionNoise",
           "selection_uncertainty"]

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
        As :func:`parse_alphas`.
    """
    if spec is None:
        return DEFAULT_GRID, []
    if isinstance(spec, str):
        if spec.strip() == "adaptive":
            return "adaptive", []
        parts = [p for p in spec.replace(" ", "").split(",") if p]
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


def _goodness(metric: str, value: float) -> float:
    return value if get_metric(metric).higher_is_better else -value


def validation_scores(results: dict[float, dict[tuple, SplitResult]], refs: Iterable, metric: str | Mapping[str, str]
                      ) -> tuple[dict[float, float], dict[float, float | None], list[str]]:
    """Per-alpha ID score and macro-mean shift score (goodness of ``metric``) on validation splits only.

    ``results[alpha][ref]`` holds the :class:`SplitResult` of each split ``ref`` (a SplitRef). ``metric`` is one
    name for every suite or a mapping suite name -> metric name (suites of different tasks select on their own
    metric: ``acc_norm``, ``exact_match``, ``bits_per_byte``...); each is turned into goodness by its direction.
    ID score: mean over ID validation splits; shift score: mean over shift suites of each suite's mean over its
    validation splits (``None`` when no shift suite has a validation split).

    Raises
    ------
    SpecError
        If no ID suite has a validation split, or a result lacks the metric.
    """
    refs = [r for r in refs if r.role is SplitRole.VALIDATION]
    id_refs = [r for r in refs if r.suite_role is SuiteRole.ID]
    shift_refs = [r for r in refs if r.suite_role is SuiteRole.SHIFT]
    if not id_refs:
        raise SpecError(format_error("no ID validation split to select alpha on",
                                     expected="an ID suite (role: id) with a split of role: validation",
                                     fix="add a validation split to the ID suite (alpha is never selected on test "
                                         "splits)"))
    id_score: dict[float, float] = {}
    shift_score: dict[float, float | None] = {}
    for alpha, res in results.items():
        def val(r):
            name = metric if isinstance(metric, str) else metric[r.suite]
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


NOISE_RULE = ("among the alphas not distinguishable from the chosen one, the alpha the policy picks most often "
              "under resampling of the validation splits (ties: the smaller alpha)")


@dataclass(frozen=True)
class SelectionNoise:
    """How the alpha choice holds up under resampling of the validation splits (see
    :func:`selection_uncertainty`). Keys are alphas."""

    chosen_alpha: float
    p_selected: dict[float, float]
    indistinguishable: list[float]
    pick: float
    n_resamples: int
    seed: int
    level: float
    warning: str = ""

    def entry(self, point_of: dict[float, str]):
        """The ``summary.json`` record (:class:`harness.summary.SelectionNoise`), keyed by point id."""
        from harness.summary import SelectionNoise as Entry

        return Entry(n_resamples=self.n_resamples, seed=self.seed, level=self.level,
                     p_selected={point_of[a]: p for a, p in self.p_selected.items()},
                     indistinguishable=[point_of[a] for a in self.indistinguishable], rule=NOISE_RULE,
                     pick=point_of[self.pick], stability=self.p_selected[self.chosen_alpha], warning=self.warning)


def _resampled_goodness(by_alpha: dict[float, dict], metric: str | Mapping[str, str], n_resamples: int, seed: int
                        ) -> tuple[list, dict[tuple, np.ndarray]]:
    """Per (suite, suite role): the paired bootstrap distribution (A, B) of the goodness of each suite's
    selection ``metric`` (one name, or suite -> name) over the alphas, averaged over the suite's validation
    splits."""
    alphas = sorted(by_alpha)
    refs = [r for r in by_alpha[alphas[0]] if r.role is SplitRole.VALIDATION]
    out = {}
    for ref in refs:
        name = metric if isinstance(metric, str) else metric[ref.suite]
        sign = 1.0 if get_metric(name).higher_is_better else -1.0
        first = by_alpha[alphas[0]][ref]
        ss = np.random.SeedSequence([seed, zlib.crc32(ref.key.encode())])
        w, index = cluster_weights(first.source_ids, n_resamples, ss)
        rows = []
        for a in alphas:
            p = by_alpha[a][ref]
            if not np.array_equal(p.example_ids, first.example_ids):
                raise SpecError(format_error("predictions of one split are in different example orders across "
                                             "alphas", where=ref.key, fix="this is a bug; please report it"))
            rows.append(sign * metric_distribution(name, p.labels, p.outputs, w, index))
        out.setdefault((ref.suite, ref.suite_role), []).append(rows)
    b = min(len(r) for per in out.values() for rows in per for r in rows)  # evaluate modules: fewer resamples
    return alphas, {k: np.mean([[r[:b] for r in rows] for rows in per], axis=0) for k, per in out.items()}


def selection_uncertainty(by_alpha: dict[float, dict], selection: Selection, *, n_resamples: int = 1000,
                          seed: int = 0, level: float = 0.95,
                          metric: str | Mapping[str, str] | None = None) -> SelectionNoise:
    """Re-run the selection on paired cluster-bootstrap resamples of the validation splits.

    Parameters
    ----------
    by_alpha : dict of float to dict of SplitRef to Predictions
        The predictions of every evaluated alpha (only ``validation`` splits are read); every alpha's predictions
        of a split hold the same examples in the same order, so one resample weights them alike (paired).
    selection : Selection
        The selection made on the full validation splits (its policy is re-applied on every resample).
    metric : str or mapping of suite -> str, default=None
        The selection metric (per suite); default the policy's.
    n_resamples : int, default=1000
    seed : int, default=0
    level : float, default=0.95
        Two-sided level of the paired interval of ``objective(chosen) - objective(alpha)``: an alpha whose interval
        reaches 0 is *indistinguishable* from the chosen one.

    Returns
    -------
    SelectionNoise
        ``p_selected`` (share of resamples in which the policy picks each alpha; "probability of being best"),
        ``indistinguishable`` (sorted alphas, the chosen one included), ``pick`` (by :data:`NOISE_RULE`) and a
        ``warning`` when the choice rests on differences inside the intervals (more than one alpha is
        indistinguishable from it). The chosen alpha itself is not changed.
    """
    policy = selection.policy
    alphas, scores = _resampled_goodness(by_alpha, metric or policy.metric, n_resamples, seed)
    ids = np.mean([v for (_, role), v in scores.items() if role is SuiteRole.ID], axis=0)  # (A, B)
    shifts = [v for (_, role), v in scores.items() if role is SuiteRole.SHIFT]
    shift = np.mean(shifts, axis=0) if shifts else np.zeros_like(ids)
    if policy.name == "id-only":
        obj = ids
    elif policy.name == "weighted":
        obj = policy.weight * ids + (1 - policy.weight) * shift
    else:
        feasible = ids >= ids.max(axis=0, keepdims=True) - policy.tolerance - _EPS
        obj = np.where(feasible, shift, -1e9)
    picked = np.argmax(obj >= obj.max(axis=0, keepdims=True) - _EPS, axis=0)  # first = smallest alpha
    p_sel = {a: float(np.mean(picked == i)) for i, a in enumerate(alphas)}
    c = alphas.index(selection.chosen_alpha)
    low = np.quantile(obj[c] - obj, (1.0 - level) / 2, axis=1)
    same = [a for i, a in enumerate(alphas) if i == c or low[i] <= 0]
    pick = max(same, key=lambda a: (p_sel[a], -a))
    warning = ""
    if len(same) > 1:
        warning = (f"alpha {selection.chosen_alpha:g} was chosen on differences inside the intervals: alphas "
                   f"{', '.join(f'{a:g}' for a in same)} are not distinguishable from it on the validation splits "
                   f"(paired {level:.0%} intervals); the policy picks it in {p_sel[selection.chosen_alpha]:.0%} of "
                   f"resamples; by the stated rule the pick would be alpha {pick:g}")
    return SelectionNoise(chosen_alpha=selection.chosen_alpha, p_selected=p_sel, indistinguishable=same, pick=pick,
                          n_resamples=n_resamples, seed=seed, level=level, warning=warning)


def _bisect_next(b: float, done: list[float], grid: list[float], step: float) -> float | None:
    """The grid point that bisects the wider unexplored gap next to ``b`` (ties: the side nearer the base)."""
    left = max((a for a in done if a < b), default=None)
    right = min((a for a in done if a > b), default=None)
    gaps = []
    if left is not None and b - left > step + _EPS:
        gaps.append((b - left + _EPS, left))
    if right is not None and right - b > step + _EPS:
        gaps.append((right - b, right))
    if not gaps:
        return None
    _, other = max(gaps)
    mid = (b + other) / 2
    return min((g for g in grid if g not in done and min(b, other) < g < max(b, other)),
               key=lambda g: (abs(g - mid), abs(g - b)), default=None)


def adaptive_alphas(evaluate: Callable[[float], None], select: Callable[[], Selection], *, budget: int = 6,
                    step: float = 0.1) -> list[float]:
    """Adaptive alpha search on the ``step`` grid; returns the alphas evaluated, in order.

    Evaluates 0, 1 and 0.5, then bisects the wider unexplored gap next to an anchor on the ``step`` grid. The
    anchors alternate between the currently chosen alpha and, for ``max-shift-within-id``, the alpha with the
    best ID score: the policy's constraint (ID >= best ID - tolerance) is defined by that maximum, so the search
    must locate it too, not only climb the shift objective. Stops when no anchor has an unexplored neighbour on
    the grid or after ``budget`` evaluations. ``evaluate(alpha)`` scores one alpha; ``select()`` selects among
    those evaluated so far.
    """
    grid = [canonical_alpha(i * step) for i in range(int(round(1 / step)) + 1)]
    done: list[float] = []

    def run(a: float) -> None:
        a = canonical_alpha(a)
        if a not in done:
            evaluate(a)
            done.append(a)

    for a in (0.0, 1.0, 0.5):
        run(a)
    turn = 0
    while len(done) < max(budget, 3):
        sel = select()
        anchors = [sel.chosen_alpha]
        if sel.policy.name == "max-shift-within-id":
            best_id = max(sel.id_score, key=lambda a: (sel.id_score[a], -a))
            anchors = [best_id, sel.chosen_alpha] if turn % 2 == 0 else [sel.chosen_alpha, best_id]
        nxt = next((n for n in (_bisect_next(b, done, grid, step) for b in anchors) if n is not None), None)
        if nxt is None:
            break
        run(nxt)
        turn += 1
    return done


def ensemble_logits(base_logits: np.ndarray, adapted_logits: np.ndarray, alpha: float) -> np.ndarray:
    """Log-probabilities of the output-space ensemble ``(1 - alpha) * softmax(base) + alpha * softmax(adapted)``.

    Parameters
    ----------
    base_logits, adapted_logits : ndarray of float32, shape (n_examples, n_classes)
    alpha : float
        Weight of the adapted model's probabilities.

    Returns
    -------
    ndarray of float32, shape (n_examples, n_classes)
        ``log p``, so ``softmax`` of it gives back the mixed probabilities (metrics take it as logits).
    """
    def softmax(z):
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits give NaN rows (metrics NaN)
            z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)

    p = (1 - alpha) * softmax(base_logits) + alpha * softmax(adapted_logits)
    return np.log(np.clip(p, 1e-300, None)).astype(np.float32)


def select_points(points: Sequence[PointResult], refs: Iterable, policy: SelectionPolicy,
                  metric: str | Mapping[str, str] | None = None) -> Selection:
    """Select alpha among evaluated points (validation splits only; see :func:`select_alpha`).

    ``metric`` defaults to the policy's metric; pass a mapping suite -> metric for suites of several tasks.
    """
    by_alpha = {p.alpha: p.results for p in points}
    ids, shifts, on = validation_scores(by_alpha, refs, policy.metric if metric is None else metric)
    return select_alpha(ids, shifts, policy, on)


def search_alphas(evaluate: Callable[[float], PointResult], alphas: Sequence[float] | str, select:
                  Callable[[Sequence[PointResult]], Selection], *, budget: int = 6
                  ) -> tuple[list[PointResult], Selection, str]:
    """Evaluate the alphas of a grid (in order) or of the adaptive search, then select.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(alpha) -> PointResult`` scores one blend.
    alphas : sequence of float or ``"adaptive"``
        From :func:`parse_alphas`.
    select : callable
        ``select(points) -> Selection`` over the points evaluated so far (e.g. :func:`select_points` with the
        run's policy and splits bound).
    budget : int, default=6
        Evaluations of the adaptive search.

    Returns
    -------
    (points, selection, search)
        The points in evaluation order, the final selection and ``"grid"`` or ``"adaptive"``.
    """
    points: list[PointResult] = []
    if alphas == "adaptive":
        adaptive_alphas(lambda a: points.append(evaluate(a)), lambda: select(points), budget=budget)
        search = "adaptive"
    else:
        points = [evaluate(a) for a in alphas]
        search = "grid"
    return points, select(points), search


def output_ensembles(base: PointResult, adapted: PointResult, alphas: Iterable[float],
                     metrics_of: Callable[[Predictions], SplitResult]) -> dict[str, dict]:
    """Metrics of the output-space ensemble at each alpha (:func:`ensemble_logits`), from stored logits only.

    Only splits whose records hold classification ``logits`` have an ensemble (language-model records have no
    class distribution to mix). Returns ``{point id: {SplitRef: SplitResult}}``.
    """
    out: dict[str, dict] = {}
    for alpha in sorted(alphas):
        pid = point_id(PointRole.BLEND, alpha)
        res = {}
        for ref, pb in base.predictions.items():
            pa = adapted.predictions[ref]
            if "logits" not in pb.outputs:
                continue
            pred = Predictions(ref=ref, point=f"ensemble@{pid}", alpha=alpha, example_ids=pb.example_ids,
                               source_ids=pb.source_ids, labels=pb.labels,
                               outputs={"logits": ensemble_logits(pb.logits, pa.logits, alpha)})
            res[ref] = metrics_of(pred)
        if res:
            out[pid] = res
    return out


@dataclass(frozen=True)
class SweepResult:
    """Everything a sweep produced, built once when it ends: the points in evaluation order (each with its
    results and records), the output-ensemble results, the selection.

    ``results[point_id][ref]`` -> :class:`SplitResult`; ``predictions[point_id][ref]`` -> :class:`Predictions`.
    """

    points: tuple[PointResult, ...]
    selection: Selection
    ensemble: dict[str, dict] = field(default_factory=dict)
    search: str = "grid"
    own_head_base: PointResult | None = None

    @property
    def alphas(self) -> list[float]:
        """The alphas evaluated, in evaluation order."""
        return [p.alpha for p in self.points]

    @property
    def n_evaluations(self) -> int:
        return len(self.points)

    @property
    def results(self) -> dict[str, dict]:
        extra = [self.own_head_base] if self.own_head_base is not None else []
        return {p.id: p.results for p in extra + list(self.points)}

    @property
    def predictions(self) -> dict[str, dict]:
        extra = [self.own_head_base] if self.own_head_base is not None else []
        return {p.id: p.predictions for p in extra + list(self.points)}

    def predictions_list(self) -> list[Predictions]:
        """All stored predictions, flattened."""
        return [p for per in self.predictions.values() for p in per.values()]
