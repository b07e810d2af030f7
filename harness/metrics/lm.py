"""The language-model metrics: multiple choice, generation and perplexity, as sufficient statistics.

Each reads the per-example columns its task writes (:mod:`harness.tasks`), so the cluster bootstrap, the paired
gate and selection work on them exactly as on classification metrics.

* ``multiple_choice`` (columns ``loglik``, ``choice_len`` and ``choice_bytes``, float64 (n, K), NaN/0 past a
  row's last choice; ``acc_bytes`` divides by UTF-8 bytes as lm-eval does):
  ``acc`` = argmax of the summed log-likelihoods equals the gold index; ``acc_norm`` = argmax of log-likelihood
  divided by the choice's length in characters (lm-eval 0.4.13 ``ConfigurableTask.process_results``:
  ``np.argmax(lls / completion_len)`` with ``completion_len = len(choice)``). Ties go to the first choice, as
  ``np.argmax`` does in lm-eval.
* ``generation`` (one float64 (n,) column per metric, 1.0 or 0.0, or the token F1 in [0, 1], computed by the task
  from the output text and the gold answer): the mean.
* ``perplexity`` (columns ``doc_loglik``, ``words``, ``bytes``, float64 (n,) per document): ratio estimators over
  documents, as lm-eval's ``weighted_perplexity`` and ``bits_per_byte``: ``word_perplexity =
  exp(-sum loglik / sum words)``, ``byte_perplexity = exp(-sum loglik / sum bytes)``, ``bits_per_byte =
  -sum loglik / (sum bytes * ln 2)``. Resampling documents resamples numerator and denominator together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from harness.metrics.base import MetricSpec, Outputs

__all__ = ["LM_METRICS", "GENERATION_METRICS", "choice_prediction"]

#: Match metrics of the generation task (each a per-example column of the same name).
GENERATION_METRICS = ("exact_match", "numeric_match", "contains", "f1")


def choice_prediction(outputs: Outputs, normalise: bool | str = False) -> np.ndarray:
    """The chosen choice index per example, int64 (n,): argmax of ``loglik`` (or, with ``normalise=True``,
    ``loglik / choice_len``; with ``normalise="bytes"``, ``loglik / choice_bytes``) over each row's real choices.

    >>> ll = np.array([[-3.0, -2.0, np.nan], [-1.0, -9.0, -4.0]])
    >>> ln = np.array([[3.0, 1.0, 0.0], [1.0, 10.0, 2.0]])
    >>> choice_prediction({"loglik": ll, "choice_len": ln}).tolist()
    [1, 0]
    >>> choice_prediction({"loglik": ll, "choice_len": ln}, normalise=True).tolist()
    [0, 1]
    """
    ll, ln = outputs["loglik"], outputs["choice_len"]
    real = ln > 0
    den = outputs["choice_bytes"] if normalise == "bytes" else ln
    score = np.divide(ll, den, out=np.full(ll.shape, -np.inf), where=real) if normalise else ll
    return np.where(real, score, -np.inf).argmax(axis=1)


def _acc_correct(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
    return choice_prediction(outputs) == labels


def _acc_norm_correct(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
    return choice_prediction(outputs, normalise=True) == labels


def _acc_bytes_correct(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
    return choice_prediction(outputs, normalise="bytes") == labels


def _share_stats(correct):
    def stats(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
        out = np.ones((labels.shape[0], 2), dtype=np.float64)
        out[:, 0] = correct(labels, outputs)
        return out

    stats.__name__ = stats.__qualname__ = f"share_of_{correct.__name__.strip('_')}"
    return stats


def _column_stats(name: str):
    def stats(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
        out = np.ones((labels.shape[0], 2), dtype=np.float64)
        out[:, 0] = outputs[name]
        return out

    stats.__name__ = stats.__qualname__ = f"mean_of_{name}"
    return stats


def _column_correct(name: str):
    def correct(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
        return np.asarray(outputs[name]) >= 1.0

    return correct


def _mean_value(sums: np.ndarray, c: int) -> np.ndarray:
    count = sums[..., 1]
    return np.divide(sums[..., 0], count, out=np.full(count.shape, np.nan), where=count > 0)


def _ratio_stats(denominator: str):
    def stats(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
        return np.stack([np.asarray(outputs["doc_loglik"], np.float64),
                         np.asarray(outputs[denominator], np.float64)], axis=1)

    stats.__name__ = stats.__qualname__ = f"loglik_per_{denominator}"
    return stats


def _ratio(sums: np.ndarray) -> np.ndarray:
    den = sums[..., 1]
    return np.divide(sums[..., 0], den, out=np.full(den.shape, np.nan), where=den > 0)


def _perplexity_value(sums: np.ndarray, c: int) -> np.ndarray:
    return np.exp(-_ratio(sums))


def _bits_per_byte_value(sums: np.ndarray, c: int) -> np.ndarray:
    return -_ratio(sums) / math.log(2)


_WORDS, _BYTES = _ratio_stats("words"), _ratio_stats("bytes")
_GEN_DESCRIPTIONS = {
    "exact_match": "share of outputs equal to the gold answer after the suite's normalisation",
    "numeric_match": "share of outputs whose final number equals the gold answer's number (e.g. GSM8K '#### 1,200')",
    "contains": "share of outputs that contain the normalised gold answer",
    "f1": "mean token-overlap F1 between output and gold answer (SQuAD-style, after normalisation)",
}

#: name -> spec of every language-model metric.
LM_METRICS: Mapping[str, MetricSpec] = MappingProxyType({
    "acc": MetricSpec("acc", True, (0.0, 1.0),
                      "share of questions whose highest summed log-likelihood choice is the gold one (lm-eval acc)",
                      _share_stats(_acc_correct), _mean_value, task="multiple_choice", correct=_acc_correct),
    "acc_norm": MetricSpec("acc_norm", True, (0.0, 1.0),
                           "as acc, log-likelihood divided by the choice's length in characters (lm-eval acc_norm)",
                           _share_stats(_acc_norm_correct), _mean_value, task="multiple_choice",
                           correct=_acc_norm_correct),
    "acc_bytes": MetricSpec("acc_bytes", True, (0.0, 1.0),
                            "as acc, log-likelihood divided by the choice's length in UTF-8 bytes (lm-eval acc_bytes)",
                            _share_stats(_acc_bytes_correct), _mean_value, task="multiple_choice",
                            correct=_acc_bytes_correct),
    **{name: MetricSpec(name, True, (0.0, 1.0), _GEN_DESCRIPTIONS[name], _column_stats(name), _mean_value,
                        task="generation", correct=None if name == "f1" else _column_correct(name))
       for name in GENERATION_METRICS},
    "word_perplexity": MetricSpec("word_perplexity", False, (1.0, float("inf")),
                                  "exp(-sum log-likelihood / sum words) over documents (lm-eval)", _WORDS,
                                  _perplexity_value, task="perplexity"),
    "byte_perplexity": MetricSpec("byte_perplexity", False, (1.0, float("inf")),
                                  "exp(-sum log-likelihood / sum UTF-8 bytes) over documents (lm-eval)", _BYTES,
                                  _perplexity_value, task="perplexity"),
    "bits_per_byte": MetricSpec("bits_per_byte", False, (0.0, float("inf")),
                                "-sum log-likelihood / (sum UTF-8 bytes * ln 2) over documents (lm-eval)", _BYTES,
                                _bits_per_byte_value, task="perplexity"),
})
