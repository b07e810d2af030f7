"""The metric record shared by the registry and the task-specific metric tables (no torch, no harness stage)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Outputs", "StatsFn", "ValueFn", "CorrectFn", "MetricSpec", "as_outputs", "outputs_finite", "n_columns",
           "TASK_COLUMNS", "missing_columns", "n_non_finite"]

#: The per-example columns of one split (see :class:`harness.records.Predictions`).
Outputs = Mapping[str, np.ndarray]
StatsFn = Callable[[np.ndarray, Outputs], np.ndarray]
ValueFn = Callable[[np.ndarray, int], np.ndarray]
CorrectFn = Callable[[np.ndarray, Outputs], np.ndarray]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its direction, valid range, description and how to compute it.

    Attributes
    ----------
    name : str
        Registry name (``accuracy``) or ``evaluate:NAME_OR_PATH``.
    higher_is_better : bool
        The metric's direction; the gate reads it from here, never from a rule.
    range : tuple of float
        ``(lo, hi)`` of valid values (``hi`` may be ``inf``).
    description : str
        One line, with the source where there is one.
    stats : callable or None
        ``stats(labels int64 (n,), outputs) -> float64 (n, k)`` per-example sufficient statistics; ``None`` for
        ``evaluate`` modules.
    value : callable or None
        ``value(sums float64 (..., k), n_classes) -> float64 (...)``; ``None`` for ``evaluate`` modules.
    compute : callable or None
        ``compute(labels, logits) -> float`` for metrics without sufficient statistics (``evaluate`` modules).
    task : str
        The task whose per-example columns the metric reads (``classification``, ``multiple_choice``,
        ``generation``, ``perplexity``).
    correct : callable or None
        ``correct(labels, outputs) -> bool (n,)``: whether each example counts as right, for metrics that are a
        share of right examples (paired flips and discordant pairs read it); ``None`` otherwise.
    """

    name: str
    higher_is_better: bool
    range: tuple[float, float]
    description: str
    stats: StatsFn | None = None
    value: ValueFn | None = None
    compute: Callable[[np.ndarray, np.ndarray], float] | None = None
    task: str = "classification"
    correct: CorrectFn | None = None

    @property
    def vectorised(self) -> bool:
        """Whether the metric has sufficient statistics (all built-ins do; ``evaluate`` modules do not)."""
        return self.stats is not None and self.value is not None


def as_outputs(outputs: Outputs | np.ndarray) -> dict[str, np.ndarray]:
    """The per-example columns as a dict; a bare array means classification logits (``{"logits": array}``)."""
    if isinstance(outputs, Mapping):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return {"logits": np.asarray(outputs)}


def outputs_finite(outputs: Outputs) -> bool:
    """Whether the scores a metric reads are finite: every logit; every log-likelihood of a real choice (rows'
    padding past their last choice is NaN by design and ignored) or of a document. Text and match columns are
    always finite."""
    if "logits" in outputs:
        return bool(np.isfinite(outputs["logits"]).all())
    if "loglik" in outputs and "choice_len" in outputs:
        return bool(np.isfinite(outputs["loglik"][outputs["choice_len"] > 0]).all())
    if "doc_loglik" in outputs:
        return bool(np.isfinite(outputs["doc_loglik"]).all())
    return True


def n_columns(outputs: Outputs) -> int:
    """The class count passed to ``MetricSpec.value`` (the logits' width; 0 for tasks without classes)."""
    return int(outputs["logits"].shape[1]) if "logits" in outputs else 0


#: Columns each task's records must hold for its metrics (generation: also the metric's own column).
TASK_COLUMNS = {"classification": ("logits",), "multiple_choice": ("loglik", "choice_len"), "generation": (),
                "perplexity": ("doc_loglik", "words", "bytes")}


def missing_columns(spec: MetricSpec, outputs: Outputs) -> list[str]:
    """Columns ``spec`` reads that ``outputs`` lacks (empty when the metric applies to these records)."""
    need = TASK_COLUMNS.get(spec.task, ()) + ((spec.name,) if spec.task == "generation" else ())
    return [c for c in need if c not in outputs]


def n_non_finite(outputs: Outputs) -> int:
    """How many examples have a non-finite score a metric reads (see :func:`outputs_finite`)."""
    if "logits" in outputs:
        return int((~np.isfinite(outputs["logits"]).all(axis=1)).sum())
    if "loglik" in outputs and "choice_len" in outputs:
        bad = ~np.isfinite(outputs["loglik"]) & (outputs["choice_len"] > 0)
        return int(bad.any(axis=1).sum())
    if "doc_loglik" in outputs:
        return int((~np.isfinite(outputs["doc_loglik"])).sum())
    return 0
