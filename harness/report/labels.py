"""Point labels that do not overlap: a deterministic offset rule for the ID-vs-shift figures.

Each label is tried at a fixed list of offsets around its point (right-above first, then the other corners and
sides, then twice as far) and takes the first place where its box overlaps no label already placed, no marker
and does not leave the axes; when every place collides it takes the one with the least overlap. A label moved
away from its point keeps a thin leader line to it. Placement works in display pixels after the figure's
constrained layout has been settled once (:meth:`Figure.draw_without_rendering`).

adjustText does this iteratively, but it imports pyplot (the report never does: see :mod:`harness.report.plots`)
and redraws the figure several times per panel, which made each report several times slower to render.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PointLabel", "place_labels"]

logger = logging.getLogger(__name__)

# Offsets of the label's lower-left corner from its point, in units of (label width, label height) and points:
# (fx, fy, dx, dy): x = fx * width + dx points, y = fy * height + dy points.
_CANDIDATES = [(0, 0, 5, 4), (0, -1, 5, -4), (-1, 0, -5, 4), (-1, -1, -5, -4), (-0.5, 0, 0, 7),
               (-0.5, -1, 0, -7), (0, -0.5, 7, 0), (-1, -0.5, -7, 0)]
_FAR = 2.6  # second ring: the same directions this many times farther


@dataclass(frozen=True)
class PointLabel:
    """A label to place: the data point, the text and its style (``matplotlib.text.Text`` keyword arguments)."""

    x: float
    y: float
    text: str
    style: dict


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap area of box ``a`` (x0, y0, x1, y1) with each row of ``b`` (k, 4), summed."""
    if len(b) == 0:
        return 0.0
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return float((w * h).sum())


def place_labels(ax, labels: Sequence[PointLabel], markers: Sequence[tuple[float, float, float]]) -> list:
    """Annotate ``labels`` on ``ax`` without overlaps (module docstring); returns the annotations.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        A laid-out axes (call ``figure.draw_without_rendering()`` first).
    labels : sequence of PointLabel
        In priority order: earlier labels get the better places.
    markers : sequence of (x, y, radius_px)
        Data points to keep clear, with the marker's radius in display pixels.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    box = ax.get_window_extent(renderer)
    taken = [np.array([*ax.transData.transform((x, y)) - r, *ax.transData.transform((x, y)) + r])
             for x, y, r in markers if np.isfinite(x) and np.isfinite(y)]
    out = []
    for lab in labels:
        if not (np.isfinite(lab.x) and np.isfinite(lab.y)):
            continue
        probe = ax.text(0, 0, lab.text, **lab.style)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width, ext.height
        px, py = ax.transData.transform((lab.x, lab.y))
        best, best_cost = None, np.inf
        for scale in (1.0, _FAR):
            for fx, fy, dx, dy in _CANDIDATES:
                x0 = px + fx * w + scale * dx * pt
                y0 = py + fy * h + scale * dy * pt
                cand = np.array([x0, y0, x0 + w, y0 + h])
                outside = (max(box.x0 - x0, 0) + max(x0 + w - box.x1, 0) + max(box.y0 - y0, 0)
                           + max(y0 + h - box.y1, 0))
                cost = _overlap(cand, np.asarray(taken).reshape(-1, 4)) + outside * (w + h) * 4
                if cost < best_cost:
                    best, best_cost = cand, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        off = ((best[0] - px) / pt, (best[1] - py) / pt)
        far = np.hypot(*off) > 14
        ann = ax.annotate(lab.text, (lab.x, lab.y), xytext=off, textcoords="offset points", ha="left",
                          va="bottom", annotation_clip=False,
                          arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5, "shrinkA": 0,
                                      "shrinkB": 3} if far else None, **lab.style)
        ann.set_in_layout(False)
        taken.append(best)
        out.append(ann)
    return out
