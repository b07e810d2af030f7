"""Stage 6, calibration error estimators beside the registry's binned plug-in ECE.

The registry's ``ece`` (:mod:`harness.metrics.registry`) is the binned plug-in estimate
``sum_b (n_b / N) |acc_b - conf_b|`` (Guo et al. 2017). It is biased upward: sampling noise in ``acc_b`` alone makes
it positive for a perfectly calibrated model, so its bootstrap interval can miss the true calibration error
entirely (measured: 0% coverage for a calibrated model). A ceiling on it errs on the conservative side (it fails
more, never passes more); as a *reported interval* it is wrong.

:func:`calibration_errors` adds the debiased estimator of Kumar, Liang & Ma 2019 ("Verified uncertainty
calibration", NeurIPS, section 5): for the squared (l2) calibration error,

    CE^2 ~ sum_b (n_b / N) [ (acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1) ]

removes the expected squared noise of each bin's accuracy. It estimates the *l2* error; ``ece_debiased_l2`` is its
square root (0 when the debiased square is negative). Everything is computed from the registry's ECE sufficient
statistics (per bin: count, summed confidence, summed correctness), so it is vectorised over bootstrap resamples.
"""

from __future__ import annotations

import numpy as np

from harness.metrics.registry import N_ECE_BINS, get_metric

__all__ = ["calibration_errors", "calibration_from_sums"]


def calibration_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Calibration errors from summed ECE statistics.

    Parameters
    ----------
    sums : ndarray of float64, shape (..., 3 * N_ECE_BINS)
        ``[count_b | sum confidence_b | sum correct_b]`` summed over examples (or bootstrap-weighted).

    Returns
    -------
    dict of str to ndarray, shape (...)
        ``ece_plugin`` (l1, equals the registry's ``ece``), ``ece_plugin_l2`` and ``ece_debiased_l2``
        (Kumar et al. 2019); NaN where no example is counted.
    """
    k = N_ECE_BINS
    count, conf, correct = sums[..., :k], sums[..., k:2 * k], sums[..., 2 * k:3 * k]
    total = count.sum(axis=-1)
    safe = np.where(count > 0, count, 1.0)
    acc_b, conf_b = correct / safe, conf / safe
    weight = np.divide(count, total[..., None], out=np.zeros(count.shape), where=total[..., None] > 0)
    l1 = (weight * np.abs(acc_b - conf_b)).sum(axis=-1)
    sq = (weight * (acc_b - conf_b) ** 2).sum(axis=-1)
    noise = np.where(count > 1, acc_b * (1.0 - acc_b) / np.where(count > 1, count - 1.0, 1.0), 0.0)
    debiased = (weight * ((acc_b - conf_b) ** 2 - noise)).sum(axis=-1)
    nan = np.where(total > 0, 0.0, np.nan)
    return {"ece_plugin": l1 + nan, "ece_plugin_l2": np.sqrt(sq) + nan,
            "ece_debiased_l2": np.sqrt(np.clip(debiased, 0.0, None)) + nan}


def calibration_errors(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Plug-in (l1, l2) and debiased (l2) calibration errors of one model on one split.

    Parameters
    ----------
    labels : ndarray of int64, shape (n,)
    logits : ndarray of float32, shape (n, C)

    Returns
    -------
    dict of str to float
        See :func:`calibration_from_sums`.
    """
    stats = get_metric("ece").stats(np.asarray(labels, dtype=np.int64), {"logits": np.asarray(logits)})
    return {k: float(v) for k, v in calibration_from_sums(stats.sum(axis=0)).items()}
