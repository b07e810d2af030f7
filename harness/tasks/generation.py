"""Greedy generation scored against a reference (lm-eval ``output_type: generate_until``).

Each row becomes one ``generate_until`` request: the prompt, the suite's ``stop`` sequences and
``max_new_tokens``. Records: ``output`` (str (n,), the generated text, cut at the first stop sequence),
``answer`` (str (n,), what was scored: the ``answer_regex`` extraction, else the output), ``reference`` (str (n,),
the gold text it was scored against) and one float64 (n,) column per match metric of the suite (``exact_match``
and ``contains`` after the suite's ``normalize`` options, ``numeric_match`` on the final numbers, token ``f1``), as
:mod:`harness.metrics.text` defines them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.data.lm_rows import each_row, field_value, row_gold
from harness.metrics.lm import GENERATION_METRICS
from harness.metrics.text import contains, exact_match, extract_answer, numeric_match, token_f1
from harness.records import SplitData
from harness.tasks.base import Prepared
from harness.tasks.lm_common import LMTask, PromptBuilder, requests_key

__all__ = ["GenerationTask"]


class GenerationTask(LMTask):
    """Continue each prompt greedily; records the output, the scored answer and one column per match metric."""

    name = "generation"
    request_kind = "generate_until"
    row_info = ("gold",)

    def prepare(self, split: SplitData, tokenizer: Any) -> Prepared:
        spec = self.spec
        build = PromptBuilder(spec.prompt, self.fewshot_pool,
                              lambda r: str(field_value(r, spec.gold.text, where="task.gold.text")), tokenizer)
        read = each_row(split, lambda r: (build(r), str(row_gold(r, spec.gold, None))))  # errors name the row
        prompts, golds = tuple(p for p, _ in read), tuple(g for _, g in read)
        gen = {"stop": list(spec.stop), "max_new_tokens": spec.max_new_tokens}
        return self._prepared(split, prompts, requests_key(split, tokenizer, self.request_kind, prompts, gen),
                              np.zeros(len(read), np.int64), {"gold": golds, **gen})

    def _answer(self, text: str) -> str:
        spec = self.spec
        return extract_answer(text, spec.answer_regex, match=spec.answer_match) if spec.answer_regex else text

    def stored(self, prepared: Prepared, records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A stored entry from before the ``reference`` column (2026-12-01) gets it from ``prepared``'s gold."""
        return records if "reference" in records else {**records, "reference": _references(prepared)}

    def records(self, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        norm = self.spec.normalize.model_dump()
        texts = [str(t) for t in outputs["output"]]
        answers = [self._answer(t) for t in texts]
        gold = prepared.info["gold"]
        score = {"exact_match": lambda a, g: exact_match(a, g, **norm), "contains": lambda a, g: contains(a, g, **norm),
                 "numeric_match": numeric_match, "f1": token_f1}
        out: dict[str, np.ndarray] = {"output": np.array(texts, dtype=str), "answer": np.array(answers, dtype=str),
                                      "reference": _references(prepared)}
        for name in GENERATION_METRICS:
            if name in self.metrics:
                out[name] = np.array([score[name](a, g) for a, g in zip(answers, gold)], dtype=np.float64)
        return out


def _references(prepared: Prepared) -> np.ndarray:
    """The gold text of each row of ``prepared`` (str (n,)): the ``reference`` column of the records."""
    return np.array([str(g) for g in prepared.info["gold"]], dtype=str)
