"""Reading a language-model task's pieces out of a row: nested field paths, choices, gold answers, and the
columns a task reads (for ``harness validate`` without a model). Pure Python; errors are :class:`DataError`
with the row and the spec field that failed.

Rules (``harness.spec.lm``): a field path ``a.b`` reads ``row["a"]["b"]``; gold ``index`` is the choice's
position (a boolean counts as 0/1, so BoolQ's ``answer: true`` picks ``["no", "yes"][1]``); gold ``label`` is
looked up by position in the ``labels`` list (ARC: ``choices.label.index(answerKey)``, as lm-eval's arc yaml);
gold ``text`` must equal one of the choices in a multiple-choice task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.data.prompts import render, template_fields
from harness.errors import DataError, format_error
from harness.spec.lm import ChoicesSpec, GenerationTask, GoldSpec, MultipleChoiceTask, PerplexityTask

__all__ = ["field_value", "row_choices", "row_gold", "task_columns", "check_row"]

_MISSING = object()


def field_value(row: Mapping[str, Any], path: str, *, where: str = "") -> Any:
    """``row[a][b]...`` for ``path = "a.b..."``.

    >>> field_value({"choices": {"text": ["x", "y"]}}, "choices.text")
    ['x', 'y']

    Raises
    ------
    DataError
        If a part of the path is missing, naming the part, the spec field ``where`` and the available keys.
    """
    value: Any = row
    for i, part in enumerate(path.split(".")):
        got = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
        if got is _MISSING:
            keys = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise DataError(format_error(f"the row has no field {'.'.join(path.split('.')[:i + 1])!r}",
                                         where=where or None, expected=f"one of {keys}", got=path,
                                         fix="name an existing column (nested keys as column.key)"))
        value = got
    return value


def row_choices(row: Mapping[str, Any], spec: ChoicesSpec, *, where: str = "task.choices") -> list[str]:
    """The row's choice texts, in order.

    Raises
    ------
    DataError
        If the choices are missing, empty, not strings or repeated.
    """
    if spec.fixed is not None:
        return list(spec.fixed)
    if spec.field is not None:
        value = field_value(row, spec.field, where=f"{where}.field")
    else:
        value = [field_value(row, f, where=f"{where}.fields") for f in spec.fields or ()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
        raise DataError(format_error("a row's choices must be a non-empty list of non-empty strings", where=where,
                                     got=value, fix="point choices at a list column of texts"))
    return list(value)


def row_gold(row: Mapping[str, Any], gold: GoldSpec, choices: list[str] | None, *,
             where: str = "task.gold") -> int | str:
    """The gold answer: a choice index when ``choices`` is given (multiple choice), else the reference text.

    Raises
    ------
    DataError
        If the gold value is missing, not an integer / not in the label list, outside the choices, or a text
        that is not one of the choices.
    """
    if gold.text is not None:
        text = field_value(row, gold.text, where=f"{where}.text")
        if choices is None:
            return str(text)
        if text not in choices:
            raise DataError(format_error("the gold text is not one of the row's choices", where=f"{where}.text",
                                         expected=f"one of {choices}", got=text))
        return choices.index(text)
    if gold.index is not None:
        index, src = field_value(row, gold.index, where=f"{where}.index"), f"{where}.index"
        if isinstance(index, bool):
            index = int(index)
    else:
        label = field_value(row, gold.label or "", where=f"{where}.label")
        labels = field_value(row, gold.labels or "", where=f"{where}.labels")
        if not isinstance(labels, (list, tuple)) or label not in labels:
            raise DataError(format_error("the gold label is not in the label list", where=f"{where}.label",
                                         expected=f"one of {labels}", got=label))
        index, src = list(labels).index(label), f"{where}.label"
    n = len(choices) if choices is not None else None
    if not isinstance(index, int) or (n is not None and not 0 <= index < n):
        raise DataError(format_error("the gold index is not a position among the choices", where=src,
                                     expected=f"an integer in [0, {n})" if n else "an integer", got=index))
    return index


def task_columns(task: MultipleChoiceTask | GenerationTask | PerplexityTask) -> dict[str, set[str]]:
    """Top-level columns each part of the task reads, keyed by spec field path (``task.prompt.template``...),
    so ``harness validate`` can compare them with a split's columns without a model.

    >>> from harness.spec.lm import PerplexityTask
    >>> task_columns(PerplexityTask(kind="perplexity", text="passage"))
    {'task.text': {'passage'}}
    """
    def top(path: str | None) -> set[str]:
        return {path.split(".")[0]} if path else set()

    if isinstance(task, PerplexityTask):
        return {"task.text": top(task.text)}
    out = {"task.prompt.template": template_fields(task.prompt.template),
           "task.gold": set().union(*(top(getattr(task.gold, k)) for k in ("index", "label", "labels", "text")))}
    if isinstance(task, MultipleChoiceTask):
        c = task.choices
        out["task.choices"] = top(c.field) | set().union(*(top(f) for f in c.fields or ()))
    return out


def check_row(task: MultipleChoiceTask | GenerationTask | PerplexityTask, row: Mapping[str, Any]) -> None:
    """Read every part of ``row`` the task needs, as scoring would: the template's prompt, the choices (non-empty,
    distinct texts) and the gold answer among them (multiple choice), the reference (generation), the text
    (perplexity). Used by ``harness validate`` to find a bad row before any model is loaded.

    Raises
    ------
    DataError
        The first failure, naming the spec field (``task.gold.label``...), as the scoring path would.
    """
    if isinstance(task, PerplexityTask):
        field_value(row, task.text, where="task.text")
        return
    render(task.prompt.template, row)
    row_gold(row, task.gold, row_choices(row, task.choices) if isinstance(task, MultipleChoiceTask) else None)
