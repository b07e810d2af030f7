"""Dataset text for the report's example section, read back from the suite files a run recorded.

``harness report --examples`` re-renders a stored run with the largest negative flips and their text; the run
directory holds no dataset text, so the text comes from the suite files named in ``manifest.json``
(``suites.<name>.path``), reloaded with the data stage. A split whose content fingerprint no longer matches the
manifest's is left out (its rows may have changed since the run), so a shown text is always the scored one.
This module loads data, never a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = ["manifest_text_lookup", "run_text_lookup"]

logger = logging.getLogger(__name__)

TextLookup = Callable[[str, str, Sequence[str]], Sequence[str]]


def _suite_files(manifest: Mapping[str, Any]) -> dict[str, Path]:
    suites = manifest.get("suites")
    if not isinstance(suites, Mapping):
        return {}
    return {str(name): Path(info["path"]) for name, info in suites.items()
            if isinstance(info, Mapping) and info.get("path") and Path(str(info["path"])).is_file()}


def manifest_text_lookup(manifest: Mapping[str, Any]) -> TextLookup | None:
    """A ``text_lookup(suite, split, example_ids)`` over the suite files recorded in a run's manifest.

    Parameters
    ----------
    manifest : mapping
        The run's ``manifest.json`` (:func:`harness.rundir.read_manifest`).

    Returns
    -------
    callable or None
        ``lookup(suite, split, ids) -> list[str]`` (an empty string for an id the split no longer holds), or
        ``None`` when no recorded suite file can be read (logged). Splits whose fingerprint differs from the
        manifest's are left out with a warning.
    """
    from harness.data.sources import load_splits, sibling_resolver
    from harness.spec.load import load_suite

    files = _suite_files(manifest)
    recorded = manifest.get("splits") if isinstance(manifest.get("splits"), Mapping) else {}
    known: dict[str, tuple[Any, Path]] = {}
    for name, path in files.items():
        try:
            known[name] = (load_suite(path), path)
        except HarnessError as e:
            logger.warning("examples: cannot read suite %s (%s): %s", name, path, e)
    frames: dict[tuple[str, str], Any] = {}
    for name, (suite, path) in known.items():
        siblings = sibling_resolver(path)
        try:
            loaded = load_splits(suite, suite_path=path,
                                 resolve=lambda n, _s=siblings: known[n] if n in known else _s(n))
        except HarnessError as e:
            logger.warning("examples: cannot load the data of suite %s: %s", name, e)
            continue
        for sd in loaded.values():
            want = (recorded.get(sd.ref.key) or {}).get("fingerprint")
            if want is not None and want != sd.ref.fingerprint:
                logger.warning("examples: %s changed since the run (fingerprint %.12s, run %.12s); its texts are "
                               "not shown", sd.ref.key, sd.ref.fingerprint, want)
                continue
            frames[(sd.ref.suite, sd.ref.split)] = sd.frame.set_index("example_id")["text"]
    if not frames:
        logger.warning("examples: none of the suite files recorded in manifest.json could be read; no texts shown")
        return None

    def lookup(suite: str, split: str, example_ids: Sequence[str]) -> list[str]:
        s = frames.get((suite, split))
        return ["" if s is None else str(s.get(e, "")) for e in example_ids]

    return lookup


def run_text_lookup(run_dir: str | Path) -> TextLookup | None:
    """:func:`manifest_text_lookup` of the ``manifest.json`` in ``run_dir`` (``None`` without one)."""
    from harness.rundir import read_manifest

    return manifest_text_lookup(read_manifest(run_dir))
