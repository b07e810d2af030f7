"""Immutable records passed between pipeline stages.

Data flows one way (``../shared/STYLE.md``): suite spec -> :class:`SplitData` -> :class:`TokenizedSplit` ->
model or blend -> :class:`Predictions` -> :class:`SplitResult` -> sweep selection -> :class:`Verdict` -> report.
This module imports nothing from torch or the rest of the harness, so every stage may import it.

Array fields hold numpy arrays; treat them as read-only (stages never mutate a record they received).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "SplitRole",
    "SuiteRole",
    "PointRole",
    "SplitRef",
    "SplitData",
    "TokenizedSplit",
    "Predictions",
    "MetricValue",
    "SplitResult",
    "Point",
    "PointResult",
    "canonical_alpha",
    "point_id",
]


class SplitRole(str, Enum):
    """What a split is for: ``train`` (demo training only), ``validation`` (selects alpha), ``test`` (reported)."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class SuiteRole(str, Enum):
    """Whether a suite is in-distribution (``id``) or a distribution shift (``shift``)."""

    ID = "id"
    SHIFT = "shift"


class PointRole(str, Enum):
    """Which model a sweep point is: the ``base``, the ``adapted`` (fine-tuned) model, or a ``blend``."""

    BASE = "base"
    ADAPTED = "adapted"
    BLEND = "blend"


def canonical_alpha(alpha: float) -> float:
    """Round an interpolation weight to 6 decimals so ``0.30000000000000004`` and ``0.3`` are one point.

    Raises
    ------
    ValueError
        If ``alpha`` is not a finite number in [0, 1].
    """
    a = float(alpha)
    if not np.isfinite(a) or a < 0.0 or a > 1.0:
        raise ValueError(f"alpha must be a finite number in [0, 1] (0 = base, 1 = adapted); got {alpha!r}")
    return round(a, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def point_id(role: PointRole | str, alpha: float | None) -> str:
    """Stable id of a sweep point: ``base``, ``adapted`` or ``alpha=0.3``."""
    role = PointRole(role)
    if role is PointRole.BLEND:
        return f"alpha={canonical_alpha(alpha):g}"
    return role.value


@dataclass(frozen=True)
class SplitRef:
    """Identity of one split of one suite.

    ``fingerprint`` is the sha256 of the split's canonical rows (ids, texts, labels) and of the suite spec's
    content hash; it changes whenever anything that can change a prediction's input changes.
    """

    suite: str
    split: str
    role: SplitRole
    suite_role: SuiteRole
    shift_type: str | None = None
    suite_version: str = ""
    fingerprint: str = ""

    @property
    def key(self) -> str:
        """``suite/split``, the name used in summary.json and on the command line."""
        return f"{self.suite}/{self.split}"


@dataclass(frozen=True)
class SplitData:
    """Canonical rows of one split, in a fixed order.

    ``frame`` has columns ``example_id`` (str, unique), ``source_id`` (str, the bootstrap cluster key: the
    document, or the source example of a perturbed copy), ``text`` (str), optional ``text_pair`` (str) and
    ``label`` (int64 index into ``classes``). ``n_dropped`` counts rows removed by the spec (missing text with
    ``on_missing_text: drop``, neutral band, ...), broken down by reason in ``drop_reasons``.
    """

    ref: SplitRef
    frame: pd.DataFrame
    classes: tuple[str, ...]
    n_dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class TokenizedSplit:
    """A split after tokenization: ragged token ids in the split's row order.

    ``input_ids[i]`` is an int32 array of length ``lengths[i]`` (special tokens included, at most
    ``max_length``); ``token_type_ids`` is ``None`` or parallel to it. ``n_truncated`` counts examples cut to
    ``max_length``. ``cache_key`` is the sha256 this entry is stored under (see :mod:`harness.tokcache`).
    """

    ref: SplitRef
    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray, ...] | None
    lengths: np.ndarray
    labels: np.ndarray
    example_ids: np.ndarray
    source_ids: np.ndarray
    max_length: int
    n_truncated: int
    n_dropped: int
    cache_key: str

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class Predictions:
    """Per-example records of one model (or blend) on one split, in the split's row order.

    ``outputs`` holds the task's per-example columns, each an array whose first axis has length ``n_examples``
    (see :mod:`harness.tasks` for the columns of each task):

    * ``classification``: ``logits`` float32 (n, n_classes);
    * ``multiple_choice``: ``loglik`` float64 (n, max_choices) summed log-likelihood of each choice as a
      continuation of the context (NaN past a row's last choice), ``choice_len`` float64 (n, max_choices) the
      choice's length in characters (0 past the last choice), ``is_greedy`` float64 (n, max_choices);
    * ``generation``: ``output`` str (n,) and one float64 (n,) column per match metric;
    * ``perplexity``: ``doc_loglik``, ``tokens``, ``words``, ``bytes`` float64 (n,).

    ``labels`` is int64 of shape (n,): the gold class or choice index (0 for tasks without one). Passing a bare
    array as ``outputs`` means classification logits (``{"logits": array}``).
    """

    ref: SplitRef
    point: str
    alpha: float | None
    example_ids: np.ndarray
    source_ids: np.ndarray
    labels: np.ndarray
    outputs: Mapping[str, np.ndarray]
    task: str = "classification"

    def __post_init__(self) -> None:
        outputs = {"logits": self.outputs} if isinstance(self.outputs, np.ndarray) else dict(self.outputs)
        object.__setattr__(self, "outputs", outputs)  # a copy: the caller's dict is never shared

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def logits(self) -> np.ndarray:
        """Classification logits float32 (n, n_classes); ``KeyError`` for other tasks."""
        return self.outputs["logits"]


@dataclass(frozen=True)
class MetricValue:
    """One metric on one split: point estimate and bootstrap interval, all fractions in the metric's range."""

    value: float
    ci_low: float
    ci_high: float
    higher_is_better: bool


@dataclass(frozen=True)
class SplitResult:
    """All metrics of one point on one split, with its example counts (``n_nonfinite``: examples whose outputs
    hold inf/NaN, e.g. an fp16 overflow; their split's metrics are NaN)."""

    n: int
    n_truncated: int
    n_dropped: int
    metrics: dict[str, MetricValue]
    n_nonfinite: int = 0


@dataclass(frozen=True)
class Point:
    """One evaluated model of a run: base, adapted, or a blend at ``alpha`` (fraction of adapted weights)."""

    id: str
    role: PointRole
    alpha: float | None
    is_chosen: bool = False
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PointResult:
    """What evaluating one point of a sweep produced: its identity, and per split its records and metrics.

    ``results[ref]`` -> :class:`SplitResult`; ``predictions[ref]`` -> :class:`Predictions` (``ref`` a
    :class:`SplitRef`). ``alpha`` is the blend weight (0 for the base, 1 for the adapted model).
    """

    id: str
    role: PointRole
    alpha: float
    results: dict[SplitRef, SplitResult]
    predictions: dict[SplitRef, Predictions]
    label: str = ""


@dataclass(frozen=True)
class RuleOutcome:
    """The outcome of one gate rule on one suite (or aggregate of suites).

    ``value`` is the statistic the rule judged (a delta for relative rules, a level for floors/ceilings, a rate
    for negative flips), ``bound`` the one-sided confidence bound used in ``bound`` mode (``None`` in ``point``
    mode), ``threshold`` the rule's limit and ``margin`` how far inside (positive) or outside (negative) the
    limit the judged number lies. ``reason`` explains a failure (missing data, NaN, mismatch, below threshold).
    """

    rule: str
    kind: str
    metric: str
    suite: str
    split: str
    mode: str
    passed: bool
    value: float | None
    bound: float | None
    threshold: float | None
    margin: float | None
    n: int | None
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """A gate's verdict: ``passed`` only if every outcome passed (and there was at least one)."""

    policy: str
    candidate: str
    reference: str
    passed: bool
    outcomes: tuple[RuleOutcome, ...]
    confidence: float
    n_resamples: int
    seed: int
