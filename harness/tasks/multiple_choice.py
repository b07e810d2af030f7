"""Multiple choice by log-likelihood (lm-eval ``output_type: multiple_choice``).

Each row becomes one ``loglikelihood`` request per choice: ``(prompt, target_delimiter + choice)``; the runner
returns each continuation's summed log-probability. Records (float64, shape (n, K) with K the most choices of
any row; NaN / 0 past a row's last choice): ``loglik``, ``is_greedy`` (1.0 when the choice is the greedy
continuation), ``choice_len`` (characters, lm-eval's ``acc_norm``) and ``choice_bytes`` (UTF-8 bytes,
``acc_bytes``). ``labels`` is the gold choice index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from harness.data.lm_rows import each_row, row_choices, row_gold
from harness.records import SplitData
from harness.tasks.base import Prepared
from harness.tasks.lm_common import LMTask, PromptBuilder, mc_target, requests_key

__all__ = ["MultipleChoiceTask"]


class MultipleChoiceTask(LMTask):
    """Score every choice as a continuation of the prompt; records per-choice log-likelihoods."""

    name = "multiple_choice"
    request_kind = "loglikelihood"
    row_info = ("choices",)

    def prepare(self, split: SplitData, tokenizer: Any) -> Prepared:
        spec = self.spec
        build = PromptBuilder(spec.prompt, self.fewshot_pool, lambda r: mc_target(spec, r), tokenizer)

        def read(row: dict) -> tuple[list[str], int, str]:
            cs = row_choices(row, spec.choices)
            return cs, row_gold(row, spec.gold, cs), build(row)

        requests, choices, golds = [], [], []
        for cs, gold, ctx in each_row(split, read):  # a bad row's error names suite, split, row and field
            golds.append(gold)
            requests += [(ctx, spec.prompt.target_delimiter + c) for c in cs]
            choices.append(cs)
        key = requests_key(split, tokenizer, self.request_kind, requests)
        return self._prepared(split, tuple(requests), key, np.asarray(golds, np.int64),
                              {"choices": tuple(map(tuple, choices))})

    def records(self, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        choices = prepared.info["choices"]
        # a row subset keeps the whole split's width, so its records merge into those of the split
        n, k = len(choices), prepared.info.get("width") or max(len(c) for c in choices)
        out = {"loglik": np.full((n, k), np.nan), "is_greedy": np.full((n, k), np.nan),
               "choice_len": np.zeros((n, k)), "choice_bytes": np.zeros((n, k))}
        ll, greedy = np.asarray(outputs["loglik"], np.float64), np.asarray(outputs["is_greedy"], np.float64)
        start = 0
        for i, cs in enumerate(choices):
            m = len(cs)
            out["loglik"][i, :m] = ll[start:start + m]
            out["is_greedy"][i, :m] = greedy[start:start + m]
            out["choice_len"][i, :m] = [float(len(c)) for c in cs]
            out["choice_bytes"][i, :m] = [float(len(c.encode("utf-8"))) for c in cs]
            start += m
        return out

    def request_spans(self, prepared: Prepared) -> np.ndarray:
        """One request per choice: row ``i``'s requests follow those of the rows before it."""
        return np.concatenate([[0], np.cumsum([len(c) for c in prepared.info["choices"]])]).astype(np.int64)

    def subset(self, prepared: Prepared, index: np.ndarray) -> Prepared:
        """The rows ``index`` (see :meth:`Task.subset`), with the split's number of columns (``width``)."""
        sub = super().subset(prepared, index)
        width = prepared.info.get("width") or max(len(c) for c in prepared.info["choices"])
        return replace(sub, info={**sub.info, "width": width})
