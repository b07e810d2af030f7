"""Point labels that do not overlap: a deterministic offset rule for the ID-vs-shift figures.

Each label is tried at a fixed list of offsets around its point (right-above first, then the other corners and
sides, then on two farther rings) and takes the first place where its box overlaps no label already placed, no
marker, no drawn line segment (the chord) and does not leave the axes, and where the marker nearest to the box
is the label's own point (so a label is never read as another point's). A required label (base, adapted) that finds no free place takes the one with
the least overlap; an optional one (an alpha number: the tables list every alpha) is left out rather than drawn
over another (logged at debug level). So no two drawn labels overlap unless two required ones cannot be
separated. A label moved away from its point keeps a thin leader line to it. Placement works in display pixels
after the figure's constrained layout has been settled once (:meth:`Figure.draw_without_rendering`).

adjustText does this iteratively, but it imports pyplot (the report never does: see :mod:`harness.report.plots`)
and redraws the figure several times per panel, which made each report several times slower to render.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PointLabel", "coincident", "place_labels"]

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


def coincident(points: Iterable[tuple[float, float, object]], atol: float = 1e-9
               ) -> list[tuple[float, float, list]]:
    """Group ``(x, y, key)`` points by position (within ``atol`` in data units): ``(x, y, keys)`` per distinct
    point, in order of first appearance, keys in input order; points with a non-finite coordinate are left out.

    Points that land on the same spot (two alphas giving the same scores) then get one label listing both keys
    ("0.5, 0.8") rather than two labels placed around one point and read as two points."""
    groups: list[tuple[float, float, list]] = []
    for x, y, key in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        same = next((g for g in groups if abs(g[0] - x) <= atol and abs(g[1] - y) <= atol), None)
        if same is None:
            groups.append((float(x), float(y), [key]))
        else:
            same[2].append(key)
    return groups


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap area of box ``a`` (x0, y0, x1, y1) with each row of ``b`` (k, 4), summed."""
    if len(b) == 0:
        return 0.0
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return float((w * h).sum())


_LEADER_PT = 14  # a label farther than this (points) from its point gets a leader line
_GAP_PT = 2.5  # the free margin kept around each placed label (report trial: two labels touched edge to edge)


def _leader(cand: np.ndarray, px: float, py: float) -> np.ndarray:
    """Box (x0, y0, x1, y1) around the leader line from (px, py) to the centre of ``cand`` (matplotlib aims the
    line at the text's centre and clips it at the text box), widened by a pixel so a straight line has area."""
    cx, cy = (cand[0] + cand[2]) / 2, (cand[1] + cand[3]) / 2
    return np.array([min(px, cx) - 1, min(py, cy) - 1, max(px, cx) + 1, max(py, cy) + 1])


def _box_distance(cand: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Distance in pixels from each point (k, 2) to box ``cand`` (x0, y0, x1, y1); 0 inside."""
    dx = np.maximum.reduce([cand[0] - pts[:, 0], np.zeros(len(pts)), pts[:, 0] - cand[2]])
    dy = np.maximum.reduce([cand[1] - pts[:, 1], np.zeros(len(pts)), pts[:, 1] - cand[3]])
    return np.hypot(dx, dy)


def _crosses(cand: np.ndarray, segments: np.ndarray) -> int:
    """How many segments (k, 4: x0, y0, x1, y1 in pixels) pass through box ``cand`` (sampled every ~2 px)."""
    hits = 0
    for x0, y0, x1, y1 in segments:
        s = np.linspace(0.0, 1.0, int(np.hypot(x1 - x0, y1 - y0) / 2) + 2)
        xs, ys = x0 + s * (x1 - x0), y0 + s * (y1 - y0)
        hits += bool(np.any((xs > cand[0]) & (xs < cand[2]) & (ys > cand[1]) & (ys < cand[3])))
    return hits


_NEAR_MARGIN = 2.0  # pixels: the own point must be this much nearer to the label than any other marker


def _misleads(cand: np.ndarray, px: float, py: float, centres: np.ndarray) -> bool:
    """Whether a marker other than the label's own point (at px, py) is as near to the box as its own."""
    if len(centres) == 0:
        return False
    mine = np.hypot(centres[:, 0] - px, centres[:, 1] - py) <= 0.5
    if not mine.any() or mine.all():
        return False
    d = _box_distance(cand, centres)
    return bool(d[~mine].min() <= d[mine].min() + _NEAR_MARGIN)


def _best_place(ax, lab: PointLabel, renderer, box, taken: list, n_markers: int, pt: float,
                centres: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The first free box (x0, y0, x1, y1) around the label's point, else the least-colliding one, its cost
    (overlap area in square pixels of the box and of its leader line's box, the box's area per line segment it
    crosses and when another marker is nearer to it than its own point, plus a large penalty for leaving the
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
            cost = _overlap(cand, boxes) + outside * (w + h) * 4 + w * h * (
                _crosses(cand, segments) + _misleads(cand, px, py, centres))
            if leader is not None:
                cost += _overlap(leader, clear)
            if cost < best_cost:
                best, best_cost, best_leader = cand, cost, leader
            if cost == 0:
                return best, 0.0, best_leader
    return best, best_cost, best_leader


def place_labels(ax, labels: Sequence[PointLabel], markers: Sequence[tuple[float, float, float]],
                 segments: Sequence[tuple[float, float, float, float]] = ()) -> list:
    """Annotate ``labels`` on ``ax`` without overlaps (module docstring); returns the annotations.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        A laid-out axes (call ``figure.draw_without_rendering()`` first).
    labels : sequence of PointLabel
        In priority order: earlier labels get the better places.
    markers : sequence of (x, y, radius_px)
        Every drawn marker (data coordinates), with its radius in display pixels: kept clear, and none may be
        nearer to a label than the label's own point.
    segments : sequence of (x0, y0, x1, y1), default=()
        Drawn line segments in data coordinates that labels must not cross (the chord).
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    box = ax.get_window_extent(renderer)
    taken = [np.array([*ax.transData.transform((x, y)) - r, *ax.transData.transform((x, y)) + r])
             for x, y, r in markers if np.isfinite(x) and np.isfinite(y)]
    n_markers = len(taken)
    centres = np.asarray([ax.transData.transform((x, y)) for x, y, _ in markers
                          if np.isfinite(x) and np.isfinite(y)], dtype=float).reshape(-1, 2)
    segs = np.asarray([[*ax.transData.transform((x0, y0)), *ax.transData.transform((x1, y1))]
                       for x0, y0, x1, y1 in segments], dtype=float).reshape(-1, 4)
    out = []
    for lab in labels:
        if not (np.isfinite(lab.x) and np.isfinite(lab.y)):
            continue
        best, cost, leader = _best_place(ax, lab, renderer, box, taken, n_markers, pt, centres, segs)
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
        gap = _GAP_PT * pt  # a placed label keeps this margin free, so two labels never touch ("0.5adapted")
        taken.append(best + np.array([-gap, -gap, gap, gap]))
        if far:
            taken.append(leader)
        out.append(ann)
    return out
