"""Suite spec, language-model part: how a row becomes a prompt, its choices and its gold answer, per task kind.

Strict pydantic models (:class:`~harness.spec.schema.Strict`: unknown keys are errors, frozen) for a suite's
``task:`` block, discriminated by ``kind``: :class:`MultipleChoiceTask`, :class:`GenerationTask`,
:class:`PerplexityTask`. Field paths such as ``choices.text`` read nested values (``row["choices"]["text"]``).

Templates are Jinja2 (``{{ field }}``, lm-eval's style; :mod:`harness.data.prompts`). A single-brace ``{field}``
placeholder is refused here, because Jinja2 would print it literally. Checks that need the data (a template
naming a missing column) or the model (a window longer than its positions) happen later, with the field path
this module gives them.

The suite's ``metrics`` (top level, as for classification) name the task's metrics
(:data:`harness.spec.schema.TASK_METRICS`).

Example (lm-eval's arc_easy)::

    task:
      kind: multiple_choice
      prompt: {template: "Question: {{question}}\\nAnswer:"}
      choices: {field: choices.text}
      gold: {label: answerKey, labels: choices.label}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

import jinja2
from pydantic import Field, field_validator, model_validator

from harness.spec.base import Name, Strict

__all__ = ["FewshotSpec", "PromptSpec", "ChoicesSpec", "GoldSpec", "NormalizeSpec", "MultipleChoiceTask",
           "GenerationTask", "PerplexityTask", "LMTask", "single_brace_fields"]

_SINGLE_BRACE = re.compile(r"(?<!\{)\{\s*([A-Za-z_][\w.]*)\s*\}(?!\})")
_PATH = re.compile(r"^[A-Za-z_][\w\-]*(\.[A-Za-z_0-9][\w\-]*)*$")


def single_brace_fields(template: str) -> list[str]:
    """Names written as single-brace ``{field}`` placeholders (literal text in Jinja2).

    >>> single_brace_fields("Q: {question} {{answer}}")
    ['question']
    """
    return _SINGLE_BRACE.findall(template)


def _path(v: str) -> str:
    if not _PATH.match(v):
        raise ValueError(f"a field path is a column name, optionally followed by .key parts (choices.text); got {v!r}")
    return v


FieldPath = Annotated[str, Field(min_length=1, description="a column, or column.key for nested values")]


def _exactly_one(obj: Strict, names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if getattr(obj, n) is not None]
    if len(given) != 1:
        raise ValueError(f"{what} takes exactly one of {', '.join(names)}; got "
                         f"{', '.join(given) if given else 'none'}")


class FewshotSpec(Strict):
    """``k`` examples drawn once from ``split`` with ``seed`` (the same block for every row, model and alpha)."""

    k: int = Field(ge=1, le=64)
    seed: int = 1234
    split: Name = Field(description="a split of this suite, usually the train split")


class PromptSpec(Strict):
    """The prompt: a Jinja2 template over the row, an optional few-shot block, optional chat wrapping."""

    template: str = Field(min_length=1, description="Jinja2, fields as {{ field }}")
    target_delimiter: str = Field(default=" ", description="between the prompt and a choice or target")
    fewshot_delimiter: str = Field(default="\n\n", description="after each few-shot example")
    fewshot: FewshotSpec | None = None
    chat: bool = Field(default=False, description="wrap in the tokenizer's chat template (instruct models)")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        single = single_brace_fields(v)
        if single:
            raise ValueError(f"templates are Jinja2: write {{{{ {single[0]} }}}}, not {{{single[0]}}} "
                             f"(single braces are printed literally); found {['{' + s + '}' for s in single]}")
        try:
            jinja2.Environment().parse(v)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"the template is not valid Jinja2 (line {e.lineno}): {e.message}") from e
        return v


class ChoicesSpec(Strict):
    """Where a row's choices come from: exactly one of ``field`` (a list column), ``fields`` (one column per
    choice, in order) or ``fixed`` (the same strings for every row, e.g. ``["no", "yes"]``)."""

    field: FieldPath | None = None
    fields: list[FieldPath] | None = Field(default=None, min_length=2)
    fixed: list[str] | None = Field(default=None, min_length=2)

    @field_validator("field")
    @classmethod
    def _field(cls, v: str | None) -> str | None:
        return None if v is None else _path(v)

    @field_validator("fields", "fixed")
    @classmethod
    def _unique(cls, v: list[str] | None, info) -> list[str] | None:
        if v is not None:
            if info.field_name == "fields":
                v = [_path(f) for f in v]
            if len(set(v)) != len(v):
                raise ValueError(f"entries must be unique; got {v}")
            if any(not s.strip() for s in v):
                raise ValueError(f"entries must be non-empty; got {v}")
        return v

    @model_validator(mode="after")
    def _one(self) -> "ChoicesSpec":
        _exactly_one(self, ("field", "fields", "fixed"), "choices")
        return self


class GoldSpec(Strict):
    """The gold answer: exactly one of ``index`` (a column holding the choice's 0-based position: 0 is the first
    choice; booleans count as 0/1),
    ``label`` with ``labels`` (the position of the row's ``label`` value in its ``labels`` list, e.g. ARC's
    ``answerKey`` in ``choices.label``), or ``text`` (a column holding the answer text: one of the choices, or a
    generation task's reference)."""

    index: FieldPath | None = None
    label: FieldPath | None = None
    labels: FieldPath | None = None
    text: FieldPath | None = None

    @field_validator("index", "label", "labels", "text")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else _path(v)

    @model_validator(mode="after")
    def _one(self) -> "GoldSpec":
        _exactly_one(self, ("index", "label", "text"), "gold")
        if (self.label is None) != (self.labels is None):
            raise ValueError("gold.label needs gold.labels (the list column to find it in), and the reverse")
        return self


class NormalizeSpec(Strict):
    """lm-eval's ``exact_match`` options, applied in this order to prediction and reference, plus ``strip``."""

    regexes_to_ignore: list[str] = Field(default_factory=list)
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False
    strip: bool = Field(default=False, description="strip surrounding whitespace last (not in lm-eval)")

    @field_validator("regexes_to_ignore")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for i, rx in enumerate(v):
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"regexes_to_ignore[{i}] {rx!r} is not a valid regular expression: {e}") from e
        return v


class MultipleChoiceTask(Strict):
    """Score each choice's log-likelihood as ``target_delimiter + choice`` after the prompt (lm-eval's
    ``multiple_choice``)."""

    kind: Literal["multiple_choice"]
    prompt: PromptSpec
    choices: ChoicesSpec
    gold: GoldSpec


class GenerationTask(Strict):
    """Greedy generation up to ``max_new_tokens`` or a stop sequence, scored against ``gold.text``.

    ``answer_regex`` (optional) extracts the answer from the output before scoring, as lm-eval's ``regex``
    filter: the first match (``answer_match: last`` for the last), its first non-empty group if the pattern has
    groups, stripped; no match gives ``[invalid]``."""

    kind: Literal["generation"]
    prompt: PromptSpec
    gold: GoldSpec
    stop: list[str] = Field(default_factory=list)
    max_new_tokens: int = Field(ge=1, le=8192)
    answer_regex: str | None = None
    answer_match: Literal["first", "last"] = "first"
    normalize: NormalizeSpec = Field(default_factory=NormalizeSpec)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop sequences must be non-empty strings")
        return v

    @field_validator("answer_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"answer_regex {v!r} is not a valid regular expression: {e}") from e
        return v

    @model_validator(mode="after")
    def _gold_text(self) -> "GenerationTask":
        if self.gold.text is None:
            raise ValueError("a generation task's gold is a text column: gold: {text: COLUMN}")
        return self


class PerplexityTask(Strict):
    """Rolling log-likelihood of the ``text`` column over windows of ``max_length`` tokens (default: the model's
    length) predicting ``stride`` new tokens each after the first (default: ``max_length``, lm-eval's disjoint
    windows)."""

    kind: Literal["perplexity"]
    text: FieldPath
    max_length: int | None = Field(default=None, ge=2, description="window length in tokens")
    stride: int | None = Field(default=None, ge=1, description="tokens predicted per window after the first")

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _path(v)

    @model_validator(mode="after")
    def _window(self) -> "PerplexityTask":
        if self.stride is not None and self.max_length is not None and self.stride > self.max_length:
            raise ValueError(f"stride ({self.stride}) must be at most max_length ({self.max_length})")
        return self


#: The ``task:`` block of a language-model suite.
LMTask = Annotated[Union[MultipleChoiceTask, GenerationTask, PerplexityTask], Field(discriminator="kind")]
