"""Train/test overlap (contamination) between the splits of a run (issue 17, item 8).

Pairs checked, each as (reference split ``a``, evaluated split ``b``):

* every ``train`` split of an ID suite vs every evaluation split of the run (its own suite's validation/test,
  every shift suite's splits);
* the ``validation`` vs the ``test`` splits of the same suite.

Two counts per pair, of rows of ``b``: ``by_text``, whose normalised text (Unicode NFKC, case-folded, every run
of non-word characters one space, trimmed; ``text`` and ``text_pair`` joined) occurs in ``a``; ``by_id``, whose
``example_id`` occurs in ``a``: only for splits of the same suite that read the same files or have an
``id_column`` (:func:`ids_comparable`), because ids of different sources (row numbers by default) say nothing
about their rows. An ID train split that could not be read gives its pairs as unchecked
(:func:`unchecked_pairs`), never as pairs without overlap. Pure functions over :class:`~harness.records.SplitData`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Mapping

from harness.records import SplitData
from harness.summary import OverlapEntry, OverlapUnchecked

__all__ = ["normalise_text", "ids_comparable", "split_overlaps", "unchecked_pairs", "overlap_notes"]

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_text(text: str) -> str:
    """The text as compared for overlap: NFKC, case-folded, punctuation and whitespace runs as one space."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", str(text)).casefold()).strip()


def _texts(sd: SplitData) -> list[str]:
    frame = sd.frame
    pair = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    # a language-model split has no text column: its rows (canonical JSON of every field) are compared instead
    texts = frame["text" if "text" in frame.columns else "row"].tolist()
    if pair is None:
        return [normalise_text(t) for t in texts]
    return [normalise_text(f"{t} \x1f {p}") for t, p in zip(texts, pair)]


def _pairs(train: list[SplitData], evaluated: list[SplitData]) -> Iterable[tuple[SplitData, SplitData]]:
    for a in train:
        for b in evaluated:
            yield a, b
    for a in evaluated:
        for b in evaluated:
            if a.ref.suite == b.ref.suite and a.ref.role.value == "validation" and b.ref.role.value == "test":
                yield a, b


def ids_comparable(suite, a: str, b: str) -> bool:
    """Whether ids of splits ``a`` and ``b`` of ``suite`` (a :class:`~harness.spec.schema.Suite`) name the same
    rows: the suite has an ``id_column``, or both splits read the same files (default ids are row numbers)."""
    if suite.id_column is not None:
        return True
    specs = {sp.name: sp for sp in suite.splits}
    default = list(suite.source.files or ()) if suite.source is not None and hasattr(suite.source, "files") else []

    def files(name: str):
        sp = specs.get(name)
        if sp is None:
            return None
        return sorted(sp.files or default), sp.hub_split

    return files(a) == files(b)


def split_overlaps(train: list[SplitData], evaluated: list[SplitData], suites: dict | None = None
                   ) -> list[OverlapEntry]:
    """Overlap counts of every checked pair (see the module docstring), pairs without overlap included.

    Parameters
    ----------
    train : list of SplitData
        The ``train`` splits of the run's ID suites.
    evaluated : list of SplitData
        The splits the run evaluates (validation and test).
    suites : dict, default=None
        Suite name -> Suite, to tell whether ids are comparable (:func:`ids_comparable`); without it ids of the
        same suite are compared.

    Returns
    -------
    list of OverlapEntry
        One per pair, ``a`` the reference split, ``b`` the evaluated one; ``fraction`` = max(by_id, by_text) / n_b.
    """
    texts: dict[str, list[str]] = {}
    out: list[OverlapEntry] = []
    for a, b in _pairs(train, evaluated):
        for sd in (a, b):
            if sd.ref.key not in texts:
                texts[sd.ref.key] = _texts(sd)
        seen = set(texts[a.ref.key])
        by_text = sum(t in seen for t in texts[b.ref.key])
        by_id = None
        suite = (suites or {}).get(a.ref.suite)
        if a.ref.suite == b.ref.suite and (suite is None or ids_comparable(suite, a.ref.split, b.ref.split)):
            ids = set(a.frame["example_id"].astype(str))
            by_id = int(b.frame["example_id"].astype(str).isin(ids).sum())
        n_b = len(b)
        out.append(OverlapEntry(a=a.ref.key, b=b.ref.key, n_a=len(a), n_b=n_b, by_id=by_id, by_text=int(by_text),
                                fraction=(max(by_text, by_id or 0) / n_b) if n_b else 0.0))
    return out


def unchecked_pairs(unread_train: Mapping[str, str], evaluated: list[SplitData]) -> list[OverlapUnchecked]:
    """The pairs :func:`split_overlaps` would count for ID train splits that could not be read.

    Parameters
    ----------
    unread_train : mapping of str to str
        ``suite/split`` key of each unread train split -> the problem (one line).
    evaluated : list of SplitData
        The splits the run evaluates.

    Returns
    -------
    list of OverlapUnchecked
        One per (unread train split, evaluated split), in that order.
    """
    return [OverlapUnchecked(a=key, b=b.ref.key, reason=reason) for key, reason in unread_train.items()
            for b in evaluated]


def overlap_notes(entries: list[OverlapEntry]) -> list[str]:
    """One note per pair with any overlap (the caller logs them as warnings)."""
    notes = []
    for e in entries:
        if e.by_text or e.by_id:
            ids = "" if e.by_id is None else f"{e.by_id} by id, "
            notes.append(f"overlap: {ids}{e.by_text} by normalised text of the {e.n_b} rows of {e.b} also occur in "
                         f"{e.a} ({e.fraction:.1%}); scores on {e.b} may be inflated (contamination)")
    return notes
