"""The alpha search (grid or adaptive), output ensembles and the sweep result (see :mod:`harness.sweep`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.records import (PointResult, PointRole, Predictions, SplitResult, canonical_alpha, point_id)
from harness.sweep.policy import _EPS, Selection, SelectionPolicy, select_alpha, validation_scores

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
    ids, shifts, on = validation_scores(by_alpha, refs, policy.metric if metric is None else metric, policy.name)
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
