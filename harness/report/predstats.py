"""Views of the stored predictions (``predictions.parquet``) that the report draws: reliability bins, confusion
matrices, per-class recall, negative flips and majority-class rates.

These are renderings of stored logits with numpy (softmax, argmax, counting); no model is loaded and no metric of
summary.json is recomputed. Probabilities are fractions in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Pooled", "PredIndex", "softmax", "reliability_bins", "binned_ece", "confusion_matrix",
           "per_class_recall", "flip_counts", "largest_flips", "majority_rate", "finite_mean", "N_BINS"]

logger = logging.getLogger(__name__)

N_BINS = 10
Pair = tuple[str, str]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` (n, C) in float64, numerically stable.

    A row holding a non-finite logit (NaN or inf, e.g. from an fp16 overflow) gives a row of NaN, without a
    numpy RuntimeWarning: the views below leave such rows out.
    """
    z = np.array(logits, dtype=np.float64)  # a copy: changed below
    if z.size == 0:
        return z
    bad = ~np.isfinite(z).all(axis=1)
    z[bad] = 0.0
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out = e / e.sum(axis=1, keepdims=True)
    out[bad] = np.nan
    return out


@dataclass(frozen=True)
class Pooled:
    """One point's predictions on one or more (suite, split) pairs, concatenated in pair order.

    ``part[i]`` indexes ``pairs`` for row i; ``keys`` is ``suite/split/example_id`` (unique across the pooled
    pairs); ``labels`` is int64 (n,), ``probs`` float64 (n, C).
    """

    pairs: tuple[Pair, ...]
    part: np.ndarray
    keys: np.ndarray
    example_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Whether the top class is the label (``False`` for a row with non-finite outputs)."""
        return (self.pred == self.labels) & np.isfinite(self.probs).all(axis=1)


class PredIndex:
    """The predictions frame grouped once by (point, suite, split), for repeated lookups.

    Parameters
    ----------
    frame : pandas.DataFrame
        As returned by :func:`harness.rundir.read_predictions`.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self._groups: dict[tuple[str, str, str], pd.DataFrame] = {}
        # labels of every split, language-model records included (a multiple-choice label is the gold choice index)
        self._labels: dict[Pair, np.ndarray] = {}
        if not frame.empty and {"point", "suite", "split", "label"} <= set(frame.columns):
            for (_, suite, split), rows in frame.groupby(["point", "suite", "split"], sort=False):
                self._labels.setdefault((str(suite), str(split)), rows["label"].to_numpy(np.int64))
        # the views here (reliability, confusion, flips) read class logits: language-model records are left out
        frame = frame[frame["logits"].notna()] if "logits" in frame.columns else frame.iloc[0:0]
        if not frame.empty and {"point", "suite", "split"} <= set(frame.columns):
            for key, rows in frame.groupby(["point", "suite", "split"], sort=False):
                self._groups[tuple(str(k) for k in key)] = rows

    def has(self, point: str | None, pairs: Sequence[Pair]) -> bool:
        """Whether ``point`` has stored predictions on every one of ``pairs`` (and there is at least one)."""
        return point is not None and bool(pairs) and all((point, *p) in self._groups for p in pairs)

    def labels(self, pair: Pair) -> np.ndarray | None:
        """Labels int64 (n,) of a split from any point that has it (they are the same for every point): class
        indices, or a multiple-choice suite's gold choice indices; ``None`` when no point has the split."""
        return self._labels.get(tuple(pair))

    def pooled(self, point: str, pairs: Sequence[Pair]) -> Pooled | None:
        """``point``'s predictions on ``pairs`` concatenated, or ``None`` if any pair is missing."""
        if not self.has(point, pairs):
            return None
        parts = [self._groups[(point, *p)] for p in pairs]
        part = np.concatenate([np.full(len(r), k, dtype=np.int64) for k, r in enumerate(parts)])
        ids = np.concatenate([r["example_id"].to_numpy(str).astype(object) for r in parts])
        keys = np.asarray([f"{pairs[k][0]}/{pairs[k][1]}/{i}" for k, i in zip(part, ids)], dtype=object)
        logits = np.concatenate([np.stack(r["logits"].to_numpy()).astype(np.float32) for r in parts])
        return Pooled(pairs=tuple(tuple(p) for p in pairs), part=part, keys=keys, example_ids=ids,
                      labels=np.concatenate([r["label"].to_numpy(np.int64) for r in parts]), probs=softmax(logits))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Equal-width bins of top-label confidence: bin b holds edges[b] < conf <= edges[b + 1] (as the ece metric).

    Rows with non-finite probabilities (see :func:`softmax`) are left out.

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``lo``, ``hi``, ``count``, ``confidence`` (mean top-label probability) and ``accuracy``
        (NaN for an empty bin).
    """
    ok = np.isfinite(probs).all(axis=1) if probs.size else np.zeros(len(probs), dtype=bool)
    probs, labels = probs[ok], np.asarray(labels)[ok]
    conf = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels).astype(float) if probs.size else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count, "confidence": mean_conf,
                         "accuracy": acc})


def binned_ece(bins: pd.DataFrame) -> float:
    """Expected calibration error of :func:`reliability_bins`: sum over bins of weight x |accuracy - confidence|.

    Biased upward on small n: with few examples per bin, sampling noise alone makes |accuracy - confidence| > 0.
    """
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    full = bins[bins["count"] > 0]
    return float((full["count"] / n * (full["accuracy"] - full["confidence"]).abs()).sum())


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (labels, pred), 1)
    return m


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal over row sums; NaN for a class with no examples)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(axis=1)


def _align(ref: Pooled, cand: Pooled) -> tuple[np.ndarray, np.ndarray]:
    common, i, j = np.intersect1d(ref.keys.astype(str), cand.keys.astype(str), return_indices=True)
    if len(common) < max(ref.n, cand.n):
        logger.warning("negative flips: %d of %d/%d examples shared by both points", len(common), ref.n, cand.n)
    return i, j


def flip_counts(ref: Pooled, cand: Pooled) -> dict[str, float]:
    """Negative flips (``ref`` right, ``cand`` wrong) and positive flips, matched by split and example id.

    Returns
    -------
    dict
        ``n`` (examples in both), ``negative``, ``positive`` (counts) and ``negative_rate`` (fraction of n).
    """
    i, j = _align(ref, cand)
    r, c = ref.correct[i], cand.correct[j]
    n = int(len(i))
    neg = int((r & ~c).sum())
    return {"n": n, "negative": neg, "positive": int((~r & c).sum()),
            "negative_rate": neg / n if n else float("nan")}


def largest_flips(ref: Pooled, cand: Pooled, k: int = 5) -> pd.DataFrame:
    """The ``k`` negative flips with the largest drop in the probability of the true label.

    Returns
    -------
    pandas.DataFrame
        Columns ``suite``, ``split``, ``example_id``, ``label``, ``ref_pred``, ``ref_conf``, ``cand_pred``,
        ``cand_conf`` (top-label probabilities) and ``drop`` (true-label probability, ref minus cand); sorted by
        ``drop`` descending, ties by key.
    """
    i, j = _align(ref, cand)
    flip = ref.correct[i] & ~cand.correct[j]
    i, j = i[flip], j[flip]
    y = ref.labels[i]
    drop = ref.probs[i, y] - cand.probs[j, y]
    order = sorted(range(len(i)), key=lambda t: (-drop[t], str(ref.keys[i[t]])))[:k]
    return pd.DataFrame({
        "suite": [ref.pairs[ref.part[i[t]]][0] for t in order],
        "split": [ref.pairs[ref.part[i[t]]][1] for t in order], "example_id": [ref.example_ids[i[t]] for t in order],
        "label": [int(y[t]) for t in order], "ref_pred": [int(ref.pred[i[t]]) for t in order],
        "ref_conf": [float(ref.probs[i[t]].max()) for t in order],
        "cand_pred": [int(cand.pred[j[t]]) for t in order],
        "cand_conf": [float(cand.probs[j[t]].max()) for t in order], "drop": [float(drop[t]) for t in order]})


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN, without a RuntimeWarning, when there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most frequent label: the accuracy of always predicting the majority class (for a
    multiple-choice split, whose labels are gold choice indices, of always answering the most frequent gold
    position). A negative label (no gold) is never the answer; NaN for no labels."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    ok = labels[labels >= 0]
    return float(np.bincount(ok).max() / len(labels)) if len(ok) else 0.0
