"""Figures drawn from the stored predictions: reliability diagrams and confusion matrices.

Same conventions as :mod:`harness.report.plots` (pyplot-free Agg figures, fixed colours, deterministic PNGs).
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.plots import _figure, color_of
from harness.report.tables import fmt_value

__all__ = ["plot_reliability", "plot_confusion", "MANY_SUITES"]

logger = logging.getLogger(__name__)

MANY_SUITES = 10  # past this many suites the confusion figure keeps one matrix per suite, five suites a row


def _shown_bins(bins: pd.DataFrame, n_classes: int | None) -> tuple[pd.DataFrame, float]:
    """The bins a top-label confidence of ``n_classes`` classes can fall in, and where the axis starts: 1/K
    (confidence is at least 1/K), or lower only when the bin ending at 1/K holds rows (all K classes tied at
    exactly 1/K fall there under the ece metric's ``lo < conf <= hi`` rule). The bins are those of
    :func:`harness.report.predstats.reliability_bins` unchanged, so the legend's ECE is the ece metric's."""
    floor = 1.0 / n_classes if n_classes else 0.0
    above = bins["hi"] > floor + 1e-12
    tied = bins[~above & (bins["count"] > 0)]
    return bins[above | (bins["count"] > 0)], min([floor, *tied["lo"].astype(float)])


def _short(x: float) -> str:
    """A confidence edge in at most two decimals without trailing zeros: 0.5, 0.33, 1."""
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def _bin_ticks(ax, shown: pd.DataFrame, start: float) -> None:
    """Every drawn bin edge marked by the grid (minor ticks); labelled ones (major) include the axis start."""
    edges = np.union1d(np.maximum(shown["lo"].to_numpy(float), start), shown["hi"].to_numpy(float))
    ax.set_xticks(edges, minor=True)
    major = edges if len(edges) <= 7 else np.union1d(edges[::2], [edges[0], edges[-1]])
    ax.set_xticks(major, [_short(e) for e in major])
    ax.grid(axis="x", which="minor", visible=True)
    ax.grid(axis="x", which="major", visible=True)


def _reliability_panel(top, bottom, title: str, curves: dict[str, tuple[pd.DataFrame, float]],
                       n_classes: int | None) -> None:
    k = max(len(curves), 1)
    start = 0.0
    for j, (label, (bins, ece)) in enumerate(curves.items()):
        shown, start = _shown_bins(bins, n_classes)
        full = shown[shown["count"] > 0]
        top.plot(full["confidence"], full["accuracy"], marker="o", ms=3.5, lw=1.3, color=color_of(label),
                 label=f"{label}: ECE {fmt_value(ece)}", clip_on=False)
        share = shown["count"] / max(int(bins["count"].sum()), 1)
        lo = np.maximum(shown["lo"].to_numpy(float), start)
        step = (shown["hi"].to_numpy(float) - lo) / k
        bottom.bar(lo + j * step, share, width=step, align="edge", color=color_of(label), edgecolor="none",
                   gid=f"share-{label}")
        if j == 0:
            _bin_ticks(bottom, shown, start)
    if not curves:
        _bin_ticks(bottom, pd.DataFrame({"lo": np.linspace(0, 0.9, 10), "hi": np.linspace(0.1, 1, 10)}), 0.0)
    top.plot([start, 1], [start, 1], ls="--", color="0.5", lw=0.9, label="perfect calibration", zorder=1)
    top.set_xlim(start, 1)
    top.set_ylim(0, 1.02)
    top.set_title(title)
    top.set_ylabel("accuracy in bin")
    handles, labels = top.get_legend_handles_labels()  # perfect calibration first
    top.legend(handles[-1:] + handles[:-1], labels[-1:] + labels[:-1], loc="lower right", fontsize=7)
    bottom.set_ylabel("share")
    k_text = f", from 1/K = {_short(1.0 / n_classes)} (K = {n_classes} classes)" if n_classes else ""
    if n_classes and start < 1.0 / n_classes - 1e-12:
        k_text = (f", from {_short(start)}: K = {n_classes} classes, and the ece metric's bin ending at 1/K holds rows "
                  "whose classes all tie")
    bottom.set_xlabel(f"top-label confidence{k_text}")


def plot_reliability(panels: Sequence[tuple[str, dict[str, tuple[pd.DataFrame, float]]]], path: Path,
                     n_classes: Sequence[int] | None = None) -> Path:
    """Reliability diagrams: per panel, accuracy against mean top-label confidence in the ece metric's
    equal-width bins (width 0.1 on [0, 1], :func:`harness.report.predstats.reliability_bins`), one line per
    focus column (legend: binned ECE), and below it the share of examples in each bin: each bin's bars (one per
    focus column, side by side) fill exactly that bin's edges, which are marked by the grid.

    ``n_classes`` (one per panel): with K classes the top-label confidence is at least 1/K, so the panel's
    confidence axis starts at 1/K and shows only the bins above it (for K = 2, the five bins from 0.5); the bins
    are not redrawn, so the legend's ECE stays the ece metric's. ``None``: the axis starts at 0.
    """
    n = len(panels)
    width = max(4.4 * n, 5.6)
    ks = list(n_classes) if n_classes is not None else [None] * n
    with _figure(path, width, 5.4) as fig:
        axes = fig.subplots(2, n, squeeze=False, height_ratios=[3, 1], sharex="col")
        for col, ((title, curves), k) in enumerate(zip(panels, ks)):
            _reliability_panel(axes[0, col], axes[1, col], title, curves, k)
        # about 12 characters of 10-point text per inch: wrap rather than cut the title of a narrow figure
        floor = " on confidence from 1/K for K classes (the lowest possible top-label confidence)" if any(ks) else ""
        fig.suptitle(textwrap.fill(f"Reliability (the ece metric's 10 equal-width bins of [0, 1]{floor}; binned "
                                   "ECE is biased upward on small n)", int(width * 12)))
    return path


def _confusion_panel(ax, cm: np.ndarray, names: Sequence[str], title: str) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    c = len(names)
    long = max(len(s) for s in names) > 6
    ax.set_xticks(range(c), names, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(c), names)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "black")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("predicted", labelpad=2)


def _splits_text(splits: Sequence[str] | None, role: str) -> str:
    """How a suite's block names the splits its matrices count: ``test split: x`` or ``test splits pooled: x, y``."""
    if not splits:
        return ""
    return f" ({role} split: {splits[0]})" if len(splits) == 1 else f" ({role} splits pooled: {', '.join(splits)})"


def plot_confusion(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], names_of: dict[str, list[str]],
                   path: Path, *, splits_of: Mapping[str, Sequence[str]] | None = None, role: str = "test") -> Path:
    """Confusion matrices: one block per suite (its ``role`` splits pooled) with one panel per focus column.

    The figure title names the split role, and each suite's heading the splits counted (``splits_of``: suite ->
    split names; a suite missing from it is headed by its name only), as every other figure of the report names
    the splits it shows.

    Each suite's block is a subfigure with the suite name as its own heading, so a panel's "predicted" axis
    label can never be read as (or run into) the next block's title. Past ``MANY_SUITES`` suites only the last
    focus column (the chosen point) is drawn, five suites to a row, so that dozens of suites give a readable
    grid rather than a strip of hundreds of matrices (the per-class recall table has every point). Cells show
    the count and the share of the true class (row); the diagonal share is the class's recall.
    """
    many = len(rows) > MANY_SUITES
    if many:
        rows = [(suite, list(mats)[-1:]) for suite, mats in rows]
    ncols = max(len(r[1]) for r in rows)
    c = max(len(v) for v in names_of.values())
    side = 1.0 + 0.55 * c
    per_row = 5 if many else 1
    nrows = math.ceil(len(rows) / per_row)
    block = side * ncols + 0.8  # one suite's width (inches)
    with _figure(path, block * per_row + 0.2, (side + 1.0) * nrows + 0.5) as fig:
        subs = np.atleast_1d(fig.subfigures(nrows, per_row, squeeze=False, hspace=0.02, wspace=0.02)).ravel()
        for sub, (suite, mats) in zip(subs, rows):
            # about 11 characters of bold 10-point text per inch: wrap rather than cut a narrow block's heading
            sub.suptitle(textwrap.fill(f"suite: {suite}{_splits_text((splits_of or {}).get(suite), role)}",
                                       int(block * 11)), fontsize=10, fontweight="bold")
            axes = np.atleast_1d(sub.subplots(1, ncols, squeeze=False)).ravel()
            for ax, (label, cm) in zip(axes, mats):
                _confusion_panel(ax, cm, names_of[suite], label)
            for ax in axes[len(mats):]:
                ax.set_visible(False)
            axes[0].set_ylabel("true class")
        for sub in subs[len(rows):]:
            sub.set_visible(False)
        fig.suptitle(textwrap.fill(f"Confusion matrices on the {role} splits (count and share of the true "
                                   "class; diagonal = recall)", int((block * per_row + 0.2) * 12)))
    return path
