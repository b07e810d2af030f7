"""The task contract and the prepared-requests record (see :mod:`harness.tasks`)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.io import sha256_json
from harness.records import SplitData, SplitRef
from harness.spec.schema import Suite

__all__ = ["REQUEST_KINDS", "Prepared", "Task", "merge_records"]

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
    #: keys of ``Prepared.info`` that hold one entry per row (kept for the rows of a :meth:`subset`)
    row_info: ClassVar[tuple[str, ...]] = ()

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

    def stored(self, prepared: Prepared, records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Records read back from the results store, with any column this version derives from ``prepared``
        alone added where an older store entry lacks it (no model output is recomputed). Default: as stored."""
        return records

    def request_spans(self, prepared: Prepared) -> np.ndarray:
        """Offsets into ``prepared.requests`` of each row's requests: row ``i`` owns
        ``requests[spans[i]:spans[i + 1]]`` (int64, shape (n + 1,)). Default: one request per row."""
        return np.arange(len(prepared) + 1, dtype=np.int64)

    def subset(self, prepared: Prepared, index: np.ndarray) -> Prepared:
        """The requests of the rows ``index`` (int64, increasing) of ``prepared``, as a prepared split of their own.

        Used to share one split's examples across the ranks of a distributed run: :meth:`records` of the subset
        gives the rows ``index`` of the full split's records (:func:`merge_records` puts them back in order). Its
        ``cache_key`` is a hash of the parent's key and the rows; it is never a results-store key.
        """
        index = np.asarray(index, dtype=np.int64)
        spans = self.request_spans(prepared)
        reqs = prepared.requests
        requests = tuple(r for i in index for r in reqs[spans[i]:spans[i + 1]])
        info = {k: (tuple(v[i] for i in index) if k in self.row_info else v) for k, v in prepared.info.items()}
        return _rows_of(prepared, index, requests, info)


def _rows_of(prepared: Prepared, index: np.ndarray, requests: Any, info: Mapping[str, Any]) -> Prepared:
    """``prepared`` restricted to the rows ``index`` with the given requests and info."""
    return Prepared(ref=prepared.ref, kind=prepared.kind, requests=requests,
                    cache_key=sha256_json({"parent": prepared.cache_key, "rows": index.tolist()}),
                    example_ids=prepared.example_ids[index], source_ids=prepared.source_ids[index],
                    labels=prepared.labels[index], n_truncated=prepared.n_truncated,
                    n_dropped=prepared.n_dropped, info=info)


def merge_records(n: int, parts: list[tuple[np.ndarray, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The records of a whole split from the records of disjoint row subsets (:meth:`Task.subset`).

    Parameters
    ----------
    n : int
        Rows of the split.
    parts : list of (index, records)
        Each subset's rows (int64) and its records (every column's first axis is those rows); empty subsets may
        be left out.

    Returns
    -------
    dict of str to ndarray
        Every column with the split's rows in order; text columns take the widest subset's width, as one
        ``np.array`` over all rows would.

    Raises
    ------
    ValueError
        If the subsets do not cover each row exactly once, or their columns differ.
    """
    parts = [(np.asarray(i, dtype=np.int64), r) for i, r in parts if len(i)]
    rows = np.concatenate([i for i, _ in parts]) if parts else np.zeros(0, np.int64)
    if len(rows) != n or not np.array_equal(np.sort(rows), np.arange(n)):
        raise ValueError(f"the row subsets cover {len(np.unique(rows))} of {n} rows ({len(rows)} with repeats)")
    names = set(parts[0][1])
    if any(set(r) != names for _, r in parts):
        raise ValueError(f"the row subsets' records have different columns: {[sorted(r) for _, r in parts]}")
    order = np.argsort(rows, kind="stable")
    return {k: np.concatenate([np.asarray(r[k]) for _, r in parts])[order] for k in parts[0][1]}
