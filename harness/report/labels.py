"""Point labels that do not overlap: a deterministic offset rule for the ID-vs-shift figures.

Each label is tried at a fixed list of offsets around its point (right-above first, then the other corners and
sides, then on two farther rings) and takes the first place where its box overlaps no label already placed, no
marker and does not leave the axes. A required label (base, adapted) that finds no free place takes the one with
the least overlap; an optional one (an alpha number: the tables list every alpha) is left out rather than drawn
over another (logged at debug level). So no two drawn labels overlap unless two required ones cannot be
separated. A label moved away from its point keeps a thin leader line to it. Placement works in display pixels
after the figure's constrained layout has been settled once (:meth:`Figure.draw_without_rendering`).

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
_RINGS = (1.0, 2.6, 4.2)  # the same directions this many times farther


@dataclass(frozen=True)
class PointLabel:
    """A label to place: the data point, the text, its style (``matplotlib.text.Text`` keyword arguments) and
    whether it must be drawn even where every place collides (``required``)."""

    x: float
    y: float
    text: str
    style: dict
    required: bool = False


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap area of box ``a`` (x0, y0, x1, y1) with each row of ``b`` (k, 4), summed."""
    if len(b) == 0:
        return 0.0
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return float((w * h).sum())


_LEADER_PT = 14  # a label farther than this (points) from its point gets a leader line


def _leader(cand: np.ndarray, px: float, py: float) -> np.ndarray:
    """Box (x0, y0, x1, y1) around the leader line from (px, py) to the centre of ``cand`` (matplotlib aims the
    line at the text's centre and clips it at the text box), widened by a pixel so a straight line has area."""
    cx, cy = (cand[0] + cand[2]) / 2, (cand[1] + cand[3]) / 2
    return np.array([min(px, cx) - 1, min(py, cy) - 1, max(px, cx) + 1, max(py, cy) + 1])


def _best_place(ax, lab: PointLabel, renderer, box, taken: list, n_markers: int, pt: float
                ) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The first free box (x0, y0, x1, y1) around the label's point, else the least-colliding one, its cost
    (overlap area in square pixels of the box and of its leader line's box, plus a large penalty for leaving the
    axes) and its leader's box (``None`` when the label is close enough to need none)."""
    probe = ax.text(0, 0, lab.text, **lab.style)
    ext = probe.get_window_extent(renderer)
    probe.remove()
    w, h = ext.width, ext.height
    px, py = ax.transData.transform((lab.x, lab.y))
    boxes = np.asarray(taken).reshape(-1, 4)
    # a leader starts at the point: it may cross the point's own marker (a marker box holding the point), no
    # other marker and no label or leader placed before
    own = (boxes[:, 0] <= px) & (px <= boxes[:, 2]) & (boxes[:, 1] <= py) & (py <= boxes[:, 3])
    own[n_markers:] = False
    clear = boxes[~own]
    best, best_cost, best_leader = None, np.inf, None
    for scale in _RINGS:
        for fx, fy, dx, dy in _CANDIDATES:
            x0 = px + fx * w + scale * dx * pt
            y0 = py + fy * h + scale * dy * pt
            cand = np.array([x0, y0, x0 + w, y0 + h])
            leader = _leader(cand, px, py) if np.hypot(x0 - px, y0 - py) > _LEADER_PT * pt else None
            outside = (max(box.x0 - x0, 0) + max(x0 + w - box.x1, 0) + max(box.y0 - y0, 0)
                       + max(y0 + h - box.y1, 0))
            cost = _overlap(cand, boxes) + outside * (w + h) * 4
            if leader is not None:
                cost += _overlap(leader, clear)
            if cost < best_cost:
                best, best_cost, best_leader = cand, cost, leader
            if cost == 0:
                return best, 0.0, best_leader
    return best, best_cost, best_leader


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
    n_markers = len(taken)
    out = []
    for lab in labels:
        if not (np.isfinite(lab.x) and np.isfinite(lab.y)):
            continue
        best, cost, leader = _best_place(ax, lab, renderer, box, taken, n_markers, pt)
        if cost > 0 and not lab.required:
            logger.debug("label %r left out: no free place near (%g, %g)", lab.text, lab.x, lab.y)
            continue
        px, py = ax.transData.transform((lab.x, lab.y))
        off = ((best[0] - px) / pt, (best[1] - py) / pt)
        far = leader is not None
        ann = ax.annotate(lab.text, (lab.x, lab.y), xytext=off, textcoords="offset points", ha="left",
                          va="bottom", annotation_clip=False,
                          arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5, "shrinkA": 0,
                                      "shrinkB": 3} if far else None, **lab.style)
        ann.set_in_layout(False)
        taken.append(best)
        if far:
            taken.append(leader)
        out.append(ann)
    return out
