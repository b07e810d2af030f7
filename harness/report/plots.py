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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.io import atomic_write_bytes
from harness.report.tables import fmt_alpha, fmt_delta, fmt_value

__all__ = ["DPI", "COLORS", "SUITE_COLORS", "color_of", "Bars", "Line", "plot_id_vs_shift", "plot_before_after", "plot_metric_vs_alpha",
           "plot_reliability", "plot_confusion"]

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


def _label_point(ax, x: float, y: float, text: str, color: str) -> None:
    """Annotate a point, placing the text on the side facing the centre of the axes."""
    x0, x1 = ax.get_xlim()
    right = x > (x0 + x1) / 2
    ax.annotate(text, (x, y), xytext=(-7 if right else 7, 7), textcoords="offset points",
                ha="right" if right else "left", va="bottom", fontsize=7.5, color=color, fontweight="bold",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})


def _id_vs_shift_panel(ax, w: pd.DataFrame, e: pd.DataFrame, *, chosen: str | None, pareto: Sequence[str],
                       base: str | None, adapted: str | None) -> None:
    ends = w[w["point"].isin([base, adapted])].set_index("point")
    if base in ends.index and adapted in ends.index:
        ax.plot([ends.at[base, "x"], ends.at[adapted, "x"]], [ends.at[base, "y"], ends.at[adapted, "y"]],
                ls="--", color="0.45", lw=1.0, label="chord (straight line base → adapted)", zorder=1)
        if not e.empty:  # the ensemble at alpha 0 and 1 is base and adapted
            lo = ends.loc[[base]] if not np.isclose(e["alpha"].min(), 0.0) else e.iloc[:0]
            hi = ends.loc[[adapted]] if not np.isclose(e["alpha"].max(), 1.0) else e.iloc[:0]
            e = pd.concat([lo.reset_index(), e, hi.reset_index()], ignore_index=True)
    if not e.empty:
        ax.plot(e["x"], e["y"], ls=":", marker="x", ms=4, color=_ENSEMBLE, lw=1.2,
                label="output-space ensemble", zorder=2)
    ax.errorbar(w["x"], w["y"], xerr=_err(w["x"], w["x_lo"], w["x_hi"]), yerr=_err(w["y"], w["y_lo"], w["y_hi"]),
                fmt="-o", ms=4, color=_CURVE, ecolor="#9ecae1", elinewidth=0.8, capsize=1.5, lw=1.4,
                label="weight-space blend (95% CI)", zorder=3)
    par = w[w["point"].isin(pareto)]
    if not par.empty:
        ax.scatter(par["x"], par["y"], s=120, facecolors="none", edgecolors="black", linewidths=1.0,
                   label="Pareto-optimal", zorder=4)
    ax.margins(0.15)
    for _, r in w.iterrows():
        if r["point"] not in (base, adapted) and math.isfinite(r["x"]) and math.isfinite(r["y"]):
            ax.annotate(fmt_alpha(r["alpha"]), (r["x"], r["y"]), xytext=(4, -9), textcoords="offset points",
                        fontsize=6.5, color="0.35")
    for pid, key, marker, text in ((base, "base", "s", "base"), (adapted, "adapted", "^", "adapted")):
        if pid in ends.index and math.isfinite(ends.at[pid, "x"]) and math.isfinite(ends.at[pid, "y"]):
            ax.scatter([ends.at[pid, "x"]], [ends.at[pid, "y"]], s=55, marker=marker, color=COLORS[key],
                       edgecolors="black", linewidths=0.6, zorder=5)
            _label_point(ax, ends.at[pid, "x"], ends.at[pid, "y"],
                         f"{text} (α={fmt_alpha(ends.at[pid, 'alpha'])})", COLORS[key])
    ch = w[w["point"] == chosen]
    if not ch.empty:
        ax.scatter(ch["x"], ch["y"], s=230, marker="*", color=COLORS["chosen"], edgecolors="black",
                   linewidths=0.7, label=f"chosen (α={fmt_alpha(ch['alpha'].iloc[0])})", zorder=6)


def plot_id_vs_shift(curve: pd.DataFrame, path: Path, *, metric: str, chosen: str | None, pareto: Sequence[str],
                     base: str | None, adapted: str | None, splits_note: str) -> Path:
    """ID metric (x) against shift metric (y) along alpha: one panel for the mean over shift suites, one each.

    Parameters
    ----------
    curve : pandas.DataFrame
        :func:`harness.report.curve.curve_frame` output (non-empty).
    path : pathlib.Path
        Where the PNG goes.
    metric : str
        Metric on both axes.
    chosen, base, adapted : str or None
        Point ids to highlight.
    pareto : sequence of str
        Point ids on the Pareto front (``summary.selection.pareto``).
    splits_note : str
        Which splits the coordinates come from (figure title).
    """
    panels = list(dict.fromkeys(curve["panel"]))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    with _figure(path, 4.3 * ncols, 3.7 * nrows + 0.9) as fig:
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for i, (ax, panel) in enumerate(zip(axes, panels)):
            rows = curve[curve["panel"] == panel]
            _id_vs_shift_panel(ax, rows[rows["kind"] == "weights"].sort_values("alpha"),
                               rows[rows["kind"] == "ensemble"].sort_values("alpha"),
                               chosen=chosen, pareto=pareto, base=base, adapted=adapted)
            ax.set_title(panel if i == 0 else f"shift suite: {panel}")
            ax.set_xlabel(f"ID {metric}")
            ax.set_ylabel(f"{'mean shift' if i == 0 else panel} {metric}")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), frameon=False)
        fig.suptitle(f"ID vs shift {metric} along alpha ({splits_note}); numbers next to points are alpha")
    return path


@dataclass(frozen=True)
class Bars:
    """One group of the before/after figure: a (suite, split) and each focus column's value and interval."""

    label: str
    values: tuple[tuple[float, float, float], ...]
    majority: float | None = None


def plot_before_after(groups: Sequence[Bars], columns: Sequence[str], path: Path, *, metric: str) -> Path:
    """Grouped bars (one group per suite/split, one bar per focus column) with 95% intervals.

    The first column's bar is labelled with its value; the others with their delta vs the first when the first
    column is ``base``. A dashed black segment marks the group's majority-class rate when given.
    """
    k = len(columns)
    width = 0.8 / k
    with _figure(path, max(7.0, 1.25 * len(groups) * max(k, 2) / 2 + 2.0), 4.4) as fig:
        ax = fig.subplots()
        top = 0.0
        for c, label in enumerate(columns):
            vals = np.asarray([g.values[c] for g in groups], dtype=float).reshape(-1, 3)
            xs = np.arange(len(groups)) + (c - (k - 1) / 2) * width
            ax.bar(xs, vals[:, 0], width * 0.92, color=color_of(label), edgecolor="black", linewidth=0.5,
                   label=label, yerr=_err(vals[:, 0], vals[:, 1], vals[:, 2]), capsize=2,
                   error_kw={"elinewidth": 0.8})
            for x, (v, _lo, hi), g in zip(xs, vals, groups):
                if not math.isfinite(v):
                    continue
                base_v = g.values[0][0]
                text = (fmt_value(v) if c == 0 or columns[0] != "base" else fmt_delta(v - base_v))
                y = hi if math.isfinite(hi) else v
                ax.text(x, y + 0.012, text, ha="center", va="bottom", fontsize=7, rotation=90 if k > 3 else 0)
                top = max(top, y)
        shown = False
        for i, g in enumerate(groups):
            if g.majority is not None and math.isfinite(g.majority):
                ax.hlines(g.majority, i - 0.46, i + 0.46, colors="black", linestyles="--", lw=1.1,
                          label=None if shown else "majority-class rate", zorder=4)
                shown = True
                top = max(top, g.majority)
        ax.set_ylim(0.0, top * 1.14 + 0.02)
        ax.set_xticks(np.arange(len(groups)), [g.label for g in groups])
        ax.set_ylabel(metric)
        ax.grid(axis="x", visible=False)
        fig.legend(loc="outside lower center", ncol=k + 1, frameon=False)
        fig.suptitle(f"{metric} per suite (test splits)" + (
            "; labels: base value, others Δ vs base" if k > 1 and columns[0] == "base" else ""))
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


def _feasible_spans(alphas: Sequence[float], feasible: Sequence[bool]) -> list[tuple[float, float]]:
    """Merge the alphas feasible under the policy into shaded spans reaching halfway to each neighbour."""
    a = np.asarray(alphas, dtype=float)
    spans: list[tuple[float, float]] = []
    for i, ok in enumerate(feasible):
        if not ok:
            continue
        lo = a[i] if i == 0 else (a[i - 1] + a[i]) / 2
        hi = a[i] if i == len(a) - 1 else (a[i] + a[i + 1]) / 2
        if spans and math.isclose(spans[-1][1], lo):
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return [(lo - 0.01, hi + 0.01) if lo == hi else (lo, hi) for lo, hi in spans]


def plot_metric_vs_alpha(lines: Sequence[Line], path: Path, *, metric: str, alphas: Sequence[float],
                         feasible: Sequence[bool] | None, chosen_alpha: float | None) -> Path:
    """``metric`` against alpha, one line per (suite, split) with its interval as a band; the alphas feasible
    under the selection policy shaded, the chosen alpha marked by a vertical line. Dashed lines are validation
    splits."""
    with _figure(path, 7.6, 4.9) as fig:
        ax = fig.subplots()
        if feasible is not None and any(feasible):
            for j, (lo, hi) in enumerate(_feasible_spans(alphas, feasible)):
                ax.axvspan(lo, hi, color=COLORS["chosen"], alpha=0.12, lw=0,
                           label="feasible under the policy" if j == 0 else None)
        for ln in lines:
            ax.fill_between(ln.alpha, ln.low, ln.high, color=ln.color, alpha=0.10, lw=0)
            ax.plot(ln.alpha, ln.value, marker="o", ms=3, lw=1.4, ls="--" if ln.dashed else "-", color=ln.color,
                    label=ln.label)
        if chosen_alpha is not None:
            ax.axvline(chosen_alpha, color=COLORS["chosen"], lw=1.6, label=f"chosen α={fmt_alpha(chosen_alpha)}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("α (fraction of adapted weights: 0 = base, 1 = adapted)")
        ax.set_ylabel(metric)
        fig.legend(loc="outside right center", frameon=False)
        fig.suptitle(f"{metric} along alpha (bands: 95% CI; dashed: validation splits)")
    return path


def plot_reliability(panels: Sequence[tuple[str, dict[str, tuple[pd.DataFrame, float]]]], path: Path) -> Path:
    """Reliability diagrams: per panel, accuracy against mean top-label confidence in 10 equal-width bins, one
    line per focus column (legend: binned ECE), and below it the share of examples in each bin."""
    n = len(panels)
    with _figure(path, 4.4 * n, 5.2) as fig:
        axes = fig.subplots(2, n, squeeze=False, height_ratios=[3, 1], sharex=True)
        for col, (title, curves) in enumerate(panels):
            top, bottom = axes[0, col], axes[1, col]
            top.plot([0, 1], [0, 1], ls="--", color="0.5", lw=0.9, label="perfect calibration")
            k = max(len(curves), 1)
            for j, (label, (bins, ece)) in enumerate(curves.items()):
                full = bins[bins["count"] > 0]
                top.plot(full["confidence"], full["accuracy"], marker="o", ms=3.5, lw=1.3, color=color_of(label),
                         label=f"{label}: ECE {fmt_value(ece)}")
                share = bins["count"] / max(int(bins["count"].sum()), 1)
                centers = (bins["lo"] + bins["hi"]) / 2 + (j - (k - 1) / 2) * 0.1 / k
                bottom.bar(centers, share, width=0.1 / k, color=color_of(label), edgecolor="none")
            top.set_xlim(0, 1)
            top.set_ylim(0, 1.02)
            top.set_title(title)
            top.set_ylabel("accuracy in bin")
            top.legend(loc="lower right", fontsize=7)
            bottom.set_ylabel("share")
            bottom.set_xlabel("top-label confidence")
        fig.suptitle("Reliability (10 equal-width bins; binned ECE is biased upward on small n)")
    return path


def _confusion_panel(ax, cm: np.ndarray, names: Sequence[str], title: str) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    c = len(names)
    ax.set_xticks(range(c), names, rotation=30 if max(len(s) for s in names) > 6 else 0, ha="right" if max(
        len(s) for s in names) > 6 else "center")
    ax.set_yticks(range(c), names)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "black")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("predicted")


def plot_confusion(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], names_of: dict[str, list[str]],
                   path: Path) -> Path:
    """Confusion matrices: one row per suite (test splits pooled), one column per focus column.

    Cells show the count and the share of the true class (row); the diagonal share is the class's recall.
    """
    ncols = max(len(r[1]) for r in rows)
    c = max(len(v) for v in names_of.values())
    side = 1.0 + 0.55 * c
    with _figure(path, side * ncols + 1.0, (side + 0.5) * len(rows) + 0.5) as fig:
        axes = fig.subplots(len(rows), ncols, squeeze=False)
        for r, (suite, mats) in enumerate(rows):
            for j, (label, cm) in enumerate(mats):
                _confusion_panel(axes[r, j], cm, names_of[suite], f"{suite}\n{label}")  # two lines: fits the panel
            for ax in axes[r, len(mats):]:
                ax.set_visible(False)
            axes[r, 0].set_ylabel("true class")
        fig.suptitle("Confusion matrices (count and share of the true class; diagonal = recall)")
    return path
