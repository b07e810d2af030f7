"""The harness error family.

Every user-facing failure raises a subclass of :class:`HarnessError`. Messages follow one template:
what went wrong, where, what was expected, what was received, and how to fix it. Each subclass also
subclasses the matching built-in (``ValueError``, ``OSError``...) so generic handlers keep working.

A failed gate is not an exception: it is a :class:`harness.records.Verdict` (exit code 1).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "HarnessError",
    "SpecError",
    "DataError",
    "DataFileMissing",
    "DataProblems",
    "LabelsOutsideClasses",
    "CacheError",
    "ModelError",
    "BlendError",
    "MetricError",
    "StoreError",
    "OutputError",
    "format_error",
    "problem_lines",
    "unknown_name",
    "edit_distance",
    "likely_typo",
    "did_you_mean",
]


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose (CLI exit code 2)."""

    exit_code = 2


class SpecError(HarnessError, ValueError):
    """A suite, policy, training or run YAML file (or an equivalent flag) is invalid."""


class DataError(HarnessError, ValueError):
    """A dataset cannot be loaded, or its rows do not match the suite spec."""


class DataFileMissing(DataError):
    """A local data file a suite names does not exist (``harness validate`` warns, rather than fails, when only a
    train split's file is missing: eval and sweep score without it)."""


class DataProblems(DataError):
    """Several data problems found together (of one split or suite), raised as one error whose message lists
    each, so that a user fixes them all in one round; ``problems`` holds each :class:`DataError`."""

    def __init__(self, message: str, problems: Iterable[DataError] = ()) -> None:
        super().__init__(message)  # args == (message,): pickles and unpickles as (cls(message), __dict__)
        self.problems = list(problems)


class LabelsOutsideClasses(DataError):
    """Rows of one or more splits of one file whose label is outside the suite's classes
    (:mod:`harness.data.labels` builds the message and merges those of several splits).

    Attributes: ``suite`` (name), ``where`` (the file), ``counts`` (split name -> rows, in spec order), ``ids``
    (in split order), ``values`` (the raw labels seen, sorted, as keys) and ``unseen`` (the classes no row of
    those splits carries).
    """

    def __init__(self, message: str, *, suite: str = "", where: str = "", counts: dict[str, int] | None = None,
                 ids: Iterable = (), values: Iterable[str] = (), unseen: Iterable[str] = ()) -> None:
        super().__init__(message)  # args == (message,): pickles and unpickles as (cls(message), __dict__)
        self.suite, self.where, self.counts = suite, where, dict(counts or {})
        self.ids, self.values, self.unseen = list(ids), list(values), list(unseen)


class CacheError(HarnessError, RuntimeError):
    """A cache entry does not match its key or is corrupt."""


class ModelError(HarnessError, ValueError):
    """A model or adapter cannot be loaded, or is incompatible with the suite."""


class BlendError(HarnessError, ValueError):
    """Base and adapted weights cannot be interpolated (keys, shapes, dtypes, non-finite values)."""


class MetricError(HarnessError, ValueError):
    """A metric is unknown or cannot be computed from the given predictions."""


class StoreError(HarnessError, RuntimeError):
    """The results store cannot be opened or written."""


class OutputError(HarnessError, OSError):
    """An output file or directory cannot be written (read-only, full, or already holding a file)."""


def format_error(what: str, *, where: str | None = None, expected: str | None = None,
                 got: object = None, fix: str | None = None) -> str:
    """Build an error message from the house template.

    Parameters
    ----------
    what : str
        One sentence naming the problem.
    where : str, default=None
        The file, field path, tensor name or row the problem was found in.
    expected, got : default=None
        What was expected and what was received (``got`` is ``repr``-ed when not a string).
    fix : str, default=None
        How to fix it.

    Returns
    -------
    str
        The message, one clause per line after the first.
    """
    parts = [what.rstrip(".") + "."]
    if where:
        parts.append(f"  where: {where}")
    if expected is not None:
        parts.append(f"  expected: {expected}")
    if got is not None:
        parts.append(f"  got: {got if isinstance(got, str) else repr(got)}".replace("got: \n", "got:\n", 1))
    if fix:
        parts.append(f"  fix: {fix}")
    return "\n".join(parts)


def problem_lines(problems: Iterable[str]) -> str:
    """Several problems for :func:`format_error`'s ``got``: one alone as it is, more one per line, each after
    ``- `` (CI trial: eleven problems on one ``;``-joined line were hard to read)."""
    problems = list(problems)
    if len(problems) == 1:
        return problems[0]
    return "".join(f"\n    - {p}" for p in problems)


def unknown_name(kind: str, name: str, available: Iterable[str]) -> str:
    """Message for an unknown registry name, with near matches ("did you mean") and the full list."""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return format_error(f"unknown {kind} {name!r}", expected=f"one of {', '.join(names)}",
                        got=name, fix=f"{hint}use one of the available names")


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance between two strings: insertions, deletions, substitutions and swaps of
    two adjacent characters, each costing 1 (Damerau 1964, the four errors behind most typing mistakes).

    Parameters
    ----------
    a, b : str
        The two strings, compared character by character as given (case counts).

    Returns
    -------
    int
        ``0`` for equal strings, at most ``max(len(a), len(b))``.
    """
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def likely_typo(name: str, candidates: Iterable[str], *, families: bool = True) -> str | None:
    """The candidate ``name`` is most likely a mistyping of, or ``None``: the nearest by :func:`edit_distance`
    (case ignored) among those within 1 edit for names of up to 7 characters, 2 up to 15 and 3 beyond. Unlike
    ``difflib``'s similarity ratio, a long shared prefix does not make two names close: ``vader-amazon`` is no typo
    of ``vader-movies`` (6 edits), ``vader-twets`` is one of ``vader-tweets`` (1). Names of one family are not
    typos of each other either: those that differ only in digits (``wmt16``/``wmt14``, ``tweets-v2``/``tweets-v1``)
    or in one short part of at most 2 characters between separators (``arc-e``/``arc-c``, ``mnli-m``/``mnli-mm``).

    Parameters
    ----------
    name : str
        The name that matched nothing.
    candidates : iterable of str
        The names it may have meant (ties go to the first given).
    families : bool, default=True
        Exempt names of one family (above); ``False`` for a fixed vocabulary, where ``macro_fi`` is a mistyping
        of ``macro_f1`` and no family is meant.

    Returns
    -------
    str or None
    """
    limit = min(3, 1 + len(name) // 8)
    best, best_d = None, limit + 1
    for c in candidates:
        if c == name or (families and _siblings(name.lower(), c.lower())):
            continue
        d = edit_distance(name.lower(), c.lower())
        if d < best_d:
            best, best_d = c, d
    return best


def _siblings(a: str, b: str) -> bool:
    """Whether two different lower-case names look like members of one family rather than a typo."""
    if a != b and re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b):
        return True
    pa, pb = re.split(r"[-_./ ]+", a), re.split(r"[-_./ ]+", b)
    if len(pa) != len(pb):
        return False
    differ = [(x, y) for x, y in zip(pa, pb) if x != y]
    return len(differ) == 1 and max(len(differ[0][0]), len(differ[0][1])) <= 2


def did_you_mean(name: str, candidates: Iterable[str], *, families: bool = True) -> str:
    """`` (did you mean 'x'?)`` for the candidate :func:`likely_typo` finds, else ``""``: the hint a message about an
    unknown name carries (metric names: ``families=False``)."""
    meant = likely_typo(name, candidates, families=families)
    return f" (did you mean {meant!r}?)" if meant else ""
