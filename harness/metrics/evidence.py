"""Stage 6, the evidence statistics of the release gate on paired correctness (pure functions on arrays).

:mod:`harness.gate` decides; these functions compute what it decides on, so the statistics can be tested and reused
without a run directory:

* :func:`flip_evidence`: the negative-flip rate (reference right, candidate wrong), its cluster-bootstrap
  distribution and its cluster-adjusted exact upper bound;
* :func:`class_recall_evidence`: the smallest per-class recall (the guard against a model that predicts one
  class), per resample, and the smallest per-class exact lower bound;
* :func:`discordant_counts`: the discordant pairs of two paired models, with McNemar's two-sided exact p
  (information) for the gate's ``info``;
* :func:`superiority_check`: the exact one-sided sign test a superiority rule must also pass;
* :func:`power_check`: the minimum detectable effect of a paired difference and whether a non-inferiority margin
  is below it (``underpowered``).

Sources: Clopper & Pearson 1934; Korn & Graubard 1998 (effective n); McNemar 1947; see :mod:`harness.metrics.exact`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.metrics.bootstrap import resample_sums
from harness.metrics.exact import min_detectable_effect, proportion_bound, sign_test

__all__ = ["flip_evidence", "class_recall_evidence", "discordant_counts", "superiority_check", "power_check",
           "agreement_rate", "agreement_se"]


def flip_evidence(ref_right: np.ndarray, cand_right: np.ndarray, source_ids: np.ndarray, w: np.ndarray,
                  index: np.ndarray, confidence: float) -> tuple[float, np.ndarray, dict[str, Any]]:
    """Negative-flip rate of a candidate against a reference on the same examples.

    Parameters
    ----------
    ref_right, cand_right : ndarray of bool, shape (n,)
        Whether each model's argmax equals the label.
    source_ids : ndarray of str, shape (n,)
    w : ndarray of float64, shape (B, G)
        Cluster bootstrap weights (:func:`harness.metrics.bootstrap.cluster_weights`).
    index : ndarray of int64, shape (n,)
        Cluster of each example.
    confidence : float
        One-sided level of the exact upper bound.

    Returns
    -------
    rate : float
    dist : ndarray of float64, shape (B,)
    info : dict
        ``n_negative_flips``, ``n_positive_flips`` and ``exact`` (see
        :func:`harness.metrics.exact.proportion_bound`; ``exact["bound"]`` is the upper bound).
    """
    flips = ref_right & ~cand_right
    stats = np.stack([flips.astype(np.float64), np.ones(flips.shape[0])], axis=1)
    sums = resample_sums(stats, w, index)
    info = {"n_negative_flips": int(flips.sum()), "n_positive_flips": int((cand_right & ~ref_right).sum()),
            "exact": proportion_bound(flips, source_ids, confidence, "upper")}
    return float(flips.mean()), sums[:, 0] / sums[:, 1], info


def class_recall_evidence(labels: np.ndarray, logits: np.ndarray, source_ids: np.ndarray, w: np.ndarray,
                          index: np.ndarray, confidence: float) -> tuple[float, np.ndarray, dict[str, Any]]:
    """Smallest per-class recall over the classes present in ``labels``.

    Parameters
    ----------
    labels : ndarray of int64, shape (n,)
    logits : ndarray of float32, shape (n, C)
    source_ids, w, index, confidence
        As in :func:`flip_evidence`.

    Returns
    -------
    recall : float
        ``min_k`` recall of class ``k`` (share of its examples predicted as ``k``).
    dist : ndarray of float64, shape (B,)
        The smallest recall of each resample (a class missing from a resample is left out of its minimum).
    info : dict
        ``per_class`` (class index -> recall, n, exact_lower), ``exact_lower`` (the smallest), and a ``note``
        naming classes with no example.
    """
    c = logits.shape[1]
    pred = logits.argmax(axis=1)
    onehot = np.eye(c, dtype=np.float64)[labels]
    stats = np.concatenate([onehot * (pred == labels)[:, None], onehot], axis=1)
    sums = resample_sums(stats, w, index)
    present = np.flatnonzero(onehot.sum(axis=0) > 0)
    hit, true = sums[:, present], sums[:, c + present]
    dist = np.where(true > 0, hit / np.where(true > 0, true, 1.0), np.inf).min(axis=1)
    per_class = {}
    for k in present:
        rows = labels == k
        ex = proportion_bound(pred[rows] == k, source_ids[rows], confidence, "lower")
        per_class[int(k)] = {"recall": float((pred[rows] == k).mean()), "n": int(rows.sum()),
                             "exact_lower": ex["bound"]}
    info: dict[str, Any] = {"per_class": per_class,
                            "exact_lower": min(v["exact_lower"] for v in per_class.values())}
    if len(present) < c:
        info["note"] = f"classes {sorted(set(range(c)) - set(present.tolist()))} have no example in this split"
    return min(v["recall"] for v in per_class.values()), dist, info


def discordant_counts(ref_right: np.ndarray, cand_right: np.ndarray) -> dict[str, Any]:
    """Discordant pairs and McNemar's exact two-sided p (McNemar 1947; information, ignores clustering)."""
    from scipy.stats import binomtest

    b = int((ref_right & ~cand_right).sum())
    c = int((~ref_right & cand_right).sum())
    p = float(binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0
    return {"reference_only_right": b, "candidate_only_right": c, "p_value": p,
            "note": "exact two-sided binomial test on discordant pairs; information only (a superiority rule on "
                    "accuracy uses the one-sided sign test, info.sign_test)"}


def superiority_check(wins: int, losses: int, confidence: float) -> tuple[dict[str, Any], str]:
    """The exact one-sided sign test of a superiority rule.

    Returns
    -------
    info : dict
        Counts and the one-sided p.
    reason : str
        Why the rule fails; empty when ``p <= 1 - confidence``.
    """
    p = sign_test(wins, losses)
    info = {"candidate_only_right": wins, "reference_only_right": losses, "p_one_sided": p,
            "note": "exact one-sided sign test (McNemar) on discordant pairs; ignores clustering"}
    if p <= 1.0 - confidence:
        return info, ""
    return info, (f"exact sign test on {wins + losses} discordant pairs ({wins} for the candidate, {losses} against) "
                  f"gives one-sided p = {p:.4f} > {1.0 - confidence:.4f}: the gain is not shown")


def agreement_rate(n_units: int) -> float:
    """The median-unbiased disagreement rate when none of ``n_units`` independent units disagrees:
    ``1 - 0.5 ** (1 / n)``, the rate at which seeing no disagreement is a coin flip (about ``0.69 / n``).

    >>> round(agreement_rate(8), 4)
    0.083
    """
    return 1.0 - 0.5 ** (1.0 / n_units)


def agreement_se(n_units: int) -> float:
    """The standard error a paired difference of right-or-wrong outcomes is given when candidate and reference
    agree everywhere, so the bootstrap has no variance: ``sqrt(d / n)`` at the median-unbiased disagreement rate
    ``d = 1 - 0.5 ** (1 / n)`` (the rate at which seeing no disagreement is a coin flip; about ``0.69 / n``).
    ``n_units`` is the number of independent units: the clusters (``source_id`` values) where examples are
    clustered, since with nothing disagreeing no design effect can be estimated (the gate and ``--plan`` pass
    the smaller of examples and clusters). Returns a float; ``nan`` for ``n_units < 1``.

    >>> round(agreement_se(8), 4), round(agreement_se(3000), 6)
    (0.1019, 0.000278)
    """
    if n_units < 1:
        return float("nan")
    return math.sqrt(agreement_rate(n_units) / n_units)


def power_check(dist: np.ndarray, allowed: float, confidence: float, power: float, *,
                se_floor: float | None = None, se_from: str | None = None) -> tuple[dict[str, Any], str]:
    """Whether a non-inferiority margin is detectable.

    Parameters
    ----------
    dist : ndarray of float64, shape (B,)
        Bootstrap distribution of the paired difference.
    allowed : float
        The margin (``max_drop``, or ``-min_delta``); for a superiority rule pass ``None``-like negative values and
        read ``gain_needed_for_power`` from the info.
    confidence, power : float
        One-sided level of the rule; the power the margin must be detectable at.
    se_floor, se_from : float and str, default=None
        A standard error to use where the bootstrap's is smaller, and why (:func:`agreement_se`: candidate and
        reference agree on every example, so the bootstrap's se is 0 and any margin would look detectable; CI
        trial: 8 agreeing examples reported a minimum detectable effect of 0). Recorded as ``info["se_from"]``.

    Returns
    -------
    info : dict
        ``se`` (bootstrap standard deviation, or the floor), ``min_detectable_effect`` =
        ``(z_confidence + z_power) * se``, ``power``, and ``gain_needed_for_power`` (``-allowed + mde``).
    reason : str
        ``underpowered: ...`` when ``allowed`` is below the minimum detectable effect (only for ``allowed > 0``
        is that possible to fix by more data); empty otherwise.
    """
    se = float(np.std(dist, ddof=1)) if dist.size > 1 else float("nan")
    floored = se_floor is not None and math.isfinite(se_floor) and not se >= se_floor
    if floored:
        se = float(se_floor)
    mde = min_detectable_effect(se, confidence, power)
    info = {"se": se, "min_detectable_effect": mde, "power": power, "gain_needed_for_power": -allowed + mde}
    if floored and se_from:
        info["se_from"] = se_from
    if allowed <= 0 or allowed >= mde:
        return info, ""
    floor_said = " from the no-disagreement floor: no discordant pair was seen" if floored and se_from else ""
    return info, (f"underpowered: the margin {allowed:.4f} is below the minimum detectable effect {mde:.4f} "
                  f"(se {se:.4f}{floor_said}, confidence {confidence:g}, power {power:g}); an equal candidate would "
                  f"fail more often than {1 - power:.0%} of the time: add examples or widen the margin")
