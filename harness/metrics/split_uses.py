"""How often gates in this store have judged each test split: the selection-honesty ledger.

A test split that many gates have looked at is no longer untouched: every candidate that was tried, failed and
changed until it passed has, in effect, been selected on it. The ledger counts gate uses per split *content*
(the split's fingerprint, which changes whenever its rows or its suite spec change), so the count survives new run
directories and renamed suites.

Storage: one JSON line per (gate run, split) in ``gate_uses.jsonl`` under the results-store root
(``HARNESS_CACHE``, :func:`harness.io.cache_root`). Lines are appended (short writes, so concurrent gates do not
interleave within a line); a line that cannot be parsed is skipped with a warning. Nothing here decides a
verdict: the counts go into the verdict's ``info`` and the report.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from harness.errors import HarnessError
from harness.io import cache_root

__all__ = ["LEDGER", "record_uses", "count_uses"]

logger = logging.getLogger(__name__)

LEDGER = "gate_uses.jsonl"


def _path(root: str | Path | None) -> Path:
    return Path(root) if root is not None else cache_root()


def count_uses(root: str | Path | None = None) -> Counter:
    """Gate uses per split fingerprint recorded under ``root`` (default: the cache root)."""
    path = _path(root) / LEDGER
    counts: Counter = Counter()
    if not path.is_file():
        return counts
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            counts[json.loads(line)["fingerprint"]] += 1
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is not a gate-use record; skipped", path, i + 1)
    return counts


def record_uses(splits: Iterable[tuple[str, str, str]], *, policy: str, run_dir: str,
                root: str | Path | None = None) -> dict[str, int]:
    """Append one gate use of each split and return the counts, this use included.

    Parameters
    ----------
    splits : iterable of (suite, split, fingerprint)
        The test splits the gate judged; entries without a fingerprint are not recorded (count 0).
    policy : str
        The gate policy's name.
    run_dir : str
        The judged run directory.
    root : str or Path, default=None
        Where the ledger lives (default: the cache root).

    Returns
    -------
    dict of str to int
        ``"suite/split"`` -> number of gate uses of that split's content in this store.
    """
    splits = list(splits)
    try:
        path = _path(root) / LEDGER
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for suite, split, fp in splits:
                if fp:
                    f.write(json.dumps({"fingerprint": fp, "suite": suite, "split": split, "policy": policy,
                                        "run_dir": run_dir, "time": time.time()}) + "\n")
        counts = count_uses(root)
    except (OSError, HarnessError) as e:  # the verdict does not depend on the ledger
        logger.warning("could not record gate uses of test splits: %s", e)
        counts = Counter()
    return {f"{suite}/{split}": counts.get(fp, 0) for suite, split, fp in splits}
