"""Labels to class indices, and the label problems of a suite's splits as the user reads them.

One rule maps a raw label to a class index for every file format (:func:`label_indices`). A label that cannot be
mapped is a :class:`~harness.errors.LabelsOutsideClasses` problem of its split; the problems of several splits of one file are
merged by :func:`merge_outside` into one message that names the splits, since a misspelt ``classes`` entry gives
the same problem in every split (issue 19: one message per split repeated the same text three times).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.data.readers import as_key, first_values
from harness.errors import DataError, LabelsOutsideClasses, format_error
from harness.spec.schema import Suite

__all__ = ["integer_class_names", "label_indices", "empty_label_error", "outside_classes", "label_errors",
           "merge_outside"]

_INT = re.compile(r"[+-]?\d+")


def integer_class_names(classes: Sequence[str]) -> bool:
    """Whether any class name reads as an integer (``"1"``): integer labels then name classes, never index them."""
    return any(_INT.fullmatch(str(c).strip()) for c in classes)


def label_indices(raw: Sequence[Any], suite: Suite) -> tuple[np.ndarray, list[int]]:
    """Class index of each raw label (int64, -1 where it cannot be mapped) and the positions of the bad ones.

    One rule for every file format (a JSON ``1``, a CSV ``"1"`` and a parquet ``1.0`` are the same value): the
    ``label_map`` first; else a value equal to a class name is that class; else an integer is a 0-based index into
    ``classes``, but only when no class name reads as an integer (classes ``"1","2","3"``: an integer label is a
    class name or an error asking for a ``label_map``, never an index).
    """
    index = {c: i for i, c in enumerate(suite.classes)}
    lmap = {as_key(k): v for k, v in suite.label_map.items()} if suite.label_map is not None else None
    indices_allowed = not integer_class_names(suite.classes)
    memo: dict[tuple[str, str | None], int] = {}

    def one(v: Any) -> int:
        key = as_key(v)
        if key is None:
            return -1
        if lmap is not None:  # label_map first; an exact class name passes through
            return index[lmap[key]] if key in lmap else index.get(key, -1)
        if key in index and not isinstance(v, (bool, np.bool_)):
            return index[key]
        if indices_allowed and _INT.fullmatch(key) and not isinstance(v, (bool, np.bool_)):
            n = int(key)  # an integer (JSON number or CSV digits alike) indexes classes
            return n if 0 <= n < len(index) else -1
        return -1

    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        k = (type(v).__name__, as_key(v))
        if k not in memo:
            memo[k] = one(v)
        out[i] = memo[k]
    return out, np.flatnonzero(out < 0).tolist()


def empty_label_error(suite: Suite, split: str, ids: list, where: str) -> DataError:
    """The problem of rows whose label is empty (a ``label_map`` cannot help them)."""
    return DataError(format_error(
        f"{len(ids)} row(s) of split {split!r} have an empty label", where=f"suite {suite.name!r}, column "
        f"{suite.label!r} of {where}; ids {first_values(ids)}", expected=f"a class name {list(suite.classes)}",
        got="an empty or null value", fix="fill in the label of those rows, or remove them from the file (an "
        "empty label cannot be mapped: label_map does not help)"))


def _misspelling_hint(suite: Suite, values: list[str], unseen: list[str], one_split: bool) -> str:
    """A hint that a ``classes`` entry may be misspelled: an unknown value close to a class name, or a class no
    row carries (``unseen``, in class order); empty when neither holds."""
    pairs = [(v, m[0]) for v in values for m in [difflib.get_close_matches(v, suite.classes, n=1, cutoff=0.6)] if m]
    in_classes = [(v, c) for v, c in pairs if c in unseen]  # the class no row carries: its entry is the suspect
    in_data = [(v, c) for v, c in pairs if c not in unseen]  # other rows carry the class: these rows are
    hints = []
    if in_classes:
        named = "; ".join(f"the data has {v!r}, the classes {c!r}, which no row carries" for v, c in in_classes[:5])
        hints.append(f"a classes entry may be misspelled ({named}): correct classes in the suite")
    if in_data:
        named = "; ".join(f"{v!r} is close to the class {c!r}, which other rows carry" for v, c in in_data[:5])
        hints.append(f"the data may be misspelled ({named}): fix those rows, or map the value with label_map "
                     "(e.g. {" + ", ".join(f"{v!r}: {c!r}" for v, c in in_data[:3]) + "})")
    if hints:
        return "; ".join(hints) + "; else "
    if unseen and values:
        return (f"a classes entry may be misspelled: no row of {'this split' if one_split else 'these splits'} has "
                f"the class(es) {unseen}, while the data has {values[:5]} which no class names; correct classes, "
                f"or ")
    return ""


def outside_classes(suite: Suite, where: str, counts: dict[str, int], ids: list, values: list[str],
                    unseen: list[str]) -> LabelsOutsideClasses:
    """The :class:`~harness.errors.LabelsOutsideClasses` of rows of one or more splits (``counts``: split name ->
    rows, in spec order) of one file (``where``) whose label is outside the classes: ``ids`` (in split order), the
    raw ``values`` seen (sorted, as keys) and the classes no row of those splits carries (``unseen``)."""
    n = sum(counts.values())
    splits = (f"split {next(iter(counts))!r}" if len(counts) == 1 else
              "splits " + ", ".join(f"{s!r} ({k})" for s, k in counts.items()))
    how = (f"{'extend' if suite.label_map else 'add'} label_map with an entry for each value shown (raw value "
           f"-> one of {list(suite.classes)}), or leave those rows out with the split's where")
    if suite.label_map:
        expected = f"a key of label_map {sorted(map(str, suite.label_map))} or a class name"
    elif integer_class_names(suite.classes):  # ambiguous: an integer could be a name or an index
        expected = (f"a class name {list(suite.classes)}: the class names read as integers, so integer labels "
                    "are read as class names, never as 0-based indices")
        how = ("if the labels are 0-based indices (or any other coding), map them explicitly with label_map, "
               "e.g. {" + ", ".join(f"{i}: {c!r}" for i, c in enumerate(suite.classes)) + "}")
    else:
        expected = f"a class name {list(suite.classes)} or an integer index in [0, {len(suite.classes) - 1}]"
    shown = [repr(v) for v in values]
    hint = _misspelling_hint(suite, values, unseen, len(counts) == 1)
    message = format_error(
        f"{n} row(s) of {splits} have a label outside the classes",
        where=f"suite {suite.name!r}, column {suite.label!r} of {where}; ids {first_values(ids)}",
        expected=expected, got=f"values {', '.join(shown[:10])}" + (" ..." if len(shown) > 10 else ""),
        fix=hint + how)
    return LabelsOutsideClasses(message, suite=suite.name, where=where, counts=counts, ids=ids, values=values,
                                unseen=unseen)


def label_errors(suite: Suite, split: str, raw: list, ids: list, labels: np.ndarray, bad: list[int],
                 where: str) -> list[DataError]:
    """The label problems of one split: rows with an empty label, and rows whose label is outside the classes
    (``raw`` labels and ``ids`` of the split's rows, ``labels`` their indices, -1 at the ``bad`` positions)."""
    empty = [i for i in bad if as_key(raw[i]) in (None, "")]
    out: list[DataError] = [empty_label_error(suite, split, [ids[i] for i in empty], where)] if empty else []
    bad = [i for i in bad if as_key(raw[i]) not in (None, "")]
    if bad:
        unseen = [c for i, c in enumerate(suite.classes) if not (labels == i).any()]
        out.append(outside_classes(suite, where, {split: len(bad)}, [ids[i] for i in bad],
                                   sorted({as_key(raw[i]) for i in bad}), unseen))
    return out


def merge_outside(problems: Sequence[DataError], suite: Suite) -> list[DataError]:
    """``problems`` (of ``suite``'s splits) with every :class:`~harness.errors.LabelsOutsideClasses` of one file
    merged into one (at the place of the first): its splits, ids and values joined, and as unseen the classes no
    row of any of them carries."""
    slots: list[DataError | tuple[str, str]] = []
    merged: dict[tuple[str, str], LabelsOutsideClasses] = {}
    for p in problems:
        if not isinstance(p, LabelsOutsideClasses):
            slots.append(p)
            continue
        key = (p.suite, p.where)
        m = merged.get(key)
        if m is None:
            slots.append(key)
            merged[key] = p
            continue
        merged[key] = outside_classes(suite, m.where, {**m.counts, **p.counts}, m.ids + p.ids,
                                      sorted(set(m.values) | set(p.values)), [c for c in m.unseen if c in p.unseen])
    return [merged[s] if isinstance(s, tuple) else s for s in slots]
