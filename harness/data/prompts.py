"""Prompts for language-model suites: Jinja2 templates rendered from a row, few-shot blocks, chat wrapping.

One rule for templates: **they are Jinja2**, exactly as lm-eval's task YAMLs (``doc_to_text: "Question:
{{question}}\\nAnswer:"``), so an lm-eval template pastes in unchanged. Placeholders are ``{{ field }}``,
attribute/item access and filters work (``{{ choices.text[0] }}``, ``{{ question | trim }}``, lm-eval's
``regex_replace`` filter). Single braces are literal text in Jinja2; a single-brace ``{field}`` placeholder is
refused by the suite schema (:mod:`harness.spec.lm`) so it cannot silently render as ``{field}``.

Templates run in :class:`jinja2.sandbox.SandboxedEnvironment` (no attribute access to Python internals) with
:class:`jinja2.StrictUndefined` (a missing field is an error naming the field) and ``keep_trailing_newline``
(as lm-eval's environment). :func:`template_fields` lists the row fields a template reads, without data, so
``harness validate`` can check templates against a split's columns.

Few-shot (:func:`fewshot_block`): lm-eval's text format, ``example_1 + ... + example_k + query`` where each
example is ``context + target_delimiter + target + fewshot_delimiter``. Unlike lm-eval, which draws new examples
for every document from one running RNG, the k examples are drawn once per (seed, pool), so every row, model and
alpha sees the same block: blends are compared on identical prompts.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import DataError, SpecError, format_error

__all__ = ["compile_template", "render", "template_fields", "sample_fewshot", "fewshot_block", "chat_wrap"]

logger = logging.getLogger(__name__)

_MISSING = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


def _regex_replace(value: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm-eval's ``regex_replace`` Jinja filter: ``re.sub(pattern, repl, value, count=count)``."""
    return re.sub(pattern, repl, value, count=count)


@functools.lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["regex_replace"] = _regex_replace
    return env


@functools.lru_cache(maxsize=256)
def compile_template(source: str) -> jinja2.Template:
    """The compiled, sandboxed template (cached by source).

    Raises
    ------
    SpecError
        On a Jinja2 syntax error, with its line.
    """
    try:
        return _env().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise SpecError(format_error("the prompt template is not valid Jinja2", where=f"line {e.lineno}",
                                     got=e.message, fix="fields are written {{ field }}")) from e


def template_fields(source: str) -> set[str]:
    """Top-level row fields the template reads (``{{ choices.text }}`` reads ``choices``).

    >>> sorted(template_fields("{{passage}}\\nQuestion: {{ question }}?\\nAnswer:"))
    ['passage', 'question']
    """
    compile_template(source)  # syntax errors as SpecError
    return set(meta.find_undeclared_variables(_env().parse(source)))


def render(source: str, row: Mapping[str, Any]) -> str:
    """Render ``source`` with the row's fields as variables.

    >>> render("Question: {{question}}\\nAnswer:", {"question": "Why?"})
    'Question: Why?\\nAnswer:'

    Raises
    ------
    DataError
        If the template reads a field (or attribute/item) the row lacks, naming it and the row's fields.
    """
    try:
        return compile_template(source).render(**row)
    except jinja2.UndefinedError as e:
        m = _MISSING.search(str(e))
        name = next((g for g in (m.groups() if m else ()) if g), str(e))
        raise DataError(format_error(f"the prompt template reads {name!r}, which this row does not have",
                                     expected=f"one of the row's fields {sorted(row)}", got=str(e),
                                     fix="rename the placeholder or add the column")) from e


def sample_fewshot(pool: Sequence[Mapping[str, Any]], k: int, seed: int,
                   exclude: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
    """``k`` rows of ``pool`` drawn without replacement by ``random.Random(seed).sample`` (``exclude`` removed
    from the pool first, as lm-eval removes the evaluated document when few-shot and test split coincide).

    Raises
    ------
    DataError
        If the pool has fewer than ``k`` rows.
    """
    rows = [r for r in pool if exclude is None or r != exclude]
    if k > len(rows):
        raise DataError(format_error("too few rows for the few-shot block", expected=f"at least k={k} rows",
                                     got=f"{len(rows)}", fix="lower fewshot.k or use a larger fewshot split"))
    return random.Random(seed).sample(rows, k) if k else []


def fewshot_block(examples: Sequence[tuple[str, str]], *, target_delimiter: str = " ",
                  fewshot_delimiter: str = "\n\n") -> str:
    """The few-shot prefix from ``(context, gold target text)`` pairs; the query is appended after it.

    >>> fewshot_block([("Q: 1+1?\\nA:", "2"), ("Q: 2+2?\\nA:", "4")]) + "Q: 3+3?\\nA:"
    'Q: 1+1?\\nA: 2\\n\\nQ: 2+2?\\nA: 4\\n\\nQ: 3+3?\\nA:'
    """
    return "".join(f"{ctx}{target_delimiter}{tgt}{fewshot_delimiter}" for ctx, tgt in examples)


def chat_wrap(tokenizer, prompt: str) -> str:
    """The prompt as one user turn of the tokenizer's own chat template, ready for the assistant's answer
    (``apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
    tokenize=False)``; lm-eval's single-turn chat format).

    Raises
    ------
    SpecError
        If the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise SpecError(format_error("chat: true needs a tokenizer with a chat template",
                                     got=f"{type(tokenizer).__name__} without chat_template",
                                     fix="set chat: false or use an instruct model's tokenizer"))
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
