"""Reading a language-model task's pieces out of a row: nested field paths, choices, gold answers, and the
columns a task reads (for ``harness validate`` without a model). Pure Python; errors are :class:`DataError`
with the row and the spec field that failed.

Rules (``harness.spec.lm``): a field path ``a.b`` reads ``row["a"]["b"]``; gold ``index`` is the choice's
position (a boolean counts as 0/1, so BoolQ's ``answer: true`` picks ``["no", "yes"][1]``); gold ``label`` is
looked up by position in the ``labels`` list (ARC: ``choices.label.index(answerKey)``, as lm-eval's arc yaml);
gold ``text`` must equal one of the choices in a multiple-choice task.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from harness.data.prompts import render, template_fields
from harness.errors import DataError, format_error
from harness.records import SplitData
from harness.spec.lm import ChoicesSpec, GenerationTask, GoldSpec, MultipleChoiceTask, PerplexityTask

__all__ = ["field_value", "row_choices", "row_gold", "task_columns", "check_row", "each_row", "row_error",
           "checked_rows"]

_MISSING = object()
T = TypeVar("T")
ROW_FIX = "correct or remove that row in the data file"


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


def row_choices(row: Mapping[str, Any], spec: ChoicesSpec, *, where: str = "task.choices",
                distinct: bool = True) -> list[str]:
    """The row's choice texts, in order.

    ``distinct=False`` accepts repeated texts: a few-shot example's choices are never scored, only its gold
    choice's text is shown.

    Raises
    ------
    DataError
        If the choices are missing, empty, not strings, or (``distinct``) repeated.
    """
    if spec.fixed is not None:
        return list(spec.fixed)
    if spec.field is not None:
        value, src = field_value(row, spec.field, where=f"{where}.field"), f"{where}.field = {spec.field!r}"
    else:
        value = [field_value(row, f, where=f"{where}.fields") for f in spec.fields or ()]
        src = f"{where}.fields = {list(spec.fields or ())!r}"
    if isinstance(value, str) and value.lstrip().startswith("["):  # a CSV cell that looks like a list
        raise DataError(format_error(
            "a row's choices field holds text that looks like a list, not a list", where=src,
            got=f"the string {value[:120]!r}",
            fix=f"a CSV cell holds one text: give each choice its own column ({where}.fields: [a, b, c, d]), or "
                "store the rows as JSONL, where a list is a list"))
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
        raise DataError(format_error("a row's choices must be a non-empty list of non-empty strings", where=src,
                                     got=value, fix=f"point {where} at a list column of texts, or {ROW_FIX}"))
    repeated = sorted({c for c in value if value.count(c) > 1}) if distinct else []
    if repeated:  # equal texts get equal log-likelihoods: the tie, not the model, would decide the row
        raise DataError(format_error("a row's choices repeat a text", where=src,
                                     got=f"{list(value)!r} ({', '.join(map(repr, repeated))} more than once)",
                                     fix=f"make the row's choices distinct (equal choices score alike, so the first "
                                         f"one would always be picked), or {ROW_FIX}"))
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
            raise DataError(format_error("the gold text is not one of the row's choices",
                                         where=f"{where}.text = {gold.text!r}",
                                         expected=f"one of {choices}", got=text,
                                         fix=_gold_text_fix(text, gold.text, choices)))
        return choices.index(text)
    if gold.index is not None:
        index, src = field_value(row, gold.index, where=f"{where}.index"), f"{where}.index = {gold.index!r}"
        if isinstance(index, (bool, numbers.Integral)):
            index = int(index)
        elif isinstance(index, str) and index.strip().isdigit():  # a CSV cell holds text: "3" is position 3
            index = int(index.strip())
        elif isinstance(index, str) and index.strip().lower() in ("true", "false"):  # and a boolean is text too
            index = int(index.strip().lower() == "true")
        elif isinstance(index, numbers.Real) and math.isfinite(index) and float(index).is_integer():
            index = int(index)  # a column with a missing cell reads as floats (3.0), as classification labels do
        elif isinstance(index, str) and _integral_text(index.strip()):
            index = int(float(index.strip()))  # "3.0" in a CSV written from such a column
    else:
        label = field_value(row, gold.label or "", where=f"{where}.label")
        labels = field_value(row, gold.labels or "", where=f"{where}.labels")
        if not isinstance(labels, (list, tuple)) or label not in labels:
            raise DataError(format_error("the gold label is not in the label list",
                                         where=f"{where}.label = {gold.label!r}",
                                         expected=f"one of {labels}", got=label, fix=ROW_FIX))
        index, src = list(labels).index(label), f"{where}.label = {gold.label!r}"
    n = len(choices) if choices is not None else None
    if not isinstance(index, int) or (n is not None and not 0 <= index < n):
        raise DataError(format_error("the gold index is not a position among the choices", where=src,
                                     expected=f"an integer in [0, {n})" if n else "an integer",
                                     got=repr(index) if isinstance(index, str) else index,
                                     fix="gold.index counts the choices from 0 (use gold.label with gold.labels for "
                                         f"answer keys such as 'A'); {ROW_FIX}"))
    return index


def _gold_text_fix(value: Any, column: str, choices: list[str]) -> str:
    """The fix for a gold text outside the choices: a boolean (``True``, or ``"false"`` from a CSV cell) is a
    column of answers, not texts, so every row fails alike and the fix is ``gold: {index: COLUMN}`` (a boolean
    counts as 0/1), not correcting the row (new-user trial: BoolQ's ``answer`` with ``gold: {text: answer}``)."""
    if not (isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))):
        return ROW_FIX
    order = (f"false picks {choices[0]!r} and true {choices[1]!r}" if len(choices) == 2
             else "false picks the first choice and true the second")
    return (f"the column {column!r} holds booleans, not choice texts: use gold: {{index: {column}}} instead of "
            f"gold: {{text: {column}}} (a boolean counts as 0/1: {order}; swap the choices if that is backwards)")


def _integral_text(text: str) -> bool:
    """Whether ``text`` is a whole number written as a float (``"3.0"``), not ``"3.5"``, ``"nan"`` or ``"1e400"``."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value.is_integer() and "." in text


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


def check_row(task: MultipleChoiceTask | GenerationTask | PerplexityTask, row: Mapping[str, Any], *,
              distinct: bool = True) -> None:
    """Read every part of ``row`` the task needs, as scoring would: the template's prompt, the choices (non-empty,
    distinct texts) and the gold answer among them (multiple choice), the reference (generation), the text
    (perplexity). Used by ``harness validate`` to find a bad row before any model is loaded. ``distinct=False``
    (a few-shot pool, whose choices are never scored) accepts repeated choice texts.

    Raises
    ------
    DataError
        The first failure, naming the spec field (``task.gold.label``...), as the scoring path would.
    """
    if isinstance(task, PerplexityTask):
        field_value(row, task.text, where="task.text")
        return
    render(task.prompt.template, row)
    row_gold(row, task.gold, row_choices(row, task.choices, distinct=distinct)
             if isinstance(task, MultipleChoiceTask) else None)


def row_error(err: DataError, suite: str, split: str, row_id: object, index: int) -> DataError:
    """``err`` (a problem found in one row, naming the spec field) with the row's place put in front.

    The message reads ``suite 'arc', split 'test', row 'q3' (row 3 of the split, from 0) cannot be scored: the
    gold index is not a position among the choices.`` followed by ``err``'s ``where:`` (the spec field),
    ``expected:``, ``got:`` and ``fix:`` lines; a ``fix:`` line is added when ``err`` has none. ``harness
    validate`` and scoring (``eval``/``sweep``/``train``) raise the same text for the same row.
    """
    first, *rest = str(err).split("\n")
    if not any(line.lstrip().startswith("fix:") for line in rest):
        rest.append(f"  fix: {ROW_FIX}")
    return DataError("\n".join([f"suite {suite!r}, split {split!r}, row {str(row_id)!r} (row {index} of the split, "
                                f"from 0) cannot be scored: {first}", *rest]))


def each_row(split: SplitData, read: Callable[[dict[str, Any]], T]) -> list[T]:
    """``read(row)`` for every row of a language-model split, in the split's order.

    Parameters
    ----------
    split : SplitData
        A language-model split (its frame has ``example_id`` and ``row``, the row's JSON).
    read : callable
        ``read(row: dict) -> T``; raises :class:`~harness.errors.DataError` for a row it cannot read.

    Returns
    -------
    list
        One ``read(row)`` per row.

    Raises
    ------
    DataError
        For the first row ``read`` fails on, as :func:`row_error` words it: suite, split, row id and position, the
        spec field, what was found and how to fix it.
    """
    out = []
    for i, (eid, raw) in enumerate(zip(split.frame["example_id"].tolist(), split.frame["row"].tolist())):
        try:
            out.append(read(json.loads(raw)))
        except DataError as e:
            raise row_error(e, split.ref.suite, split.ref.split, eid, i) from e
    return out


def checked_rows(task: MultipleChoiceTask | GenerationTask | PerplexityTask, split: SplitData, *,
                 scored: bool = True) -> list[dict[str, Any]]:
    """The rows of a language-model split as dicts, each read as scoring would (:func:`check_row`);
    ``scored=False`` for a few-shot pool (repeated choice texts accepted: they are never scored).

    Raises
    ------
    DataError
        For the first row that cannot be scored, worded by :func:`row_error` (``harness validate`` and the
        few-shot pool of ``eval``/``sweep`` use this).
    """
    def read(row: dict[str, Any]) -> dict[str, Any]:
        check_row(task, row, distinct=scored)
        return row

    return each_row(split, read)
