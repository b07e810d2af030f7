"""The ID-vs-shift curve along alpha (the WiSE-FT figure, Wortsman et al. 2022) and its gain over the chord.

Coordinates come from summary.json: x is the ID suite's selection metric on its splits, y each shift suite's own
selection metric (one shift suite per panel), and in the ``mean`` panel the mean over shift suites: of their
shared metric, or, when they are judged on different metrics, of goodness (lower-is-better metrics negated, as
the selection averages them). Where a panel averages several splits, the interval is the mean of their interval
endpoints: exact when the splits' errors are perfectly correlated and wider than the true interval of the mean
otherwise.

**Gain over the chord.** The chord is the straight mix of the two endpoints at the same alpha:
``chord(alpha) = (1 - alpha) * y(base) + alpha * y(adapted)``. The gain of a blend is ``y(alpha) - chord(alpha)``,
signed so that positive is better (negated for a metric where lower is better). The same is reported for the ID
metric. A positive shift gain is robustness that neither endpoint nor their linear mix of scores would give.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from harness.metrics.registry import same_scale
from harness.report.axes import Axis, metric_axis
from harness.report.tables import (NA, Focus, alpha_points, ensemble_points, entry_value, fmt_alpha, fmt_delta,
                                   fmt_interval, fmt_value, higher_is_better, report_pairs)
from harness.summary import Summary

__all__ = ["MEAN_PANEL", "MetricOf", "curve_frame", "curve_axes", "chord_table"]

logger = logging.getLogger(__name__)

MEAN_PANEL = "mean over shift suites"
_COLUMNS = ["panel", "kind", "point", "alpha", "x", "x_lo", "x_hi", "y", "y_lo", "y_hi"]
#: One metric for every suite, or a mapping suite -> metric (each suite on its own selection metric).
MetricOf = str | Mapping[str, str]


def _metric(metric: MetricOf, suite: str) -> str:
    if isinstance(metric, str):
        return metric
    return metric[suite]


def _mixed(summary: Summary, metric: MetricOf, suites: list[str]) -> bool:
    """Whether ``suites`` are judged on more than one metric (their mean is then a mean of goodness)."""
    return len({_metric(metric, s) for s in suites}) > 1


def _mean(summary: Summary, results: Mapping, pid: str, pairs: list[tuple[str, str]], metric: MetricOf,
          goodness: bool) -> tuple[float, float, float]:
    """Mean value and mean interval ends over ``pairs``, each pair on its suite's metric (NaN if any is missing).

    With ``goodness`` a lower-is-better metric is negated (its interval ends swapped), as the selection policy
    averages suites of different metrics (:func:`harness.sweep.policy.validation_scores`)."""
    vals = []
    for pair in pairs:
        name = _metric(metric, pair[0])
        m = entry_value(results, pid, pair, name)
        if m is None or m.value is None or not math.isfinite(m.value):
            return (math.nan, math.nan, math.nan)
        v, lo, hi = (math.nan if x is None else float(x) for x in (m.value, m.ci_low, m.ci_high))
        if goodness and not higher_is_better(summary, name):
            v, lo, hi = -v, -hi, -lo
        vals.append((v, lo, hi))
    if not vals:
        return (math.nan, math.nan, math.nan)
    v, lo, hi = np.asarray(vals, dtype=float).mean(axis=0)
    return float(v), float(lo), float(hi)


def _averaged(summary: Summary, metric: MetricOf, suites: list[str], mean_over: list[str] | None) -> list[str]:
    """The suites a mean averages: those in ``mean_over`` (the suites that select alpha), every suite when
    ``mean_over`` is ``None`` (a run that does not record it); when none of them selects, every suite if they
    share a metric or are all shares of examples, else none (a mean of bits_per_byte and accuracy means nothing,
    so the panel and the column stay empty)."""
    chosen = [s for s in suites if mean_over is None or s in mean_over]
    if chosen:
        return chosen
    return list(suites) if same_scale(_metric(metric, s) for s in suites) else []


def curve_frame(summary: Summary, metric: MetricOf, role: str = "test",
                mean_over: list[str] | None = None) -> pd.DataFrame:
    """Coordinates of every alpha point (weight space) and ensemble point (output space) in every panel.

    Parameters
    ----------
    summary : Summary
        The run's summary.
    metric : str or mapping of str to str
        One metric for every suite, or each suite's own metric (suite name -> metric name). x is the ID suites'
        metric and each shift panel's y that suite's metric; a mean over suites of different metrics (the
        ``MEAN_PANEL``, or several ID suites) averages goodness, negating lower-is-better metrics (see
        :func:`curve_axes` for the axis each panel gets).
    role : {"test", "validation"}, default="test"
        Which splits give the coordinates (see :func:`harness.report.tables.report_pairs`).
    mean_over : list of str, default=None
        The shift suites the ``MEAN_PANEL`` averages (those that selected alpha; a suite with ``in_selection:
        false`` is drawn in its own panel only); ``None``: every shift suite.

    Returns
    -------
    pandas.DataFrame
        Columns ``panel`` (``MEAN_PANEL`` or a shift suite name), ``kind`` (``weights`` or ``ensemble``),
        ``point``, ``alpha``, ``x``, ``x_lo``, ``x_hi``, ``y``, ``y_lo``, ``y_hi`` (NaN where missing). Empty
        when the run has no ID split, no shift split or fewer than two alpha points.
    """
    id_pairs, shift = report_pairs(summary, role)
    points = alpha_points(summary)
    if not id_pairs or not shift or len(points) < 2:
        return pd.DataFrame(columns=_COLUMNS)
    id_suites = _averaged(summary, metric, list(dict.fromkeys(s for s, _ in id_pairs)), mean_over)
    id_pairs = [p for p in id_pairs if p[0] in id_suites] or id_pairs
    x_good = _mixed(summary, metric, [s for s, _ in id_pairs])
    averaged = _averaged(summary, metric, list(shift), mean_over)
    y_good = _mixed(summary, metric, averaged)
    rows = []
    for kind, results, pts in (("weights", summary.results, points),
                               ("ensemble", summary.ensemble, ensemble_points(summary))):
        for pid, alpha in pts:
            x = _mean(summary, results, pid, id_pairs, metric, x_good)
            per_suite = {s: _mean(summary, results, pid, pairs, metric, False) for s, pairs in shift.items()}
            stacked = np.asarray([_mean(summary, results, pid, shift[s], metric, y_good) for s in averaged],
                                 dtype=float)
            mean = tuple(float(v) for v in stacked.mean(axis=0)) if averaged else (math.nan,) * 3  # NaN: missing
            for panel, y in [(MEAN_PANEL, mean)] + list(per_suite.items()):
                rows.append(dict(zip(_COLUMNS, (panel, kind, pid, alpha) + tuple(x) + tuple(y))))
    return pd.DataFrame(rows, columns=_COLUMNS)


def _group_axis(summary: Summary, metric: MetricOf, suites: list[str], prefix: str) -> Axis:
    if not suites:  # nothing averaged (:func:`_averaged`)
        return Axis("score", f"{prefix}: not averaged (the suites' metrics differ in scale)", True, None)
    names = list(dict.fromkeys(_metric(metric, s) for s in suites))
    if len(names) == 1:
        return metric_axis(prefix, names[0], higher_is_better(summary, names[0]))
    signs = {higher_is_better(summary, n) for n in names}
    negated = "" if signs == {True} else "; lower-is-better ones negated"
    ranges = {metric_axis("", n, True).valid for n in names}
    valid = ranges.pop() if len(ranges) == 1 and signs == {True} else None
    return Axis("score", f"{prefix} score: mean of each suite's own metric\n({', '.join(names)}{negated})",
                True, valid)


def curve_axes(summary: Summary, metric: MetricOf, role: str = "test",
               mean_over: list[str] | None = None) -> dict[str, tuple[Axis, Axis]]:
    """Panel -> (x axis, y axis) of the frame :func:`curve_frame` builds with the same arguments.

    x is the ID suites' metric; y is each shift suite's own metric, and in the ``MEAN_PANEL`` the shift suites'
    metric when they share one, else a mean of goodness (each suite's metric, lower-is-better ones negated).
    Lower-is-better axes say so in their label."""
    id_pairs, shift = report_pairs(summary, role)
    ids = list(dict.fromkeys(s for s, _ in id_pairs))
    x = _group_axis(summary, metric, _averaged(summary, metric, ids, mean_over) or ids, "ID")
    out = {MEAN_PANEL: (x, _group_axis(summary, metric, _averaged(summary, metric, list(shift), mean_over),
                                       "mean shift"))}
    for suite in shift:
        out[suite] = (x, _group_axis(summary, metric, [suite], suite))
    return out


def _endpoints(frame: pd.DataFrame, focus: Focus, column: str) -> tuple[float, float] | None:
    w = frame[frame["kind"] == "weights"].set_index("point")
    if focus.base not in w.index or focus.adapted not in w.index:
        return None
    return float(w.at[focus.base, column]), float(w.at[focus.adapted, column])


def _gain(value: float, alpha: float, ends: tuple[float, float] | None, sign: float) -> float:
    if ends is None:
        return math.nan
    return sign * (value - ((1.0 - alpha) * ends[0] + alpha * ends[1]))


def chord_table(summary: Summary, curve: pd.DataFrame, focus: Focus, axes: Mapping[str, tuple[Axis, Axis]]
                ) -> pd.DataFrame:
    """Per alpha: ID and mean-shift values, the chord, and the gain over the chord (module docstring).

    ``axes`` is :func:`curve_axes` of the same frame (names the columns, gives each panel's direction). Columns
    ``over chord: <suite>`` give the shift gain per shift suite, on that suite's metric; ``ensemble mean shift``
    the output-space ensemble at the same alpha when the run stored one.
    """
    if curve.empty:
        return pd.DataFrame()
    x_axis, y_axis = axes[MEAN_PANEL]
    sign = {panel: 1.0 if y.higher_is_better else -1.0 for panel, (_, y) in axes.items()}
    sel = summary.selection
    panels = list(dict.fromkeys(curve["panel"]))
    weights = curve[curve["kind"] == "weights"]
    ens = curve[(curve["kind"] == "ensemble") & (curve["panel"] == MEAN_PANEL)]
    rows = []
    for pid, alpha in alpha_points(summary):
        here = weights[weights["point"] == pid].set_index("panel")
        mean = here.loc[MEAN_PANEL]
        row = {"α": fmt_alpha(alpha), "point": pid,
               f"ID {x_axis.metric}": fmt_interval(mean["x"], mean["x_lo"], mean["x_hi"]),
               f"mean shift {y_axis.metric}": fmt_interval(mean["y"], mean["y_lo"], mean["y_hi"]),
               "shift over chord": fmt_delta(_gain(mean["y"], alpha, _endpoints(
                   weights[weights["panel"] == MEAN_PANEL], focus, "y"), sign[MEAN_PANEL])),
               "ID over chord": fmt_delta(_gain(mean["x"], alpha, _endpoints(
                   weights[weights["panel"] == MEAN_PANEL], focus, "x"), 1.0 if x_axis.higher_is_better else -1.0))}
        for panel in panels[1:]:
            row[f"over chord: {panel}"] = fmt_delta(_gain(here.loc[panel, "y"], alpha, _endpoints(
                weights[weights["panel"] == panel], focus, "y"), sign[panel]))
        match = ens[np.isclose(ens["alpha"].astype(float), alpha, atol=1e-9)]
        if not ens.empty:
            row["ensemble mean shift"] = fmt_value(match["y"].iloc[0]) if len(match) else NA
        if sel is not None:
            row["Pareto"] = "yes" if pid in sel.pareto else ""
        row["chosen"] = "◆" if pid == focus.chosen else ""
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)
