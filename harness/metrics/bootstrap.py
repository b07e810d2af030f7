"""Stage 6, seeded cluster bootstrap: percentile intervals for every metric, vectorised.

A bootstrap resample draws ``G`` clusters with replacement from the ``G`` clusters of a split (clusters are
``source_id`` values: a document, or a source example together with its perturbed copies; Efron & Tibshirani 1993,
ch. 6 and 13; resampling whole clusters keeps within-cluster correlation in the interval). Resample ``b`` is a
vector of multiplicities ``W[b]`` (multinomial weights over clusters), built for all ``B`` resamples from one
index matrix by ``bincount``. Because every built-in metric is a function of per-example statistics summed over
examples (:mod:`harness.metrics.registry`), the whole bootstrap is one product
``W (B, G) @ cluster_sums (G, k) -> (B, k)`` followed by the metric's value function.

Pairing is then free: applying the same ``W`` to the candidate's and the reference's statistics on the same
examples resamples the same clusters for both, so their difference is a paired bootstrap (the gate relies on it).

Memory: ``W`` holds ``B * G`` float64 values (2000 resamples of 10,000 clusters: 160 MB).
"""

from __future__ import annotations

import logging

import numpy as np

from harness.errors import MetricError, format_error
from harness.metrics.base import Outputs, as_outputs, n_columns, outputs_finite
from harness.metrics.registry import check_applies, check_inputs, get_metric, point_value
from harness.records import MetricValue

__all__ = ["MAX_LOOP_RESAMPLES", "cluster_index", "cluster_weights", "cluster_sums", "resample_sums",
           "metric_distribution", "percentile_interval", "compute_metrics"]

logger = logging.getLogger(__name__)

#: Resamples evaluated for metrics without sufficient statistics (``evaluate`` modules loop in Python).
MAX_LOOP_RESAMPLES = 200
_CHUNK = 256  # rows of the index matrix drawn at a time (bounds peak memory to W plus one chunk)


def cluster_index(source_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each example to its cluster.

    Parameters
    ----------
    source_ids : array-like of str, shape (n,)
        The cluster key of each example.

    Returns
    -------
    index : ndarray of int64, shape (n,)
        Cluster number of each example; clusters are numbered in sorted order of their ids, so the numbering does
        not depend on row order.
    n_clusters : int

    Examples
    --------
    >>> index, n = cluster_index(["doc-b", "doc-a", "doc-b"])
    >>> index.tolist(), n
    ([1, 0, 1], 2)
    """
    uniq, inverse = np.unique(np.asarray(source_ids).astype(str), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), int(uniq.shape[0])


def cluster_weights(source_ids: np.ndarray, n_resamples: int,
                    seed: int | np.random.SeedSequence = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial bootstrap weights over clusters.

    Parameters
    ----------
    source_ids : array-like of str, shape (n,)
        Cluster key of each example (see :func:`cluster_index`).
    n_resamples : int
        ``B``, the number of resamples (``>= 1``).
    seed : int or numpy.random.SeedSequence, default=0
        Seed of ``np.random.default_rng``.

    Returns
    -------
    W : ndarray of float64, shape (B, G)
        ``W[b, g]`` is how often cluster ``g`` was drawn in resample ``b``; every row sums to ``G``.
    cluster_index : ndarray of int64, shape (n,)

    Raises
    ------
    MetricError
        If ``n_resamples < 1``.

    Examples
    --------
    >>> w, index = cluster_weights(["d1", "d1", "d2", "d3"], n_resamples=4, seed=0)
    >>> w.shape, w.sum(axis=1).tolist(), index.tolist()
    ((4, 3), [3.0, 3.0, 3.0, 3.0], [0, 0, 1, 2])
    """
    if int(n_resamples) < 1:
        raise MetricError(format_error("n_resamples must be at least 1", got=n_resamples))
    if isinstance(seed, (int, np.integer)) and int(seed) < 0:
        raise MetricError(format_error("the bootstrap seed must be a non-negative integer", where="--seed",
                                       got=int(seed), fix="pass --seed 0 or another integer >= 0"))
    index, g = cluster_index(source_ids)
    b = int(n_resamples)
    rng = np.random.default_rng(seed)
    w = np.zeros((b, g), dtype=np.float64)
    if g == 0:
        return w, index
    for start in range(0, b, _CHUNK):
        rows = min(_CHUNK, b - start)
        draws = rng.integers(0, g, size=(rows, g), dtype=np.int64)
        draws += (np.arange(rows, dtype=np.int64) * g)[:, None]
        w[start:start + rows] = np.bincount(draws.ravel(), minlength=rows * g).reshape(rows, g)
    return w, index


def cluster_sums(stats: np.ndarray, index: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum per-example statistics within clusters.

    Parameters
    ----------
    stats : ndarray of float64, shape (n, k)
    index : ndarray of int64, shape (n,)
        Cluster of each example, in ``[0, n_clusters)``.
    n_clusters : int

    Returns
    -------
    ndarray of float64, shape (n_clusters, k)

    Examples
    --------
    >>> import numpy as np
    >>> cluster_sums(np.array([[1.0], [2.0], [3.0]]), np.array([1, 0, 1]), 2).tolist()
    [[2.0], [4.0]]
    """
    out = np.zeros((n_clusters, stats.shape[1]), dtype=np.float64)
    if stats.shape[0] == 0:
        return out
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    out[sorted_index[starts]] = np.add.reduceat(stats[order], starts, axis=0)
    return out


def resample_sums(stats: np.ndarray, w: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Summed statistics of every resample: ``W @ cluster_sums(stats)``.

    Parameters
    ----------
    stats : ndarray of float64, shape (n, k)
    w : ndarray of float64, shape (B, G)
        From :func:`cluster_weights`.
    index : ndarray of int64, shape (n,)

    Returns
    -------
    ndarray of float64, shape (B, k)

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[2.0, 0.0], [0.0, 2.0]])  # resample 0 draws cluster 0 twice, resample 1 cluster 1 twice
    >>> resample_sums(np.array([[1.0], [2.0], [3.0]]), w, np.array([1, 0, 1])).tolist()
    [[4.0], [8.0]]
    """
    return w @ cluster_sums(stats, index, w.shape[1])


def metric_distribution(name: str, labels: np.ndarray, outputs: Outputs | np.ndarray, w: np.ndarray,
                        index: np.ndarray) -> np.ndarray:
    """Bootstrap distribution of one metric.

    Parameters
    ----------
    name : str
        Metric name (see :func:`harness.metrics.registry.get_metric`).
    labels : ndarray of int64, shape (n,)
    outputs : mapping of str to array, or array
        The task's per-example columns (a bare array: classification logits float32 (n, C)).
    w : ndarray of float64, shape (B, G)
        Weights from :func:`cluster_weights`; pass the same ``w`` for two models on the same examples to pair them.
    index : ndarray of int64, shape (n,)
        Cluster of each example.

    Returns
    -------
    ndarray of float64, shape (B,)
        For ``evaluate`` modules, shape ``(min(B, MAX_LOOP_RESAMPLES),)`` (the first rows of ``w``, one Python
        call each). All NaN when any logit is not finite.

    Raises
    ------
    MetricError
        Unknown metric, invalid inputs, or ``index`` not matching ``w``.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 1, 1, 0])
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 1.0]], dtype=np.float32)
    >>> w, index = cluster_weights(["d1", "d1", "d2", "d3"], n_resamples=100, seed=0)
    >>> dist = metric_distribution("accuracy", labels, logits, w, index)
    >>> dist.shape, bool(((dist >= 0) & (dist <= 1)).all())
    ((100,), True)
    """
    spec = get_metric(name)
    check_applies(spec, as_outputs(outputs))
    labels, outputs = check_inputs(labels, outputs)
    index = np.asarray(index, dtype=np.int64)
    if index.shape != labels.shape or (index.size and (index.min() < 0 or index.max() >= w.shape[1])):
        raise MetricError(format_error("cluster index does not match the weights", where=name,
                                       expected=f"{labels.shape[0]} entries in [0, {w.shape[1]})",
                                       got=f"{index.shape[0]} entries"))
    b = w.shape[0] if spec.vectorised else min(w.shape[0], MAX_LOOP_RESAMPLES)
    if labels.size == 0 or not outputs_finite(outputs):
        return np.full(b, np.nan)
    if spec.vectorised:
        return spec.value(resample_sums(spec.stats(labels, outputs), w, index), n_columns(outputs))
    logits = outputs["logits"]
    out = np.empty(b)
    for r in range(b):
        reps = w[r, index].astype(np.int64)
        rows = np.repeat(np.arange(labels.shape[0]), reps)
        out[r] = spec.compute(labels[rows], logits[rows])
    return out


def percentile_interval(dist: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of a bootstrap distribution (Efron & Tibshirani 1993, ch. 13).

    Parameters
    ----------
    dist : ndarray of float64, shape (B,)
    confidence : float, default=0.95
        Two-sided level in (0, 1): the interval runs from the ``(1 - confidence) / 2`` to the
        ``(1 + confidence) / 2`` quantile.

    Returns
    -------
    (low, high) : tuple of float
        NaN when ``dist`` is empty or holds a non-finite value.

    Examples
    --------
    >>> percentile_interval([0.1, 0.2, 0.3, 0.4, 0.5], confidence=0.5)
    (0.2, 0.4)
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.size == 0 or not np.isfinite(dist).all():
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(dist, [tail, 1.0 - tail])
    return float(lo), float(hi)


def compute_metrics(labels: np.ndarray, outputs: Outputs | np.ndarray, source_ids: np.ndarray, metrics: list[str],
                    n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, MetricValue]:
    """Point estimates and cluster-bootstrap percentile intervals of several metrics on one split.

    Parameters
    ----------
    labels : ndarray of int64, shape (n,)
        Class indices in ``[0, C)`` (gold choice indices for multiple choice; zeros for tasks without one).
    outputs : mapping of str to array, or array
        The task's per-example columns of one model, in the same row order (see
        :class:`harness.records.Predictions`); a bare array means classification logits float32 (n, C).
    source_ids : ndarray of str, shape (n,)
        Bootstrap cluster key of each example (documents; perturbed copies share their source's id).
    metrics : list of str
        Metric names (built-in or ``evaluate:NAME_OR_PATH``).
    n_resamples : int, default=1000
        Bootstrap resamples (``0`` skips the bootstrap: intervals are NaN). ``evaluate`` modules use at most
        :data:`MAX_LOOP_RESAMPLES` of them.
    seed : int, default=0
        Seed of the resampling (the same seed gives the same intervals).
    confidence : float, default=0.95
        Two-sided level of the percentile interval, in (0, 1).

    Returns
    -------
    dict of str to MetricValue
        In the order of ``metrics``. Values are NaN when ``n == 0`` or any score read is non-finite.

    Raises
    ------
    MetricError
        Unknown metric (with near matches), invalid shapes or labels, ``confidence`` outside (0, 1), or
        ``source_ids`` of the wrong length.

    Notes
    -----
    All built-in metrics share one weight matrix and one matrix product; statistics used by several metrics
    (accuracy, macro-F1 and balanced accuracy share per-class counts) are computed once.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 1, 1, 0])
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 1.0]], dtype=np.float32)
    >>> out = compute_metrics(labels, logits, np.array(["d1", "d1", "d2", "d3"]), ["accuracy", "ece"],
    ...                       n_resamples=200, seed=0)
    >>> acc = out["accuracy"]
    >>> acc.value, acc.higher_is_better, acc.ci_low <= acc.value <= acc.ci_high
    (0.75, True, True)
    >>> out["ece"].higher_is_better
    False
    """
    labels, outputs = check_inputs(labels, outputs)
    source_ids = np.asarray(source_ids)
    if source_ids.shape != labels.shape:
        raise MetricError(format_error("source_ids must match the labels", expected=f"shape {labels.shape}",
                                       got=source_ids.shape))
    if not 0.0 < float(confidence) < 1.0:
        raise MetricError(format_error("confidence must be in (0, 1)", expected="e.g. 0.95", got=confidence))
    specs = {m: get_metric(m) for m in metrics}
    points = {m: point_value(m, labels, outputs) for m in specs}
    if n_resamples == 0 or labels.size == 0:
        return {m: MetricValue(points[m], float("nan"), float("nan"), s.higher_is_better) for m, s in specs.items()}
    w, index = cluster_weights(source_ids, n_resamples, seed)
    dists = _vectorised_distributions(specs, labels, outputs, w, index)
    out = {}
    for m, spec in specs.items():
        dist = dists[m] if m in dists else metric_distribution(m, labels, outputs, w, index)
        lo, hi = percentile_interval(dist, confidence)
        out[m] = MetricValue(points[m], lo, hi, spec.higher_is_better)
    return out


def _vectorised_distributions(specs: dict, labels: np.ndarray, outputs: Outputs, w: np.ndarray,
                              index: np.ndarray) -> dict[str, np.ndarray]:
    """Distributions of all vectorised metrics with one matrix product over their (deduplicated) statistics."""
    vec = {m: s for m, s in specs.items() if s.vectorised}
    if not vec:
        return {}
    if not outputs_finite(outputs):
        return {m: np.full(w.shape[0], np.nan) for m in vec}
    blocks: dict[object, tuple[int, int]] = {}
    columns = []
    width = 0
    for spec in vec.values():
        if spec.stats not in blocks:
            block = spec.stats(labels, outputs)
            blocks[spec.stats] = (width, width + block.shape[1])
            columns.append(block)
            width += block.shape[1]
    sums = resample_sums(np.concatenate(columns, axis=1), w, index)
    c = n_columns(outputs)
    return {m: s.value(sums[:, slice(*blocks[s.stats])], c) for m, s in vec.items()}
