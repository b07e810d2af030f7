"""Perplexity of whole documents by rolling log-likelihood (lm-eval ``output_type: loglikelihood_rolling``).

Each row's ``text`` field becomes one ``loglikelihood_rolling`` request (windows of the suite's ``max_length``,
default the model's, with its ``stride``). Records, float64 (n,): ``doc_loglik`` (summed over the document's tokens),
``tokens``, ``words`` and ``bytes`` (UTF-8), counted as lm-eval counts them for ``word_perplexity``,
``byte_perplexity`` and ``bits_per_byte``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.data.lm_rows import each_row, field_value
from harness.metrics.text import count_bytes, count_words
from harness.records import SplitData
from harness.tasks.base import Prepared
from harness.tasks.lm_common import LMTask, requests_key

__all__ = ["PerplexityTask"]


class PerplexityTask(LMTask):
    """Score each document's text in rolling windows; records log-likelihood, tokens, words and bytes."""

    name = "perplexity"
    request_kind = "loglikelihood_rolling"

    def prepare(self, split: SplitData, tokenizer: Any) -> Prepared:
        texts = tuple(each_row(split, lambda r: str(field_value(r, self.spec.text, where="task.text"))))
        window = {"max_length": self.spec.max_length, "stride": self.spec.stride}
        return self._prepared(split, texts, requests_key(split, tokenizer, self.request_kind, texts, window),
                              np.zeros(len(texts), np.int64), window)

    def records(self, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = prepared.requests
        return {"doc_loglik": np.asarray(outputs["loglik"], np.float64), "tokens": np.asarray(outputs["tokens"], np.float64),
                "words": np.array([count_words(t) for t in texts], np.float64),
                "bytes": np.array([count_bytes(t) for t in texts], np.float64)}
