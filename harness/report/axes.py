"""Axes that cannot show impossible values: what a figure axis plots (metric, direction, valid range) and limits
clipped to that range.

A metric's valid range comes from the metric registry (:data:`harness.metrics.registry.METRICS`: accuracy-type
metrics lie in [0, 1], perplexities in [1, inf), ...). Limits are the data extent (points and interval ends)
padded for labels, then clipped to the valid range plus a small margin (so a marker at 1.0 is not cut in half);
ticks outside the valid range are never drawn, so an accuracy axis never shows 1.05.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator

from harness.metrics.registry import METRICS

__all__ = ["Axis", "metric_axis", "valid_range", "RangeLocator", "fit_axis", "EDGE_MARGIN"]

logger = logging.getLogger(__name__)

#: Margin beyond a valid-range end, as a fraction of the shown span (room for a marker drawn at the end).
EDGE_MARGIN = 0.03


@dataclass(frozen=True)
class Axis:
    """What one figure axis plots.

    ``metric`` names the quantity (a metric name, or a description of a mean of several suites' metrics),
    ``label`` is the full axis label, ``higher_is_better`` its direction and ``valid`` the range its values
    can take (``None``: unbounded or unknown)."""

    metric: str
    label: str
    higher_is_better: bool = True
    valid: tuple[float, float] | None = None


def valid_range(metric: str) -> tuple[float, float] | None:
    """The registry's valid range of ``metric`` (``None`` for a name the registry does not hold)."""
    spec = METRICS.get(metric)
    return tuple(float(v) for v in spec.range) if spec is not None else None


def metric_axis(prefix: str, metric: str, higher_is_better: bool) -> Axis:
    """Axis of one metric: ``"<prefix> <metric>"``, with ``(lower is better)`` appended for such a metric."""
    label = f"{prefix} {metric}".strip() + ("" if higher_is_better else " (lower is better)")
    return Axis(metric, label, higher_is_better, valid_range(metric))


class RangeLocator(MaxNLocator):
    """matplotlib's automatic ticks, without those outside ``[lo, hi]``."""

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__(nbins="auto", steps=[1, 2, 2.5, 5, 10])
        self.lo, self.hi = lo, hi

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        ticks = super().tick_values(vmin, vmax)
        eps = 1e-9 * max(abs(vmax - vmin), 1e-12)
        return ticks[(ticks >= self.lo - eps) & (ticks <= self.hi + eps)]


def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float).ravel()
    return a[np.isfinite(a)]


def fit_axis(ax, which: str, values: Sequence[float], valid: tuple[float, float] | None, *,
             pad: float = 0.1) -> tuple[float, float] | None:
    """Set the ``which`` ("x" or "y") limits of ``ax`` to ``values``' extent padded by ``pad`` of the span,
    clipped to ``valid`` widened by :data:`EDGE_MARGIN`, and drop ticks outside ``valid``.

    Returns the limits set, or ``None`` (limits left alone) when ``values`` has no finite number.
    """
    v = _finite(values)
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:  # one value: a window around it
        half = max(abs(hi) * 0.025, 0.005)
        lo, hi = lo - half, hi + half
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    if valid is not None:
        vlo, vhi = valid
        margin = EDGE_MARGIN * (hi - lo)
        if math.isfinite(vlo):
            lo = max(lo, vlo - margin)
        if math.isfinite(vhi):
            hi = min(hi, vhi + margin)
        (ax.xaxis if which == "x" else ax.yaxis).set_major_locator(RangeLocator(vlo, vhi))
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
    return lo, hi
