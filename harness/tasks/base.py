"""The task contract and the prepared-requests record (see :mod:`harness.tasks`)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.records import SplitData, SplitRef
from harness.spec.schema import Suite

__all__ = ["REQUEST_KINDS", "Prepared", "Task"]

log = logging.getLogger(__name__)

#: The request kinds a runner can serve: class logits of token ids; log-likelihood of a continuation given a
#: context; rolling log-likelihood of whole documents; greedy generation until a stop sequence.
REQUEST_KINDS = ("classify", "loglikelihood", "loglikelihood_rolling", "generate_until")


@dataclass(frozen=True)
class Prepared:
    """One split turned into requests of one kind, in the split's row order.

    ``requests`` is whatever the runner of ``kind`` reads (a :class:`harness.records.TokenizedSplit` for
    ``classify``; a tuple of request tuples otherwise). ``cache_key`` (sha256 hex) identifies the requests'
    content (rows, spec, tokenizer): the results store keys on it. ``labels`` (int64 (n,)) is the gold class or
    choice index (0 where a task has none); ``n_truncated``/``n_dropped`` reach the summary; ``info`` holds what
    :meth:`Task.records` needs besides the runner's outputs (e.g. each row's number of choices).
    """

    ref: SplitRef
    kind: str
    requests: Any
    cache_key: str
    example_ids: np.ndarray
    source_ids: np.ndarray
    labels: np.ndarray
    n_truncated: int = 0
    n_dropped: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Task(ABC):
    """What a suite asks of a model (see :mod:`harness.tasks`).

    Subclasses set :attr:`name` (the suite's ``task:``) and :attr:`request_kind` (one of
    :data:`REQUEST_KINDS`) and implement :meth:`prepare` and :meth:`records`.
    """

    name: ClassVar[str]
    request_kind: ClassVar[str]

    def __init__(self, suite: Suite) -> None:
        self.suite = suite

    @property
    def metrics(self) -> list[str]:
        """The suite's metric names (validated against the task by the suite spec)."""
        return list(self.suite.metrics)

    @abstractmethod
    def prepare(self, split: SplitData, tokenizer: Any) -> Prepared:
        """Turn a loaded split into requests of :attr:`request_kind` (tokenizing where the kind needs ids).

        Raises
        ------
        DataError, SpecError
            For rows the task cannot use (the message names the split and the field).
        """

    @abstractmethod
    def records(self, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn a runner's outputs for ``prepared`` into the per-example columns the task's metrics read
        (each array's first axis is the split's rows, in order)."""
