"""Document-level split assignment and seeded document caps.

Every decision here is a pure function of strings and integers hashed with sha256, so it is the same in every
process, on every machine and under every Python version (the built-in ``hash()`` is salted per process and is
never used). A *document* is the value of the suite's document key (``source_id``): all rows of one document
always land in the same split, and a cap keeps or removes whole documents, so the cluster bootstrap downstream
resamples documents that were never cut in two.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.spec.load import spec_hash
from harness.spec.schema import SplitSpec, Suite

__all__ = ["unit_hash", "fraction_ranges", "assign_fraction_splits", "cap_documents", "run_suite",
           "rows_fingerprint"]

logger = logging.getLogger(__name__)

_TWO_64 = float(2**64)


def unit_hash(salt: str, key: str) -> float:
    """Map ``(salt, key)`` to a number in [0, 1), uniformly and deterministically.

    Parameters
    ----------
    salt : str
        The seed material, e.g. ``str(suite.split_seed)``.
    key : str
        The document key.

    Returns
    -------
    float
        The first 8 bytes of ``sha256(f"{salt}:{key}")`` (big-endian) divided by 2**64.
    """
    digest = hashlib.sha256(f"{salt}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def fraction_ranges(splits: Sequence[SplitSpec]) -> dict[str, tuple[float, float]]:
    """Half-open ranges ``[low, high)`` of the unit interval owned by each split that has a ``fraction``.

    Ranges are cumulative in spec order. When the fractions add up to 1 (within 1e-9) the last range is closed
    at exactly 1.0, so rounding in the sum never leaves a sliver of documents unassigned; when they add up to
    less than 1, documents hashing above the sum belong to no derived split.

    Returns
    -------
    dict of str to (float, float)
        Split name to its range; splits without ``fraction`` are absent.
    """
    out: dict[str, tuple[float, float]] = {}
    low = 0.0
    fractional = [s for s in splits if s.fraction is not None]
    total = sum(s.fraction for s in fractional)  # type: ignore[misc]
    for i, s in enumerate(fractional):
        high = low + float(s.fraction)  # type: ignore[arg-type]
        if i == len(fractional) - 1 and abs(total - 1.0) <= 1e-9:
            high = 1.0
        out[s.name] = (low, high)
        low = high
    return out


def assign_fraction_splits(source_ids: Sequence[str], splits: Sequence[SplitSpec], split_seed: int) -> np.ndarray:
    """Assign each row to the derived split that owns its document's hash.

    Parameters
    ----------
    source_ids : sequence of str, length n_rows
        The document key of each row.
    splits : sequence of SplitSpec
        The suite's splits in spec order; only those with ``fraction`` take part.
    split_seed : int
        The suite's ``split_seed``: the salt of the document hash. Another seed gives another assignment.

    Returns
    -------
    numpy.ndarray of object, shape (n_rows,)
        The split name of each row, or ``None`` where the document hashes above the sum of the fractions.
    """
    ranges = fraction_ranges(splits)
    salt = str(int(split_seed))
    by_doc: dict[str, str | None] = {}
    out = np.empty(len(source_ids), dtype=object)
    for i, doc in enumerate(source_ids):
        if doc not in by_doc:
            u = unit_hash(salt, doc)
            by_doc[doc] = next((name for name, (lo, hi) in ranges.items() if lo <= u < hi), None)
        out[i] = by_doc[doc]
    return out


def run_suite(suite: Suite, *, max_examples: int | None = None, max_length: int | None = None) -> Suite:
    """``suite`` as a run with ``--max-examples``/``--max-length`` reads it: every split capped at
    ``max_examples`` rows (the smaller of the split's own ``max_examples`` and this one; :func:`cap_documents`
    samples whole documents when the split is read) and ``max_length`` in place of the suite's; ``suite`` itself
    when both are ``None``. The sweep (its suites and the suites their derived suites read rows from) and the
    report's example texts (:mod:`harness.report.texts`, from the settings in manifest.json) go through this one
    function, so they read the same rows with the same split fingerprints (a suite's ``max_length`` is part of
    its spec hash, hence of the fingerprint)."""
    upd: dict = {}
    if max_examples is not None and suite.splits:
        upd["splits"] = [s.model_copy(update={"max_examples": min(s.max_examples or max_examples, max_examples)})
                         for s in suite.splits]
    if max_length is not None:
        upd["max_length"] = int(max_length)
    return suite.model_copy(update=upd) if upd else suite


def cap_documents(frame: pd.DataFrame, max_examples: int, seed: int, *, doc_column: str = "source_id"
                  ) -> tuple[pd.DataFrame, int]:
    """Keep a seeded sample of whole documents holding at most ``max_examples`` rows.

    Documents are visited in the order of ``sha256(f"cap:{seed}:{document}")``; a document is kept when it
    still fits under the cap and skipped otherwise (so one large document never crowds out the rest), until the
    cap is reached exactly or every document was visited. Kept rows stay in their original order.

    Parameters
    ----------
    frame : pandas.DataFrame
        The split's rows; ``doc_column`` holds the document key (str).
    max_examples : int
        The cap (> 0).
    seed : int
        The split's ``seed``.
    doc_column : str, default="source_id"
        The column of document keys.

    Returns
    -------
    (pandas.DataFrame, int)
        The kept rows (index reset) and the number of rows removed by the cap.
    """
    if len(frame) <= max_examples:
        return frame, 0
    sizes = frame[doc_column].value_counts(sort=False)
    order = sorted(sizes.index, key=lambda d: (unit_hash(f"cap:{int(seed)}", str(d)), str(d)))
    kept: set[str] = set()
    total = 0
    for doc in order:
        size = int(sizes[doc])
        if total + size <= max_examples:
            kept.add(doc)
            total += size
            if total == max_examples:
                break
    mask = frame[doc_column].isin(kept).to_numpy()
    out = frame.loc[mask].reset_index(drop=True)
    removed = len(frame) - len(out)
    logger.debug("cap %d kept %d of %d rows (%d documents)", max_examples, len(out), len(frame), len(kept))
    return out, removed


def rows_fingerprint(suite: Suite, split: str, frame: pd.DataFrame, *, extra: str = "") -> str:
    """sha256 (hex) identifying one split's content: the suite's spec hash, the split name, ``extra`` and the
    canonical rows.

    Parameters
    ----------
    suite : Suite
        The suite the split belongs to (its :func:`~harness.spec.load.spec_hash` is hashed in).
    split : str
        The split name.
    frame : pandas.DataFrame
        Canonical rows: ``example_id``, ``source_id``, ``text``, optional ``text_pair``, ``label``; each row is
        hashed as one JSON array in frame order, so any change of id, document, text, label or order changes the
        fingerprint.
    extra : str, default=""
        More identity, e.g. the source split's fingerprint and the transform parameters of a derived split.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec_hash(suite), "split": split, "extra": extra}, sort_keys=True).encode())
    cols = [c for c in ("example_id", "source_id", "text", "text_pair", "row", "label") if c in frame.columns]
    h.update(json.dumps(cols).encode())
    for row in zip(*(frame[c].tolist() for c in cols)):
        h.update(b"\n")
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()
