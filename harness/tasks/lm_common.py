"""What the language-model tasks share: the row dicts of a split, the prompt (few-shot block, template, chat
wrapping) and the cache key of a split's requests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.data.lm_rows import row_choices, row_gold
from harness.data.prompts import chat_wrap, fewshot_block, render, sample_fewshot
from harness.io import sha256_json
from harness.records import SplitData
from harness.spec.lm import PromptSpec
from harness.tasks.base import Prepared, Task
from harness.tokcache import tokenizer_fingerprint

__all__ = ["split_rows", "PromptBuilder", "mc_target", "requests_key", "LMTask"]


def split_rows(split: SplitData) -> list[dict[str, Any]]:
    """The rows of a language-model split as dicts (its ``row`` column holds each row's JSON)."""
    return [json.loads(r) for r in split.frame["row"].tolist()]


class PromptBuilder:
    """Builds the prompt of a row: the few-shot block (drawn once: the same k examples for every row, model and
    alpha), then the rendered template, wrapped in the tokenizer's chat template when ``chat`` is set.

    Parameters
    ----------
    prompt : PromptSpec
        The suite's ``task.prompt``.
    pool : sequence of dict, or None
        The rows of the few-shot split (``prompt.fewshot.split``); ``None`` without few-shot.
    target_of : callable
        ``target_of(row) -> str``: a few-shot example's gold target text.
    tokenizer : transformers tokenizer
        For ``chat: true``.
    """

    def __init__(self, prompt: PromptSpec, pool: Sequence[Mapping[str, Any]] | None, target_of, tokenizer) -> None:
        self.prompt, self.tokenizer = prompt, tokenizer
        self.prefix = ""
        fs = prompt.fewshot
        if fs is not None:
            shots = sample_fewshot(list(pool or ()), fs.k, fs.seed)
            self.prefix = fewshot_block([(render(prompt.template, r), target_of(r)) for r in shots],
                                        target_delimiter=prompt.target_delimiter,
                                        fewshot_delimiter=prompt.fewshot_delimiter)

    def __call__(self, row: Mapping[str, Any]) -> str:
        text = self.prefix + render(self.prompt.template, row)
        return chat_wrap(self.tokenizer, text) if self.prompt.chat else text


def mc_target(task, row: Mapping[str, Any]) -> str:
    """A multiple-choice row's gold choice text (a few-shot example's target)."""
    choices = row_choices(row, task.choices, distinct=False)  # never scored: only its gold text is shown
    return choices[row_gold(row, task.gold, choices)]


def requests_key(split: SplitData, tokenizer, kind: str, requests: Any, extra: Any = None) -> str:
    """sha256 of everything that makes a split's requests: the split's fingerprint, the tokenizer, the request
    kind, the requests themselves and ``extra`` (generation settings...)."""
    return sha256_json({"split": split.ref.fingerprint, "tokenizer": tokenizer_fingerprint(tokenizer), "kind": kind,
                        "requests": requests, "extra": extra})


class LMTask(Task):
    """What the language-model tasks share: the suite's task block (``spec``), the few-shot pool, and how a
    prepared split is recorded."""

    def __init__(self, suite, fewshot_pool: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(suite)
        self.spec = suite.task
        self.fewshot_pool = fewshot_pool

    def _prepared(self, split: SplitData, requests: tuple, key: str, labels: np.ndarray, info: Mapping[str, Any]
                  ) -> Prepared:
        return Prepared(ref=split.ref, kind=self.request_kind, requests=requests, cache_key=key,
                        example_ids=split.frame["example_id"].to_numpy(str),
                        source_ids=split.frame["source_id"].to_numpy(str), labels=labels,
                        n_dropped=split.n_dropped, info=info)
