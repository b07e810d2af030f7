"""The ID-vs-shift curve along alpha (the WiSE-FT figure, Wortsman et al. 2022) and its gain over the chord.

Coordinates come from summary.json: x is the selection metric on the ID suite's splits, y the same metric on the
shift suites (the mean over shift suites for the ``mean`` panel, or one shift suite per panel). Where a panel
averages several splits, the interval is the mean of their interval endpoints (see
:func:`harness.report.tables.mean_entry`).

**Gain over the chord.** The chord is the straight mix of the two endpoints at the same alpha:
``chord(alpha) = (1 - alpha) * y(base) + alpha * y(adapted)``. The gain of a blend is ``y(alpha) - chord(alpha)``,
signed so that positive is better (negated for a metric where lower is better). The same is reported for the ID
metric. A positive shift gain is robustness that neither endpoint nor their linear mix of scores would give.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from harness.report.tables import (NA, Focus, alpha_points, ensemble_points, fmt_alpha, fmt_delta, fmt_interval,
                                   fmt_value, higher_is_better, mean_entry, report_pairs)
from harness.summary import Summary

__all__ = ["MEAN_PANEL", "curve_frame", "chord_table"]

logger = logging.getLogger(__name__)

MEAN_PANEL = "mean over shift suites"
_COLUMNS = ["panel", "kind", "point", "alpha", "x", "x_lo", "x_hi", "y", "y_lo", "y_hi"]


def curve_frame(summary: Summary, metric: str, role: str = "test") -> pd.DataFrame:
    """Coordinates of every alpha point (weight space) and ensemble point (output space) in every panel.

    Parameters
    ----------
    summary : Summary
        The run's summary.
    metric : str
        Metric on both axes (the selection metric in the report).
    role : {"test", "validation"}, default="test"
        Which splits give the coordinates (see :func:`harness.report.tables.report_pairs`).

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
    rows = []
    for kind, results, pts in (("weights", summary.results, points),
                               ("ensemble", summary.ensemble, ensemble_points(summary))):
        for pid, alpha in pts:
            x = mean_entry(results, pid, id_pairs, metric)
            per_suite = {s: mean_entry(results, pid, pairs, metric) for s, pairs in shift.items()}
            stacked = np.asarray(list(per_suite.values()), dtype=float)
            mean = tuple(float(v) for v in stacked.mean(axis=0))  # NaN if any suite is missing
            for panel, y in [(MEAN_PANEL, mean)] + list(per_suite.items()):
                rows.append(dict(zip(_COLUMNS, (panel, kind, pid, alpha) + tuple(x) + tuple(y))))
    return pd.DataFrame(rows, columns=_COLUMNS)


def _endpoints(frame: pd.DataFrame, focus: Focus, column: str) -> tuple[float, float] | None:
    w = frame[frame["kind"] == "weights"].set_index("point")
    if focus.base not in w.index or focus.adapted not in w.index:
        return None
    return float(w.at[focus.base, column]), float(w.at[focus.adapted, column])


def _gain(value: float, alpha: float, ends: tuple[float, float] | None, sign: float) -> float:
    if ends is None:
        return math.nan
    return sign * (value - ((1.0 - alpha) * ends[0] + alpha * ends[1]))


def chord_table(summary: Summary, curve: pd.DataFrame, focus: Focus, metric: str) -> pd.DataFrame:
    """Per alpha: ID and mean-shift ``metric``, the chord, and the gain over the chord (module docstring).

    Columns ``over chord: <suite>`` give the shift gain per shift suite; ``ensemble mean shift`` the output-space
    ensemble at the same alpha when the run stored one.
    """
    if curve.empty:
        return pd.DataFrame()
    sign = 1.0 if higher_is_better(summary, metric) else -1.0
    sel = summary.selection
    panels = list(dict.fromkeys(curve["panel"]))
    weights = curve[curve["kind"] == "weights"]
    ens = curve[(curve["kind"] == "ensemble") & (curve["panel"] == MEAN_PANEL)]
    rows = []
    for pid, alpha in alpha_points(summary):
        here = weights[weights["point"] == pid].set_index("panel")
        mean = here.loc[MEAN_PANEL]
        row = {"α": fmt_alpha(alpha), "point": pid,
               f"ID {metric}": fmt_interval(mean["x"], mean["x_lo"], mean["x_hi"]),
               f"mean shift {metric}": fmt_interval(mean["y"], mean["y_lo"], mean["y_hi"]),
               "shift over chord": fmt_delta(_gain(mean["y"], alpha, _endpoints(
                   weights[weights["panel"] == MEAN_PANEL], focus, "y"), sign)),
               "ID over chord": fmt_delta(_gain(mean["x"], alpha, _endpoints(
                   weights[weights["panel"] == MEAN_PANEL], focus, "x"), sign))}
        for panel in panels[1:]:
            row[f"over chord: {panel}"] = fmt_delta(_gain(here.loc[panel, "y"], alpha, _endpoints(
                weights[weights["panel"] == panel], focus, "y"), sign))
        match = ens[np.isclose(ens["alpha"].astype(float), alpha, atol=1e-9)]
        if not ens.empty:
            row["ensemble mean shift"] = fmt_value(match["y"].iloc[0]) if len(match) else NA
        if sel is not None:
            row["Pareto"] = "yes" if pid in sel.pareto else ""
        row["chosen"] = "◆" if pid == focus.chosen else ""
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)
