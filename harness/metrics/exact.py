"""Stage 6, exact and analytic statistics behind the gate's evidence checks and its power analysis.

The cluster bootstrap (:mod:`harness.metrics.bootstrap`) is well calibrated at the sizes a release gate needs, but
it has no variance where the data has none: all examples in one cluster, 5 of 5 correct, 0 of 20 flips. These
functions give the backstops the gate applies there (:mod:`harness.gate`):

* :func:`effective_n`: the cluster-adjusted effective sample size of a proportion, ``n* = p(1 - p) / var(p)``
  with the between-cluster (ratio-estimator) variance, capped at ``n`` (Korn & Graubard 1998, "Confidence
  intervals for proportions with small expected number of positive counts estimated from survey data", Survey
  Methodology 24:193-201). Where the variance cannot be estimated (``p`` at 0 or 1, one cluster) ``n* = n``.
* :func:`clopper_pearson`: one-sided exact binomial bounds (Clopper & Pearson 1934) at a possibly fractional
  count ``x = p * n*`` (the Korn-Graubard form), from the beta distribution.
* :func:`sign_test`: the exact one-sided McNemar / sign test on discordant pairs (McNemar 1947), through
  ``scipy.stats.binomtest``.
* :func:`pass_probability` and :func:`min_detectable_effect`: the normal approximation of a one-sided bound
  test, used by the ``underpowered`` check and by ``harness gate --plan``.

Units: proportions and effects are fractions (0.02 = two points); confidences are one-sided levels in (0.5, 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binomtest, norm

from harness.metrics.bootstrap import cluster_index, cluster_sums

__all__ = ["design_effect", "effective_n", "clopper_pearson", "proportion_bound", "sign_test", "z_of",
           "pass_probability", "min_detectable_effect"]


def design_effect(values: np.ndarray, source_ids: np.ndarray) -> float:
    """Variance inflation of the mean of ``values`` from clustering.

    Parameters
    ----------
    values : ndarray of float, shape (n,)
        Per-example values (a 0/1 indicator, or a paired difference such as candidate minus reference
        correctness).
    source_ids : array-like of str, shape (n,)
        Cluster of each example.

    Returns
    -------
    float
        ``var_cluster / var_iid`` with ``var_cluster = G / (G - 1) * sum_g (S_g - mean * m_g)^2 / n^2`` (``S_g`` the
        sum and ``m_g`` the size of cluster ``g``) and ``var_iid = var(values) / n``; at least 1, and 1 where it
        cannot be estimated (fewer than two clusters, or no variation).
    """
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    n = y.shape[0]
    index, g = cluster_index(source_ids)
    var_iid = float(y.var()) / n if n else 0.0
    if g < 2 or var_iid <= 0.0:
        return 1.0
    sums = cluster_sums(np.stack([y, np.ones(n)], axis=1), index, g)
    var = g / (g - 1) * float(((sums[:, 0] - y.mean() * sums[:, 1]) ** 2).sum()) / n ** 2
    return max(1.0, var / var_iid)


def effective_n(y: np.ndarray, source_ids: np.ndarray) -> tuple[float, float]:
    """Cluster-adjusted effective sample size of the proportion ``mean(y)``.

    Parameters
    ----------
    y : ndarray of bool or float, shape (n,)
        Per-example indicator (1 = event).
    source_ids : array-like of str, shape (n,)
        Cluster of each example (``source_id``).

    Returns
    -------
    n_eff : float
        ``n / design_effect`` = ``min(n, p(1 - p) / var(p))`` (:func:`design_effect`); ``n`` when ``p`` is 0 or 1
        or there is one cluster.
    design_effect : float
        ``n / n_eff`` (>= 1).
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] == 0:
        return 0.0, 1.0
    deff = design_effect(y, source_ids)
    return y.shape[0] / deff, deff


def clopper_pearson(x: float, n: float, confidence: float, side: str) -> float:
    """One-sided exact (Clopper-Pearson) bound of a binomial proportion.

    Parameters
    ----------
    x : float
        Events; may be fractional (``p * n_eff``).
    n : float
        Trials (> 0); may be fractional.
    confidence : float
        One-sided level in (0, 1).
    side : {"lower", "upper"}

    Returns
    -------
    float
        ``Beta(1 - confidence; x, n - x + 1)`` (0 when ``x == 0``) for ``lower``; ``Beta(confidence; x + 1,
        n - x)`` (1 when ``x == n``) for ``upper``. 5 of 5 at 0.95 gives a lower bound of 0.549; 0 of 20 an upper
        bound of 0.139.
    """
    if n <= 0:
        return 0.0 if side == "lower" else 1.0
    x = min(max(float(x), 0.0), float(n))
    if side == "lower":
        return 0.0 if x <= 0.0 else float(beta.ppf(1.0 - confidence, x, n - x + 1.0))
    if side == "upper":
        return 1.0 if x >= n else float(beta.ppf(confidence, x + 1.0, n - x))
    raise ValueError(f"side must be 'lower' or 'upper'; got {side!r}")


def proportion_bound(y: np.ndarray, source_ids: np.ndarray, confidence: float, side: str) -> dict[str, float]:
    """The cluster-adjusted Clopper-Pearson bound of ``mean(y)`` (Korn & Graubard 1998).

    Returns
    -------
    dict
        ``bound``, ``events`` (int), ``n`` (int), ``n_eff`` and ``design_effect``.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n_eff, deff = effective_n(y, source_ids)
    p = float(y.mean()) if y.size else 0.0
    return {"bound": clopper_pearson(p * n_eff, n_eff, confidence, side), "events": int(y.sum()), "n": int(y.size),
            "n_eff": n_eff, "design_effect": deff}


def sign_test(wins: int, losses: int) -> float:
    """Exact one-sided sign test (McNemar's exact test) that the candidate wins more discordant pairs than it loses.

    Parameters
    ----------
    wins : int
        Discordant pairs the candidate got right and the reference wrong.
    losses : int
        Discordant pairs the reference got right and the candidate wrong.

    Returns
    -------
    float
        ``P(X >= wins)`` for ``X ~ Binomial(wins + losses, 1/2)``; 1.0 without discordant pairs. 3 wins of 3
        discordant pairs give 0.125.
    """
    total = int(wins) + int(losses)
    if total == 0:
        return 1.0
    return float(binomtest(int(wins), total, 0.5, alternative="greater").pvalue)


def z_of(level: float) -> float:
    """The standard normal quantile of a one-sided level (0.90 -> 1.2816)."""
    return float(norm.ppf(level))


def pass_probability(effect: float, margin: float, se: float, confidence: float) -> float:
    """Probability that a one-sided bound test passes, by the normal approximation.

    The rule passes when ``estimate - z_c * se >= -margin`` (a non-inferiority margin; ``margin < 0`` is a
    superiority threshold). With the estimate distributed ``N(effect, se^2)`` the probability is
    ``Phi((effect + margin) / se - z_c)``.

    Parameters
    ----------
    effect : float
        The true effect in the good direction (0 for an equal candidate, -0.02 for a two-point drop).
    margin : float
        How far below zero the effect may lie and still pass (``max_drop``; ``-min_delta`` for a gain rule).
    se : float
        Standard error of the estimate (> 0).
    confidence : float
        One-sided level of the bound.
    """
    if se <= 0:
        return 1.0 if effect + margin > 0 else 0.0
    return float(norm.cdf((effect + margin) / se - z_of(confidence)))


def min_detectable_effect(se: float, confidence: float, power: float) -> float:
    """Smallest distance between the true effect and the rule's limit at which a one-sided bound test at
    ``confidence`` passes with probability ``power``: ``(z_c + z_power) * se`` (normal approximation)."""
    if not math.isfinite(se):
        return float("inf")
    return (z_of(confidence) + z_of(power)) * max(se, 0.0)
