"""Figures of the report, drawn with matplotlib's Agg canvas directly.

No pyplot: each figure is a :class:`matplotlib.figure.Figure` bound to a :class:`FigureCanvasAgg`, so nothing is
registered in pyplot's figure manager and nothing outlives the call. Style settings (DejaVu Sans, sizes, a fixed
``svg.hashsalt``) apply inside :func:`matplotlib.rc_context` only and are restored afterwards. PNGs are written
at a fixed dpi without the ``Software`` metadata entry, so the same inputs give byte-identical files.

Colours are fixed across figures: base grey, adapted orange, chosen blend green.
"""

from __future__ import annotations

import io
import logging
import math
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.io import atomic_write_bytes
from harness.report.curve import MEAN_PANEL
from harness.report.axes import Axis, RangeLocator, fit_axis, metric_axis, valid_range
from harness.report.labels import PointLabel, coincident, place_labels
from harness.report.tables import fmt_alpha, fmt_delta, fmt_value

__all__ = ["DPI", "COLORS", "SUITE_COLORS", "color_of", "grid_shape", "pareto_front", "pareto_label", "Bars", "Line",
           "plot_id_vs_shift", "plot_before_after", "plot_metric_vs_alpha"]

logger = logging.getLogger(__name__)

DPI = 110
COLORS = {"base": "#7f7f7f", "adapted": "#ff7f0e", "chosen": "#2ca02c"}
_CURVE, _ENSEMBLE = "#1f77b4", "#8c564b"
SUITE_COLORS = ["#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e",
                 "#2ca02c", "#7f7f7f"]
_RC = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
       "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3,
       "grid.linewidth": 0.6, "svg.hashsalt": "harness-report", "figure.dpi": DPI, "savefig.dpi": DPI,
       "legend.framealpha": 0.9, "axes.spines.top": False, "axes.spines.right": False}


def color_of(label: str) -> str:
    """Fixed colour of a focus column (``base``, ``adapted``, ``chosen ...``)."""
    return COLORS.get(label.split(" ")[0], _CURVE)


@contextmanager
def _figure(path: Path, width: float, height: float) -> Iterator[Figure]:
    """Yield a pyplot-free figure; on normal exit it is saved as a deterministic PNG at ``path``."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    logger.debug("wrote %s", path)


def _err(v: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    v, lo, hi = (np.asarray(a, dtype=float) for a in (v, lo, hi))
    return np.clip(np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0), 0.0, None)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels: up to 3 columns, 4 once there are more than 9 panels, so a run
    with many suites gives a tall grid rather than one strip."""
    ncols = max(1, min(n, 3) if n <= 9 else 4)
    return math.ceil(max(n, 1) / ncols), ncols


def pareto_front(x: Sequence[float], y: Sequence[float],
                 higher_is_better: bool | tuple[bool, bool] = True) -> np.ndarray:
    """Boolean mask (n,) of the points no other point beats on both coordinates (NaN points are never on it).

    A point is dominated when another is at least as good on x and on y and strictly better on one; "good" is
    larger when ``higher_is_better`` (one flag for both coordinates, or one per coordinate), else smaller.
    """
    hib = (higher_is_better, higher_is_better) if isinstance(higher_is_better, bool) else higher_is_better
    pts = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    pts = pts * np.where(np.asarray(hib, dtype=bool), 1.0, -1.0)
    ok = np.isfinite(pts).all(axis=1)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = pts[ok]
        front[i] = not np.any((others >= pts[i]).all(axis=1) & (others > pts[i]).any(axis=1))
    return front


def _finite_xy(r) -> bool:
    return math.isfinite(r["x"]) and math.isfinite(r["y"])


def _radius_px(size_pt2: float) -> float:
    """Radius in display pixels of a scatter marker of ``size_pt2`` (points squared)."""
    return math.sqrt(size_pt2) / 2 * DPI / 72


_S_POINT, _S_RING, _S_STAR, _S_END = 16, 120, 330, 55  # marker sizes (points squared)
_ENSEMBLE_MS = 4  # the ensemble's × (points)


def _labels(w: pd.DataFrame, e: pd.DataFrame, ends: pd.DataFrame, base: str | None, adapted: str | None,
            chosen: str | None, ring: np.ndarray) -> tuple[list[PointLabel], list[tuple[float, float, float]], list]:
    """The panel's labels in priority order (base, adapted, then the alpha numbers; one label per spot, naming
    every alpha drawn there: "0.5, 0.8", "adapted (α=1; also α=0.8)"), every drawn marker (x, y,
    radius in pixels: blend points, base/adapted, the star, rings and the ensemble's ×) and the chord segment,
    for :func:`harness.report.labels.place_labels`."""
    alpha_of = dict(zip(w["point"], w["alpha"]))
    groups = coincident(zip(w["x"], w["y"], w["point"]))  # points on one spot share one label ("0.5, 0.8")
    also = {}  # the point whose label a spot gets (base or adapted where either is there) -> the blends' alphas
    for _, _, pids in groups:
        owner = base if base in pids else adapted if adapted in pids else pids[0]
        also[owner] = [fmt_alpha(alpha_of[p]) for p in pids if p not in (base, adapted)]
    labels = []
    for pid, key, text in ((base, "base", "base"), (adapted, "adapted", "adapted")):
        if pid in ends.index and _finite_xy(ends.loc[pid]):
            same = f"; also α={', '.join(also[pid])}" if also.get(pid) else ""
            labels.append(PointLabel(ends.at[pid, "x"], ends.at[pid, "y"],
                                     f"{text} (α={fmt_alpha(ends.at[pid, 'alpha'])}{same})",
                                     {"fontsize": 7.5, "color": COLORS[key], "fontweight": "bold", "zorder": 7,
                                      "bbox": {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                               "alpha": 0.8}}, required=True))
    for x, y, pids in groups:
        if base not in pids and adapted not in pids:
            labels.append(PointLabel(x, y, ", ".join(also[pids[0]]), {"fontsize": 6.5, "color": "0.3",
                                                                     "zorder": 6}))
    markers = []
    for on_ring, (_, r) in zip(ring, w.iterrows()):
        size = _S_STAR if r["point"] == chosen else _S_RING if on_ring else _S_END if r["point"] in (
            base, adapted) else _S_POINT
        markers.append((r["x"], r["y"], _radius_px(size) + 1.0))
    markers += [(x, y, _ENSEMBLE_MS / 2 * DPI / 72 + 1.0) for x, y in zip(e["x"], e["y"])]
    chord = []
    if base in ends.index and adapted in ends.index:
        chord.append((ends.at[base, "x"], ends.at[base, "y"], ends.at[adapted, "x"], ends.at[adapted, "y"]))
    return labels, markers, chord


def _fit_panel(ax, w: pd.DataFrame, e: pd.DataFrame, x_axis: Axis, y_axis: Axis) -> None:
    """Limits from the points and their intervals, padded for the labels, clipped to each metric's range."""
    both = pd.concat([w, e], ignore_index=True)
    fit_axis(ax, "x", both[["x", "x_lo", "x_hi"]].to_numpy(), x_axis.valid, pad=0.14)
    fit_axis(ax, "y", both[["y", "y_lo", "y_hi"]].to_numpy(), y_axis.valid, pad=0.14)


def pareto_label(split: str) -> str:
    """Legend text of the rings of an ID-vs-shift figure drawn on ``split`` ("test", "validation")."""
    return f"Pareto front of the blends on {split} (this panel)"


def _id_vs_shift_panel(ax, w: pd.DataFrame, e: pd.DataFrame, axes: tuple[Axis, Axis], *, chosen: str | None,
                       base: str | None, adapted: str | None, curve_label: str = "weight-space blend",
                       split: str = "test") -> tuple[list[PointLabel], list[tuple[float, float, float]], list]:
    ends = w[w["point"].isin([base, adapted])].set_index("point")
    if base in ends.index and adapted in ends.index:
        ax.plot([ends.at[base, "x"], ends.at[adapted, "x"]], [ends.at[base, "y"], ends.at[adapted, "y"]],
                ls="--", color="0.45", lw=1.0, label="chord base → adapted (mixing their answers; read at equal ID)", zorder=1)
        if not e.empty:  # the ensemble at alpha 0 and 1 is base and adapted
            lo = ends.loc[[base]] if not np.isclose(e["alpha"].min(), 0.0) else e.iloc[:0]
            hi = ends.loc[[adapted]] if not np.isclose(e["alpha"].max(), 1.0) else e.iloc[:0]
            e = pd.concat([lo.reset_index(), e, hi.reset_index()], ignore_index=True)
    if not e.empty:
        ax.plot(e["x"], e["y"], ls=":", marker="x", ms=_ENSEMBLE_MS, color=_ENSEMBLE, lw=1.2,
                label="output-space ensemble", zorder=2)
    ax.errorbar(w["x"], w["y"], xerr=_err(w["x"], w["x_lo"], w["x_hi"]), yerr=_err(w["y"], w["y_lo"], w["y_hi"]),
                fmt="-o", ms=4, color=_CURVE, ecolor="#9ecae1", elinewidth=0.8, capsize=1.5, lw=1.4,
                label=f"{curve_label} (95% CI)", zorder=3)
    ring = pareto_front(w["x"], w["y"], (axes[0].higher_is_better, axes[1].higher_is_better))
    par = w[ring]
    if not par.empty:
        ax.scatter(par["x"], par["y"], s=_S_RING, facecolors="none", edgecolors="black", linewidths=1.0,
                   label=pareto_label(split), zorder=4)
    _fit_panel(ax, w, e, *axes)
    ch = w[w["point"] == chosen]
    if not ch.empty:  # under the base/adapted markers, so that choosing alpha 0 or 1 hides neither
        same = " = adapted" if chosen == adapted else " = base" if chosen == base else ""
        ax.scatter(ch["x"], ch["y"], s=_S_STAR, marker="*", color=COLORS["chosen"], edgecolors="black",
                   linewidths=0.7, label=f"chosen (α={fmt_alpha(ch['alpha'].iloc[0])}{same})", zorder=4.5,
                   clip_on=False)
    for pid, key, marker in ((base, "base", "s"), (adapted, "adapted", "^")):
        if pid in ends.index and _finite_xy(ends.loc[pid]):
            ax.scatter([ends.at[pid, "x"]], [ends.at[pid, "y"]], s=_S_END, marker=marker, color=COLORS[key],
                       edgecolors="white" if pid == chosen else "black", linewidths=1.0 if pid == chosen else 0.6,
                       zorder=5, gid=f"{key}-marker", clip_on=False)
    return _labels(w, e, ends, base, adapted, chosen, ring)


def plot_id_vs_shift(curve: pd.DataFrame, path: Path, *, axes: Mapping[str, tuple[Axis, Axis]],
                     chosen: str | None, base: str | None, adapted: str | None, splits_note: str,
                     curve_label: str = "weight-space blend", split: str = "test") -> Path:
    """ID metric (x) against shift metric (y) along alpha: one panel per shift suite, and first the mean over the
    shift suites when there are two or more (with one, the mean would repeat its panel).

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`harness.report.curve.curve_frame` output (non-empty).
    path : pathlib.Path
        Where the PNG goes.
    axes : mapping of str to (Axis, Axis)
        Panel -> (x, y) axis (:func:`harness.report.curve.curve_axes`): each shift panel's y is that suite's own
        metric; limits stay within each metric's valid range and lower-is-better axes say so. Rings mark each
        panel's own Pareto front on the plotted coordinates in the axes' directions (the selection's Pareto set,
        on validation splits, is in the tables).
    chosen, base, adapted : str or None
        Point ids to highlight.
    splits_note : str
        Which splits the coordinates come from (figure title).
    curve_label : str, default="weight-space blend"
        Legend text of the alpha curve (a ReFT run: "intervention strength").
    split : str, default="test"
        The split role the coordinates come from, named in the rings' legend entry (:func:`pareto_label`), so
        that the test figure's rings are not read as the validation front the selection used.
    """
    panels = list(dict.fromkeys(curve["panel"]))
    mean_rows = curve[curve["panel"] == MEAN_PANEL]
    if len(panels) <= 2 or not np.isfinite(mean_rows["y"].to_numpy(dtype=float)).any():
        # one shift suite: its panel is the mean; a mean of metrics of different scales is not drawn
        panels = [p for p in panels if p != MEAN_PANEL] or panels
    nrows, ncols = grid_shape(len(panels))
    names = list(dict.fromkeys(a.metric for pair in axes.values() for a in pair))
    width = max(4.3 * ncols, 6.0)  # one panel: wide enough for the title and a two-column legend
    with _figure(path, width, 3.8 * nrows + 0.9 + (0.3 if ncols == 1 else 0.0)) as fig:
        grid = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for i, (ax, panel) in enumerate(zip(grid, panels)):
            ax.set_title(panel if panel == MEAN_PANEL else f"shift suite: {panel}")
            ax.set_xlabel(axes[panel][0].label)
            ax.set_ylabel(axes[panel][1].label)
        for ax in grid[len(panels):]:
            ax.set_visible(False)
        todo = []
        for ax, panel in zip(grid, panels):
            rows = curve[curve["panel"] == panel]
            todo.append((ax, *_id_vs_shift_panel(ax, rows[rows["kind"] == "weights"].sort_values("alpha"),
                                                 rows[rows["kind"] == "ensemble"].sort_values("alpha"),
                                                 axes[panel], chosen=chosen, base=base, adapted=adapted,
                                                 curve_label=curve_label, split=split)))
        handles, labels = grid[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3 if ncols > 1 else 2),
                   frameon=False)
        what = f"ID vs shift {names[0]} along alpha" if len(names) == 1 else (
            "ID vs shift along alpha, each suite on its own metric")
        # about 12 characters of 10-point text per inch: wrap rather than cut the title of a narrow figure
        # alpha labels that would overlap another label or marker are left out (harness.report.labels): say so
        fig.suptitle(textwrap.fill(f"{what} ({splits_note}); alpha next to a point where it fits (the tables list "
                                   "every alpha)", int(width * 12)))
        fig.draw_without_rendering()  # settle the layout once: labels are placed in display pixels
        for ax, point_labels, markers, chord in todo:
            place_labels(ax, point_labels, markers, chord)
    return path


@dataclass(frozen=True)
class Bars:
    """One group of the before/after figure: a (suite, split) and each focus column's value and interval."""

    label: str
    values: tuple[tuple[float, float, float], ...]
    majority: float | None = None
    #: legend text of ``majority`` (a constant-answer reference: "majority-class rate", "always the split's most
    #: frequent gold answer")
    majority_label: str | None = None


BARS_PER_ROW = 8
#: White box behind the bar labels, so a dashed reference segment crossing a label does not run through it.
_LABEL_BOX = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.9}


def _bar_row(ax, groups: Sequence[Bars], columns: Sequence[str], slots: int) -> float:
    """Draw one row of grouped bars in ``slots`` group positions (a short last row keeps the bar width);
    returns the highest drawn value (for a shared y limit)."""
    k = len(columns)
    width = 0.8 / k
    top = 0.0
    for c, label in enumerate(columns):
        vals = np.asarray([g.values[c] for g in groups], dtype=float).reshape(-1, 3)
        xs = np.arange(len(groups)) + (c - (k - 1) / 2) * width
        ax.bar(xs, vals[:, 0], width * 0.92, color=color_of(label), edgecolor="black", linewidth=0.5,
               label=label, yerr=_err(vals[:, 0], vals[:, 1], vals[:, 2]), capsize=2, error_kw={"elinewidth": 0.8})
        for x, (v, _lo, hi), g in zip(xs, vals, groups):
            if not math.isfinite(v):
                continue
            text = fmt_value(v) if c == 0 or columns[0] != "base" else fmt_delta(v - g.values[0][0])
            y = _label_y(hi if math.isfinite(hi) else v, g.majority)
            ax.text(x, y, text, ha="center", va="bottom", fontsize=7, rotation=90 if k > 3 else 0,
                    zorder=4, bbox=_LABEL_BOX)
            top = max(top, y)
    shown: set[str] = set()
    for i, g in enumerate(groups):
        if g.majority is not None and math.isfinite(g.majority):
            text = g.majority_label or "majority-class rate"
            ax.hlines(g.majority, i - 0.46, i + 0.46, colors="black", linestyles="--", lw=1.1,
                      label=None if text in shown else text, zorder=2.5)  # under the value labels
            shown.add(text)
            top = max(top, g.majority)
    ax.set_xticks(np.arange(len(groups)), [_wrap(g.label, 18) for g in groups])
    ax.set_xlim(-0.6, max(len(groups), slots) - 0.4)
    ax.grid(axis="x", visible=False)
    return top


def _label_y(y: float, reference: float | None, gap: float = 0.012, height: float = 0.05) -> float:
    """Where a bar label whose bar (or interval) ends at ``y`` starts: ``gap`` above it, or just above the dashed
    ``reference`` segment when the label would otherwise sit on it (``height``: about a label's height in data
    units), so the segment never runs through a label. Its white box hides the segment where they still meet."""
    if reference is not None and math.isfinite(reference) and y - gap <= reference <= y + gap + height:
        return reference + gap
    return y + gap


def _wrap(label: str, width: int) -> str:
    return "\n".join(textwrap.fill(part, width) for part in label.split("\n"))


def plot_before_after(groups: Sequence[Bars], columns: Sequence[str], path: Path, *, metric: str) -> Path:
    """Grouped bars (one group per suite/split, one bar per focus column) with 95% intervals.

    The first column's bar is labelled with its value; the others with their delta vs the first when the first
    column is ``base``. A dashed black segment marks the group's constant-answer reference when given
    (:attr:`Bars.majority`, named in the legend by :attr:`Bars.majority_label`). Past
    ``BARS_PER_ROW`` groups the bars wrap onto further rows with a shared y axis, so that a run with dozens of
    suites gives a grid rather than one very wide strip.
    """
    k = len(columns)
    rows = [groups[i:i + BARS_PER_ROW] for i in range(0, len(groups), BARS_PER_ROW)] or [groups]
    per_row = min(len(groups), BARS_PER_ROW)
    width = max(7.0, (0.42 * max(k, 2) + 0.35) * per_row + 1.6)
    with _figure(path, width, 3.6 * len(rows) + 0.8) as fig:
        axes = np.atleast_1d(fig.subplots(len(rows), 1, squeeze=False, sharey=True)).ravel()
        top = max(_bar_row(ax, row, columns, per_row) for ax, row in zip(axes, rows))
        valid = valid_range(metric)
        for ax in axes:
            ax.set_ylim(0.0, top * 1.14 + 0.02)  # headroom for the value labels; no tick past the valid range
            if valid is not None:
                ax.yaxis.set_major_locator(RangeLocator(*valid))
            ax.set_ylabel(metric)
        legend: dict[str, object] = {}  # the bars' columns, then each reference drawn in any row, once
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(lab, h)
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(len(legend), k + 2),
                   frameon=False)
        # about 12 characters of 10-point text per inch: wrap rather than cut the title of a narrow figure
        fig.suptitle(textwrap.fill(f"{metric} per suite (test splits)" + (
            "; labels: base value, others Δ vs base" if k > 1 and columns[0] == "base" else ""), int(width * 12)))
    return path


@dataclass(frozen=True)
class Line:
    """One (suite, split) line of the metric-vs-alpha figure."""

    label: str
    alpha: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    color: str
    dashed: bool = False


STRIP_HALF_WIDTH = 0.015
#: Legend text of the feasible strips (a patch in the metric-vs-alpha legend, so the PNG reads on its own).
FEASIBLE_STRIP = "green strip: an evaluated α feasible under the policy (nothing shaded between α)"


def _feasible_spans(alphas: Sequence[float], feasible: Sequence[bool]) -> list[tuple[float, float]]:
    """A narrow strip (lo, hi) around every evaluated alpha that is feasible under the policy, in alpha order.

    Nothing is shaded between evaluated alphas, not even between two feasible neighbours: an alpha that was not
    evaluated has no feasibility. Each strip is centred on its alpha, :data:`STRIP_HALF_WIDTH` wide on each side
    (less where evaluated alphas are closer, so that strips of neighbours never touch).
    """
    a = np.sort(np.unique(np.asarray(alphas, dtype=float)))
    gap = float(np.diff(a).min()) if len(a) > 1 else 1.0
    half = min(STRIP_HALF_WIDTH, 0.4 * gap)
    ok = sorted({float(x) for x, f in zip(np.asarray(alphas, dtype=float), feasible) if f})
    return [(x - half, x + half) for x in ok]


def _evaluated(ln: Line) -> Line:
    """The line restricted to the alphas evaluated for its split (a finite value), in alpha order."""
    keep = np.isfinite(np.asarray(ln.value, dtype=float))
    order = np.argsort(np.asarray(ln.alpha, dtype=float)[keep], kind="stable")
    pick = lambda v: np.asarray(v, dtype=float)[keep][order]  # noqa: E731
    return replace(ln, alpha=pick(ln.alpha), value=pick(ln.value), low=pick(ln.low), high=pick(ln.high))


#: x margin of the metric-vs-alpha panels (alpha units) and the height of the feasible triangles (axes fraction):
#: a triangle or the chosen line at alpha 0 or 1 is drawn whole, inside the axes, above the x axis.
_ALPHA_MARGIN, _FEASIBLE_Y = 0.06, 0.035
#: The feasible strips are drawn over the chosen alpha's line (thin, under them) and over the lines' bands, so a
#: feasible alpha stays visible where the chosen line runs through its strip (alpha 1 chosen and feasible).
_STRIP_ALPHA, _STRIP_Z, _CHOSEN_LW = 0.2, 2.6, 0.9
#: What the shaded bands are (figure title): no legend entry of their own, they share their line's colour.
BANDS_NOTE = "shaded: 95% CI of the line of the same colour"


def _alpha_panel(ax, lines: Sequence[Line], alphas: Sequence[float], feasible: Sequence[bool] | None,
                 chosen_alpha: float | None, axis: Axis | None) -> None:
    if feasible is not None and any(feasible):
        for k, (lo, hi) in enumerate(_feasible_spans(alphas, feasible)):  # the first strip names them all
            ax.axvspan(lo, hi, color=COLORS["chosen"], alpha=_STRIP_ALPHA, lw=0, zorder=_STRIP_Z,
                       label=None if k else FEASIBLE_STRIP)
        ok = [a for a, f in zip(alphas, feasible) if f]
        ax.scatter(ok, [_FEASIBLE_Y] * len(ok), marker="^", s=22, color=COLORS["chosen"],
                   transform=ax.get_xaxis_transform(), zorder=5, gid="feasible-marker",
                   label="feasible under the policy (evaluated alphas only)")
    extent = []
    for ln in map(_evaluated, lines):
        band = np.isfinite(ln.low) & np.isfinite(ln.high)
        ax.fill_between(ln.alpha[band], ln.low[band], ln.high[band], color=ln.color, alpha=0.14, lw=0)
        ax.plot(ln.alpha, ln.value, marker="o", ms=3, lw=1.4, ls="--" if ln.dashed else "-", color=ln.color,
                label=ln.label)
        extent += [ln.value, ln.low, ln.high]
    if chosen_alpha is not None:
        ax.axvline(chosen_alpha, color=COLORS["chosen"], lw=_CHOSEN_LW, alpha=0.8, zorder=_STRIP_Z - 0.5,
                   label=f"chosen α={fmt_alpha(chosen_alpha)}")
    ax.set_xlim(-_ALPHA_MARGIN, 1.0 + _ALPHA_MARGIN)  # markers and the chosen line at 0 or 1 stay whole
    if axis is not None and extent:
        fit_axis(ax, "y", np.concatenate(extent), axis.valid, pad=0.06)


def plot_metric_vs_alpha(panels: Sequence[tuple[str, Sequence[Line]]], path: Path, *, metric: str,
                         alphas: Sequence[float], feasible: Sequence[bool] | None,
                         chosen_alpha: float | None, panel_axes: Sequence[Axis] | None = None) -> Path:
    """A metric against alpha, one panel per suite (one line per split, its 95% interval as a band); each
    evaluated alpha feasible under the selection policy marked by a green triangle and a narrow strip (nothing
    shaded between evaluated alphas); the chosen alpha marked by a vertical line. Dashed lines are validation
    splits. Each line has markers at the alphas evaluated for its split only (NaN values are left out) and
    connects only those.

    Parameters
    ----------
    panels : sequence of (str, sequence of Line)
        Panel title (the suite) and its lines.
    metric : str
        The metric named in the title (and on every y axis when ``panel_axes`` is not given).
    alphas : sequence of float
        The evaluated alphas, in the order of ``feasible``.
    feasible : sequence of bool or None
        Whether each evaluated alpha was feasible under the policy (``None``: not recorded).
    chosen_alpha : float or None
    panel_axes : sequence of Axis, optional
        Each panel's y axis (the suite's own metric): its label, and limits within the metric's valid range.
    """
    nrows, ncols = grid_shape(len(panels))
    with _figure(path, 4.0 * ncols + 0.4, 2.9 * nrows + 1.1) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharex=True)).ravel()
        ys = list(panel_axes) if panel_axes is not None else [metric_axis("", metric, True)] * len(panels)
        for ax, (title, lines), y in zip(axes, panels, ys):
            _alpha_panel(ax, lines, alphas, feasible, chosen_alpha, y)
            ax.set_title(title)
            ax.set_ylabel(y.label)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        for i, ax in enumerate(axes[:len(panels)]):
            if i + ncols >= len(panels):  # nothing drawn below it: its column's bottom panel gets the alpha axis
                ax.tick_params(labelbottom=True)
                ax.set_xlabel("α (0 = base, 1 = adapted)")
        handles: dict[str, object] = {}
        for ax in axes[:len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 3),
                   frameon=False)
        fig.suptitle(textwrap.fill(f"{metric} along alpha, one panel per suite ({BANDS_NOTE}; dashed: validation "
                                   "splits)", int((4.0 * ncols + 0.4) * 12)))
    return path
