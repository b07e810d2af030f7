"""Stage 6, the metric registry: one explicit, frozen table from metric name to :class:`MetricSpec`.

Every built-in metric is a function of *sufficient statistics summed over examples*. A spec holds two functions:

``stats(labels, outputs) -> ndarray (n, k)``
    per-example statistics (float64) from the task's per-example columns (``outputs``, a mapping of column name
    to array; classification reads ``logits``), so that any weighted sum of rows is the statistics of a
    (re)sample;
``value(sums, n_classes) -> ndarray (...)``
    the metric from summed statistics of shape ``(..., k)``, vectorised over the leading axes.

A bootstrap resample is then a weight vector over examples (or clusters), and a whole bootstrap is one matrix
product (see :mod:`harness.metrics.bootstrap`). The point estimate is the same ``value`` of the unweighted sum, so
points and intervals share one code path. Point estimates of accuracy, macro-F1 and balanced accuracy equal
scikit-learn's (``accuracy_score``, ``f1_score(average="macro", labels=range(C), zero_division=0)``,
``balanced_accuracy_score``); scikit-learn is the test oracle rather than the runtime path because it cannot
evaluate 2,000 resamples at once and warns on resamples that miss a class.

Zero-division conventions (a resample may miss a class; nothing here warns): a class's F1 is 0 when it has no
true and no predicted examples (macro-F1 still averages over all ``C`` classes, like scikit-learn with
``labels=range(C)``); balanced accuracy averages recall over the classes present in that sample's labels.

``evaluate:NAME_OR_PATH`` names a Hugging Face ``evaluate`` module instead. It is loaded (``evaluate.load``, which
may fetch code from the Hub) only when such a name is looked up, never for the built-ins, and is computed on
argmax predictions against labels.

Non-finite logits make every metric of that split NaN (a gate then fails on the NaN; it never passes on one);
the same holds for a non-finite log-likelihood of a language-model task.

Each spec names the task whose records it reads (``task``): classification metrics read ``logits``; the
language-model metrics (:mod:`harness.metrics.lm`) read the columns their task writes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from harness.errors import MetricError, format_error, unknown_name
from harness.metrics.base import MetricSpec, Outputs, as_outputs, missing_columns, n_columns, outputs_finite
from harness.metrics.lm import LM_METRICS

__all__ = ["MetricSpec", "METRICS", "EVALUATE_PREFIX", "N_ECE_BINS", "get_metric", "is_share", "same_scale",
           "metric_names", "check_inputs", "check_applies", "point_value", "right_metric", "examples_right"]

logger = logging.getLogger(__name__)

EVALUATE_PREFIX = "evaluate:"
#: Equal-width confidence bins of the expected calibration error, on (0, 1].
N_ECE_BINS = 10
_ECE_EDGES = np.linspace(0.0, 1.0, N_ECE_BINS + 1)

# ---------------------------------------------------------------------------------------------------------------
# Sufficient statistics
# ---------------------------------------------------------------------------------------------------------------

def _class_counts_stats(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-example one-hots ``[tp_c | true_c | pred_c]`` for c in 0..C-1: shape (n, 3C).

    Summed over examples they give, per class, true positives, true (row) counts and predicted (column) counts:
    everything accuracy, macro-F1 and balanced accuracy need (3C columns instead of a C*C confusion matrix).
    """
    n, c = logits.shape
    pred = logits.argmax(axis=1)
    rows = np.arange(n)
    out = np.zeros((n, 3 * c), dtype=np.float64)
    correct = pred == labels
    out[rows[correct], labels[correct]] = 1.0
    out[rows, c + labels] = 1.0
    out[rows, 2 * c + pred] = 1.0
    return out


def _split_counts(sums: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sums[..., :c], sums[..., c:2 * c], sums[..., 2 * c:3 * c]


def _accuracy_value(sums: np.ndarray, c: int) -> np.ndarray:
    tp, true, _ = _split_counts(sums, c)
    total = true.sum(axis=-1)
    return np.divide(tp.sum(axis=-1), total, out=np.full(total.shape, np.nan), where=total > 0)


def _macro_f1_value(sums: np.ndarray, c: int) -> np.ndarray:
    tp, true, pred = _split_counts(sums, c)
    den = true + pred  # = 2tp + fp + fn
    f1 = np.divide(2.0 * tp, den, out=np.zeros(den.shape), where=den > 0)
    total = true.sum(axis=-1)
    return np.where(total > 0, f1.mean(axis=-1), np.nan)


def _balanced_accuracy_value(sums: np.ndarray, c: int) -> np.ndarray:
    tp, true, _ = _split_counts(sums, c)
    present = true > 0
    recall = np.divide(tp, true, out=np.zeros(true.shape), where=present)
    k = present.sum(axis=-1)
    return np.divide(recall.sum(axis=-1), k, out=np.full(k.shape, np.nan), where=k > 0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def _nll_stats(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-example ``[-log softmax(logits)[label], 1]``: shape (n, 2)."""
    logp = _log_softmax(logits)
    out = np.ones((labels.shape[0], 2), dtype=np.float64)
    out[:, 0] = -logp[np.arange(labels.shape[0]), labels]
    return out


def _nll_value(sums: np.ndarray, c: int) -> np.ndarray:
    count = sums[..., 1]
    return np.divide(sums[..., 0], count, out=np.full(count.shape, np.nan), where=count > 0)


def _ece_stats(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-example ``[count_b | sum confidence_b | sum correct_b]`` over the 10 bins: shape (n, 30).

    Top-label confidence ``max softmax`` falls in bin ``b`` when ``edges[b] < conf <= edges[b + 1]`` with
    ``edges = linspace(0, 1, 11)`` (Guo et al. 2017).
    """
    logp = _log_softmax(logits)
    pred = logp.argmax(axis=1)
    conf = np.exp(logp.max(axis=1))
    b = np.clip(np.searchsorted(_ECE_EDGES, conf, side="left") - 1, 0, N_ECE_BINS - 1)
    n, rows = labels.shape[0], np.arange(labels.shape[0])
    out = np.zeros((n, 3 * N_ECE_BINS), dtype=np.float64)
    out[rows, b] = 1.0
    out[rows, N_ECE_BINS + b] = conf
    out[rows, 2 * N_ECE_BINS + b] = (pred == labels).astype(np.float64)
    return out


def _ece_value(sums: np.ndarray, c: int) -> np.ndarray:
    # sum_b (n_b / N) |acc_b - conf_b| = (1 / N) sum_b |sum_correct_b - sum_conf_b|
    k = N_ECE_BINS
    count, conf, correct = sums[..., :k], sums[..., k:2 * k], sums[..., 2 * k:3 * k]
    total = count.sum(axis=-1)
    gap = np.abs(correct - conf).sum(axis=-1)
    return np.divide(gap, total, out=np.full(total.shape, np.nan), where=total > 0)


@functools.lru_cache(maxsize=None)
def _on_logits(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> StatsFn:
    """Adapt ``fn(labels, logits)`` to the ``stats(labels, outputs)`` signature (cached: one adapter per function,
    so metrics sharing statistics still share one block)."""
    def stats(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
        return fn(labels, outputs["logits"])

    stats.__name__ = stats.__qualname__ = fn.__name__
    return stats


def _argmax_correct(labels: np.ndarray, outputs: Outputs) -> np.ndarray:
    """Whether the argmax class of ``logits`` equals the label, bool (n,)."""
    return outputs["logits"].argmax(axis=1) == labels


def _classification_metrics() -> dict[str, MetricSpec]:
    return {
        "accuracy": MetricSpec(
            "accuracy", True, (0.0, 1.0), "share of examples whose argmax prediction equals the label",
            _on_logits(_class_counts_stats), _accuracy_value, correct=_argmax_correct),
        "macro_f1": MetricSpec(
            "macro_f1", True, (0.0, 1.0),
            "unweighted mean over all C classes of per-class F1 (0 for a class with no true and no predicted "
            "example)", _on_logits(_class_counts_stats), _macro_f1_value),
        "balanced_accuracy": MetricSpec(
            "balanced_accuracy", True, (0.0, 1.0),
            "mean recall over the classes present in the labels (Brodersen et al. 2010)",
            _on_logits(_class_counts_stats), _balanced_accuracy_value),
        "nll": MetricSpec(
            "nll", False, (0.0, float("inf")),
            "mean negative log-likelihood of the true class, log-softmax of the logits, in nats",
            _on_logits(_nll_stats), _nll_value),
        "ece": MetricSpec(
            "ece", False, (0.0, 1.0),
            "expected calibration error: top-label confidence, 10 equal-width bins on (0, 1], "
            "sum_b (n_b/N) |acc_b - conf_b| (Guo et al. 2017)",
            _on_logits(_ece_stats), _ece_value),
    }


#: name -> spec of every built-in metric (frozen; keys equal ``harness.spec.schema.BUILTIN_METRICS``).
METRICS: Mapping[str, MetricSpec] = MappingProxyType({**_classification_metrics(), **LM_METRICS})

#: Known directions of common ``evaluate`` modules (their module info carries none).
_EVALUATE_DIRECTIONS: Mapping[str, bool] = MappingProxyType({
    "accuracy": True, "f1": True, "precision": True, "recall": True, "matthews_correlation": True,
    "exact_match": True, "mse": False, "mae": False, "brier_score": False, "wer": False, "cer": False,
})


def metric_names() -> tuple[str, ...]:
    """Names of the built-in metrics, in table order.

    Examples
    --------
    >>> metric_names()[:5]
    ('accuracy', 'macro_f1', 'balanced_accuracy', 'nll', 'ece')
    >>> metric_names()[5:7]
    ('acc', 'acc_norm')
    """
    return tuple(METRICS)


def is_share(name: str) -> bool:
    """Whether metric ``name`` is a share of examples: range [0, 1], higher is better (accuracy, acc_norm,
    exact_match, macro_f1...). An ``evaluate:`` metric is not known to be one (its range is not loaded here).

    >>> is_share("acc_norm"), is_share("bits_per_byte"), is_share("ece")
    (True, False, False)
    """
    if name.startswith(EVALUATE_PREFIX):
        return False
    spec = get_metric(name)
    return spec.higher_is_better and tuple(spec.range) == (0.0, 1.0)


def same_scale(names: Iterable[str]) -> bool:
    """Whether metrics ``names`` can be averaged: all one metric, or all shares of examples (:func:`is_share`).
    The selection's ID and shift scores and the report's means average suites only on such metrics.

    >>> same_scale(["acc_norm", "exact_match"]), same_scale(["acc_norm", "bits_per_byte"])
    (True, False)
    """
    names = set(names)
    return len(names) <= 1 or all(is_share(n) for n in names)


def get_metric(name: str) -> MetricSpec:
    """Look up a metric by name.

    Parameters
    ----------
    name : str
        A built-in name (see :data:`METRICS`) or ``evaluate:NAME_OR_PATH``. The latter imports ``evaluate`` and
        calls ``evaluate.load(NAME_OR_PATH)`` (which may fetch code from the Hub); built-ins never do.

    Returns
    -------
    MetricSpec

    Raises
    ------
    MetricError
        For an unknown name (with near matches and the list of names), or an ``evaluate`` module that cannot be
        loaded.

    Examples
    --------
    >>> spec = get_metric("nll")
    >>> spec.higher_is_better, spec.range
    (False, (0.0, inf))
    >>> get_metric("acuracy")
    Traceback (most recent call last):
    ...
    harness.errors.MetricError: unknown metric 'acuracy'.
    ...
    """
    if name in METRICS:
        return METRICS[name]
    if isinstance(name, str) and name.startswith(EVALUATE_PREFIX) and len(name) > len(EVALUATE_PREFIX):
        return _evaluate_spec(name[len(EVALUATE_PREFIX):])
    raise MetricError(unknown_name("metric", str(name), [*METRICS, EVALUATE_PREFIX + "NAME_OR_PATH"]))


def _load_evaluate_module(path: str) -> Any:
    """``evaluate.load(path)`` (imported here, only when an ``evaluate:`` metric is asked for)."""
    import evaluate  # heavy and may reach the Hub: only on request

    return evaluate.load(path)


@functools.lru_cache(maxsize=32)
def _evaluate_spec(path: str) -> MetricSpec:
    try:
        module = _load_evaluate_module(path)
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, ImportError...
        raise MetricError(format_error(f"cannot load evaluate module {path!r}", where=f"{EVALUATE_PREFIX}{path}",
                                       got=f"{type(e).__name__}: {e}"[:300],
                                       fix="check the name or local path; the Hub needs network or a warm "
                                           "HF cache")) from e
    info = getattr(module, "info", None)
    module_name = str(getattr(info, "module_name", None) or getattr(module, "name", None) or path)
    hib = getattr(info, "higher_is_better", None)
    if hib is None:
        hib = _EVALUATE_DIRECTIONS.get(module_name.lower())
    if hib is None:
        hib = True
        logger.warning("evaluate module %r declares no direction; assuming higher is better", path)
    name = EVALUATE_PREFIX + path

    def compute(labels: np.ndarray, logits: np.ndarray) -> float:
        out = module.compute(predictions=logits.argmax(axis=1).tolist(), references=labels.tolist())
        return _scalar_of(out, module_name, name)

    return MetricSpec(name, bool(hib), (-float("inf"), float("inf")),
                      f"evaluate module {path!r} on argmax predictions", compute=compute)


def _scalar_of(out: Any, key: str, name: str) -> float:
    if isinstance(out, Mapping):
        if key in out:
            out = out[key]
        elif len(out) == 1:
            out = next(iter(out.values()))
        else:
            raise MetricError(format_error(f"metric {name!r} returned several values", where=name,
                                           expected="one number, or a dict with one key or a key named after "
                                                    "the module", got=sorted(out)))
    try:
        return float(out)
    except (TypeError, ValueError) as e:
        raise MetricError(format_error(f"metric {name!r} did not return a number", where=name,
                                       got=repr(out)[:200])) from e


def check_inputs(labels: np.ndarray, outputs: Outputs | np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validate and normalise ``labels`` and a split's per-example columns.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Class indices in ``[0, C)`` (classification), gold choice indices (multiple choice), zeros otherwise.
    outputs : mapping of str to array, or array
        The task's per-example columns (see :class:`harness.records.Predictions`); a bare array means
        classification ``logits`` of shape (n, C), ``C >= 2``.

    Returns
    -------
    labels : ndarray of int64, shape (n,)
    outputs : dict of str to ndarray

    Raises
    ------
    MetricError
        On wrong shapes, non-integer labels or labels outside ``[0, C)`` (or outside a row's choices).

    Examples
    --------
    >>> labels, outputs = check_inputs([0, 1], [[0.5, 0.1], [0.2, 0.9]])
    >>> labels.dtype, outputs["logits"].shape
    (dtype('int64'), (2, 2))
    """
    outputs = as_outputs(outputs)
    labels = np.asarray(labels)
    if "logits" in outputs:
        logits = outputs["logits"]
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise MetricError(format_error("logits must be a 2-D array with at least 2 classes",
                                           expected="shape (n_examples, n_classes)", got=logits.shape))
    n = next(iter(outputs.values())).shape[0] if outputs else labels.shape[0]
    if labels.ndim != 1 or labels.shape[0] != n or any(v.shape[0] != n for v in outputs.values()):
        raise MetricError(format_error("labels must be 1-D and match the logits' rows (every per-example column's rows)",
                                       expected=f"shape ({n},)",
                                       got={"labels": labels.shape, **{k: v.shape for k, v in outputs.items()}}))
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise MetricError(format_error("labels must be integer class indices", expected="int64",
                                       got=str(labels.dtype)))
    labels = labels.astype(np.int64, copy=False)
    width = outputs["logits"].shape[1] if "logits" in outputs else (
        outputs["choice_len"].shape[1] if "choice_len" in outputs else None)
    if width is not None and labels.size and (labels.min() < 0 or labels.max() >= width):
        raise MetricError(format_error("label outside the class range", expected=f"0 <= label < {width}",
                                       got=f"[{labels.min()}, {labels.max()}]",
                                       fix="check the suite's classes and label_map (or its gold answers)"))
    return labels, outputs


def check_applies(spec: MetricSpec, outputs: Outputs) -> None:
    """Raise :class:`MetricError` when ``spec`` reads columns that these records do not have (a metric of
    another task, e.g. ``acc`` on classification logits)."""
    missing = missing_columns(spec, outputs)
    if missing:
        raise MetricError(format_error(f"metric {spec.name!r} does not apply to these records",
                                       where=spec.name, expected=f"records of a {spec.task} task (columns "
                                       f"{', '.join(missing)})", got=f"columns {', '.join(sorted(outputs))}",
                                       fix="name metrics of the suite's task (see the suite reference)"))


def point_value(name: str, labels: np.ndarray, outputs: Outputs | np.ndarray) -> float:
    """Point estimate of one metric on all examples.

    Parameters
    ----------
    name : str
        Metric name (see :func:`get_metric`).
    labels : ndarray of int64, shape (n,)
    outputs : mapping of str to array, or array
        The task's per-example columns; a bare array means classification logits float32 (n, C).

    Returns
    -------
    float
        NaN when ``n == 0`` or any score the metric reads is not finite.

    Raises
    ------
    MetricError
        Unknown metric or invalid inputs.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 1, 1, 0])
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 1.0]], dtype=np.float32)
    >>> point_value("accuracy", labels, logits)
    0.75
    >>> round(point_value("nll", labels, logits), 4)
    0.4701
    """
    spec = get_metric(name)
    check_applies(spec, as_outputs(outputs))
    labels, outputs = check_inputs(labels, outputs)
    if labels.size == 0 or not outputs_finite(outputs):
        return float("nan")
    if not spec.vectorised:
        return spec.compute(labels, outputs["logits"])
    sums = spec.stats(labels, outputs).sum(axis=0)
    return float(spec.value(sums, n_columns(outputs)))


#: per task (recognised by its columns), the metric whose per-example right/wrong is the task's own
_RIGHT_METRICS = (("logits", "accuracy"), ("choice_len", "acc_norm"), ("exact_match", "exact_match"),
                  ("numeric_match", "numeric_match"), ("contains", "contains"))


def right_metric(outputs: Outputs, metric: str | None = None) -> str | None:
    """The metric that says whether each example is right: ``metric`` when it defines it, else the task's own
    (accuracy, acc_norm, the first generation match); ``None`` for records without one (perplexity)."""
    if metric is not None and get_metric(metric).correct is not None:
        return metric
    return next((m for col, m in _RIGHT_METRICS if col in outputs), None)


def examples_right(labels: np.ndarray, outputs: Outputs | np.ndarray, metric: str | None = None) -> np.ndarray | None:
    """Whether each example is right, bool (n,), by :func:`right_metric` (``None`` when undefined).

    >>> examples_right(np.array([0, 1]), np.array([[2.0, 1.0], [3.0, 0.0]])).tolist()
    [True, False]
    """
    outputs = as_outputs(outputs)
    name = right_metric(outputs, metric)
    return None if name is None else np.asarray(get_metric(name).correct(np.asarray(labels), outputs), dtype=bool)
