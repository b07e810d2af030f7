"""The classification task (the wave-1 behaviour): class logits of a sequence classifier.

Requests are the split's token ids (:func:`harness.tokcache.tokenize_split`, cached); the runner returns logits
already ordered as the suite's ``classes`` (the model's label columns are aligned by the runner, which knows the
model's head); the records are those logits, float32 (n, n_classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dataclasses import replace

from harness.records import SplitData
from harness.tasks.base import Prepared, Task, _rows_of
from harness.tokcache import tokenize_split

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Score every row's text (and ``text_pair``) with a sequence classifier; records ``logits``."""

    name = "classification"
    request_kind = "classify"

    def prepare(self, split: SplitData, tokenizer: Any) -> Prepared:
        tok = tokenize_split(split, tokenizer, self.suite.max_length, truncation=self.suite.truncation)
        return Prepared(ref=tok.ref, kind=self.request_kind, requests=tok, cache_key=tok.cache_key,
                        example_ids=tok.example_ids, source_ids=tok.source_ids, labels=tok.labels,
                        n_truncated=tok.n_truncated, n_dropped=tok.n_dropped)

    def records(self, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"logits": np.asarray(outputs["logits"], dtype=np.float32)}

    def subset(self, prepared: Prepared, index: np.ndarray) -> Prepared:
        """The rows ``index`` of a tokenized split (see :meth:`Task.subset`)."""
        index = np.asarray(index, dtype=np.int64)
        tok = prepared.requests
        types = None if tok.token_type_ids is None else tuple(tok.token_type_ids[i] for i in index)
        sub = _rows_of(prepared, index, None, prepared.info)
        requests = replace(tok, input_ids=tuple(tok.input_ids[i] for i in index), token_type_ids=types,
                           lengths=tok.lengths[index], labels=tok.labels[index], example_ids=tok.example_ids[index],
                           source_ids=tok.source_ids[index], cache_key=sub.cache_key)
        return replace(sub, requests=requests)
