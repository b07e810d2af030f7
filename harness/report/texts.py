"""Dataset text for the report's example sections, read back from the suite files a run recorded.

``harness report --examples`` re-renders a stored run with the largest negative flips and their text, and, for
generation suites, a few model outputs beside their prompt and reference answer. The run directory holds no
dataset text, so the text comes from the suite files named in ``manifest.json`` (``suites.<name>.path``),
reloaded with the data stage. A split whose content fingerprint no longer matches the manifest's is left out (its
rows may have changed since the run), so a shown text is always the scored one. This module loads data, never a
model.

For a language-model suite the "text" of a row is its prompt as the suite's template renders it (without the
few-shot block and the chat template, which only add to its front and wrap it); its "gold" is the reference
answer (generation: ``task.gold.text``; multiple choice: the gold choice's text).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError

__all__ = ["manifest_text_lookup", "run_text_lookup", "manifest_lookups", "run_lookups", "loaded_lookups"]

logger = logging.getLogger(__name__)

TextLookup = Callable[[str, str, Sequence[str]], Sequence[str]]


def _suite_files(manifest: Mapping[str, Any]) -> dict[str, Path]:
    suites = manifest.get("suites")
    if not isinstance(suites, Mapping):
        return {}
    return {str(name): Path(info["path"]) for name, info in suites.items()
            if isinstance(info, Mapping) and info.get("path") and Path(str(info["path"])).is_file()}


def _text_and_gold(task: Any, row: Mapping[str, Any]) -> tuple[str, str]:
    """A language-model row's (rendered prompt, reference answer); a perplexity row's (text, "")."""
    from harness.data.lm_rows import field_value, row_choices, row_gold
    from harness.data.prompts import render

    if task.kind == "perplexity":
        return str(field_value(row, task.text, where="task.text")), ""
    choices = row_choices(row, task.choices) if task.kind == "multiple_choice" else None
    gold = row_gold(row, task.gold, choices)
    return render(task.prompt.template, row), choices[gold] if choices is not None else str(gold)


def _row_texts(suite: Any, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series | None]:
    """(text, gold) per example id of one split: a classification split's ``text`` column and no gold; a
    language-model split's (:func:`_text_and_gold`; a row that fails to read gets empty strings, logged)."""
    if "row" not in frame.columns:
        return frame.set_index("example_id")["text"], None
    pairs, failed = [], 0
    for raw in frame["row"].tolist():
        try:
            pairs.append(_text_and_gold(suite.task, json.loads(raw)))
        except HarnessError:
            pairs.append(("", ""))
            failed += 1
    if failed:
        logger.warning("examples: %d rows of suite %s could not be read; shown without text", failed, suite.name)
    ids = frame["example_id"].tolist()
    return (pd.Series([t for t, _ in pairs], index=ids, dtype=object),
            pd.Series([g for _, g in pairs], index=ids, dtype=object))


def _split_texts(manifest: Mapping[str, Any]) -> dict[tuple[str, str], tuple[pd.Series, pd.Series | None]]:
    """(suite, split) -> (text, gold) per example id, for every recorded split whose data still matches."""
    from harness.data.sources import load_splits, sibling_resolver
    from harness.data.splits import run_suite
    from harness.spec.load import load_suite

    files = _suite_files(manifest)
    recorded = manifest.get("splits") if isinstance(manifest.get("splits"), Mapping) else {}
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), Mapping) else {}
    # the run's --max-examples (a seeded sample of each split) and --max-length (part of each split's fingerprint):
    # the suites are read as the run read them
    over = {k: v for k in ("max_examples", "max_length") for v in [settings.get(k)]
            if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    known: dict[str, tuple[Any, Path]] = {}
    for name, path in files.items():
        try:
            known[name] = (run_suite(load_suite(path), **over), path)
        except HarnessError as e:
            logger.warning("examples: cannot read suite %s (%s): %s", name, path, e)
    out: dict[tuple[str, str], tuple[pd.Series, pd.Series | None]] = {}
    for name, (suite, path) in known.items():
        siblings = sibling_resolver(path)

        def resolve(n: str, _s=siblings) -> tuple[Any, Path | None]:
            if n in known:
                return known[n]
            parent, parent_path = _s(n)
            return run_suite(parent, **over), parent_path

        try:
            loaded = load_splits(suite, suite_path=path, resolve=resolve)
        except HarnessError as e:
            logger.warning("examples: cannot load the data of suite %s: %s", name, e)
            continue
        for sd in loaded.values():
            want = (recorded.get(sd.ref.key) or {}).get("fingerprint")
            if want is not None and want != sd.ref.fingerprint:
                logger.warning("examples: %s changed since the run (fingerprint %.12s, run %.12s); its texts are "
                               "not shown", sd.ref.key, sd.ref.fingerprint, want)
                continue
            out[(sd.ref.suite, sd.ref.split)] = _row_texts(suite, sd.frame)
    if not out and files:
        logger.warning("examples: none of the suite files recorded in manifest.json could be read; no texts shown")
    return out


def _lookup(frames: Mapping[tuple[str, str], pd.Series | None]) -> TextLookup:
    def lookup(suite: str, split: str, example_ids: Sequence[str]) -> list[str]:
        s = frames.get((suite, split))
        return ["" if s is None else str(s.get(e, "")) for e in example_ids]

    return lookup


def _lookups(texts: Mapping[tuple[str, str], tuple[pd.Series, pd.Series | None]]
             ) -> tuple[TextLookup | None, TextLookup | None]:
    golds = {k: g for k, (_, g) in texts.items() if g is not None}
    return (_lookup({k: t for k, (t, _) in texts.items()}) if texts else None,
            _lookup(golds) if golds else None)


def loaded_lookups(suites: Mapping[str, Any], splits: Iterable[Any]) -> tuple[TextLookup | None, TextLookup | None]:
    """``(text_lookup, gold_lookup)`` over splits already loaded by the data stage (``suites``: name ->
    :class:`~harness.spec.schema.Suite`; ``splits``: :class:`~harness.records.SplitData`), as
    :func:`manifest_lookups` gives them."""
    return _lookups({(sd.ref.suite, sd.ref.split): _row_texts(suites[sd.ref.suite], sd.frame) for sd in splits})


def manifest_lookups(manifest: Mapping[str, Any]) -> tuple[TextLookup | None, TextLookup | None]:
    """``(text_lookup, gold_lookup)`` over the suite files recorded in a run's manifest.

    Both are ``lookup(suite, split, example_ids) -> list[str]`` (an empty string for an id the split no longer
    holds, or a split they do not cover). ``text_lookup`` gives a row's text (a language-model row: its rendered
    prompt); ``gold_lookup`` a language-model row's reference answer. Either is ``None`` when nothing it would
    return can be read (logged). Splits whose fingerprint differs from the manifest's are left out with a
    warning.
    """
    return _lookups(_split_texts(manifest))


def manifest_text_lookup(manifest: Mapping[str, Any]) -> TextLookup | None:
    """The ``text_lookup`` of :func:`manifest_lookups`."""
    return manifest_lookups(manifest)[0]


def run_lookups(run_dir: str | Path) -> tuple[TextLookup | None, TextLookup | None]:
    """:func:`manifest_lookups` of the ``manifest.json`` in ``run_dir`` (``(None, None)`` without one)."""
    from harness.rundir import read_manifest

    return manifest_lookups(read_manifest(run_dir))


def run_text_lookup(run_dir: str | Path) -> TextLookup | None:
    """:func:`manifest_text_lookup` of the ``manifest.json`` in ``run_dir`` (``None`` without one)."""
    return run_lookups(run_dir)[0]
