"""Data checks that need no model: what ``harness validate`` reports about a suite's data, and the classes a
split lacks (issue 19, item 3 and item 8).

``check_suite_data`` loads every split of a suite exactly as a run would (:func:`harness.data.sources.load_splits`:
files exist and parse, the text/label/id columns and every field a language-model template, choice list or gold
answer names are present, labels fall inside ``classes``, ids are unique, no split is empty), reads every
language-model row as scoring would (:func:`harness.data.lm_rows.check_row`: its prompt renders, its choices are a
non-empty list of distinct texts, its gold answer is among them) and describes each split in one line. Any of those problems raises the same :class:`~harness.errors.DataError` or
:class:`~harness.errors.SpecError` with its field path that ``harness eval`` would raise, before a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.lm_rows import checked_rows
from harness.data.sources import load_splits_or_problems
from harness.records import SplitData
from harness.spec.schema import Suite

__all__ = ["SplitCheck", "check_suite_data", "missing_classes", "missing_class_notes", "TRAIN_NEEDED_BY"]


@dataclass(frozen=True)
class SplitCheck:
    """One loaded split as ``harness validate`` describes it.

    ``n`` rows kept; ``n_dropped`` removed by the spec, by reason in ``drop_reasons`` (``cap`` counted apart);
    ``missing`` the class names with no example (classification suites only; empty otherwise).
    """

    suite: str
    split: str
    role: str
    n: int
    n_dropped: int
    drop_reasons: dict[str, int] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    unread: str = ""  # a train split no few-shot prompt reads, that could not be read: the problem (else "")

    def line(self) -> str:
        """``suite/split (role): n rows[, k dropped (reason n, ...)][, classes without examples: a, b]``, or
        ``suite/split (train): not read (see the warning)``."""
        if self.unread:
            return f"{self.suite}/{self.split} ({self.role}): not read (see the warning)"
        text = f"{self.suite}/{self.split} ({self.role}): {self.n} rows"
        if self.n_dropped:
            why = ", ".join(f"{k} {v}" for k, v in sorted(self.drop_reasons.items()))
            text += f", {self.n_dropped} dropped ({why})"
        if self.missing:
            text += f", classes without examples: {', '.join(self.missing)}"
        return text


def missing_classes(split: SplitData) -> tuple[str, ...]:
    """Names of ``split.classes`` that no row of the split carries as its label, in class order.

    Empty for a split without classes (language-model tasks) or whose labels are not class indices.
    """
    if not split.classes or "label" not in split.frame:
        return ()
    present = set(np.asarray(split.frame["label"]).tolist())
    return tuple(name for i, name in enumerate(split.classes) if i not in present)


def missing_class_notes(suite: str, missing: Mapping[str, tuple[str, ...]], n_classes: int) -> list[str]:
    """The run notes (and ``validate`` warnings) of one suite's splits that lack some classes: one per distinct
    set of missing classes, naming its splits, so that a class no split has (a misspelt ``classes`` entry, say)
    gives one line, not one per split.

    Parameters
    ----------
    suite : str
        The suite's name.
    missing : mapping of str to tuple of str
        Split name -> the class names it has no example of (:func:`missing_classes`), for every split loaded, in
        spec order; splits lacking nothing map to ``()``.
    n_classes : int
        The suite's number of classes.

    Returns
    -------
    list of str
        Each note says that macro-averaged metrics count a missing class's F1 as 0 (scikit-learn's
        ``zero_division`` rule), which reads as a failure of the model. Where none of the splits checked (those
        in ``missing``: a run's evaluated splits, ``validate``'s every split read) has a class, the first note
        names them and asks whether that ``classes`` entry is misspelt: once for the suite.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for split, names in missing.items():
        if names:
            groups.setdefault(tuple(names), []).append(split)
    # the classes no split checked has, named once for the suite (in the first note that lacks them)
    nowhere = [c for c in next(iter(groups), ()) if all(c in m for m in missing.values())] if len(missing) > 1 else []
    notes = []
    for names, splits in groups.items():
        where = (f"split {suite}/{splits[0]}" if len(splits) == 1 else
                 f"suite {suite}, splits {', '.join(splits)}")
        hint = (f"; none of the splits checked ({', '.join(missing)}) has {', '.join(nowhere)}: if a classes entry "
                f"is misspelt, correct it to the data's label; " if nowhere and not notes else "; ")
        notes.append(f"{where}: {len(names)} of {n_classes} classes have no example ({', '.join(names)}){hint}"
                     f"macro-averaged metrics (macro_f1) score each as 0, so compare accuracy or add examples of "
                     f"those classes")
    return notes


def _check_lm_rows(suite: Suite, sd: SplitData) -> None:
    """Every row of a language-model split through :func:`harness.data.lm_rows.check_row`; a bad row's error
    names the suite, split, row and field in the words scoring uses (:func:`harness.data.lm_rows.checked_rows`).
    A train split's choices are never scored (few-shot examples and training show only the gold text), so repeated
    choice texts pass there."""
    checked_rows(suite.task, sd, scored=sd.ref.role.value != "train")


#: What reads a train split, for the warning of one that cannot be read (``harness validate``).
TRAIN_NEEDED_BY = ("`harness train` (training on this suite) and a few-shot prompt need a train split; eval and sweep "
                   "score the validation and test splits without it, but read an ID suite's train split for the "
                   "train/test overlap check: when it cannot be read they run on, record its pairs as unchecked "
                   "(summary.json overlap_unchecked) and a max_overlap gate rule fails on them")


def check_suite_data(suite: Suite, path: Path | None) -> list[SplitCheck]:
    """Load every split of ``suite`` (a validated suite read from ``path``) and describe it; no model is loaded.

    Every split is read in one pass (each file once). The validation and test splits and the few-shot split are
    read as eval reads them: any problem raises. So does a problem of a train split whose files exist (a wrong
    column, labels outside ``classes``: ``harness train`` would fail on it), together with those of the other
    splits. Only a train split whose file is missing, and that no few-shot prompt reads, is returned rather than
    raised (a :class:`SplitCheck` with ``unread`` set: eval and sweep run without it, but cannot check overlap
    with it, :data:`TRAIN_NEEDED_BY`).

    Returns
    -------
    list of SplitCheck
        One per split, in spec order (``train`` splits included, those whose file is missing with ``unread``).

    Raises
    ------
    DataError, SpecError
        As :func:`harness.data.sources.load_splits` (train splits included, but for a missing train file):
        missing or unreadable files, missing columns (text, label, id,
        or a field a template/choices/gold names, with the field path), labels outside ``classes`` (with the
        count and the first values), repeated ids, an empty split, an unresolvable ``derived_from``; and a
        :class:`~harness.errors.DataError` for the first language-model row whose prompt, choices or gold cannot
        be read (naming the split, the row's id and the spec field, e.g. ``task.gold.label``).
    """
    fewshot = getattr(getattr(getattr(suite.task, "prompt", None), "fewshot", None), "split", None)
    loaded, unread = load_splits_or_problems(suite, suite_path=path, missing_only=True)  # each file read once
    if fewshot is not None and fewshot in unread:  # the few-shot split is read by scoring: its problem is an error
        raise unread[fewshot]
    checks = [SplitCheck(suite=suite.name, split=name, role="train", n=0, n_dropped=0, unread=str(e))
              for name, e in unread.items()]
    if suite.task_name != "classification":
        for name, sd in loaded.items():
            _check_lm_rows(suite, sd)
    checks += [SplitCheck(suite=suite.name, split=name, role=sd.ref.role.value, n=len(sd), n_dropped=sd.n_dropped,
                          drop_reasons=dict(sd.drop_reasons), missing=missing_classes(sd))
               for name, sd in loaded.items()]
    order = [s.name for s in suite.splits] or list(suite.derived_from.split_names if suite.derived_from else [])
    return sorted(checks, key=lambda c: order.index(c.split) if c.split in order else -1)
