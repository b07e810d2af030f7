"""Stage 2, dataset loading: a suite's source (local files, a pinned Hub dataset, or a built-in loader) to the
canonical rows of each split.

For every split, in this order: read the rows (whole source, the split's ``files`` or its ``hub_split``), keep
those matching ``where``, keep the documents whose hash falls in the split's ``fraction``, drop rows excluded by
the source (the VADER neutral band), apply ``on_missing_text``, map labels to class indices, check ids are
unique, apply ``max_examples``. ``where`` and ``fraction`` decide which rows belong to a split (rows outside are
simply in no split, or in another); every row of the split removed after that is counted in ``drop_reasons``
(``neutral_band``, ``missing_text``, ``cap``); nothing is removed silently. Default ids are row numbers counted
from 0 in each file (as strings), prefixed with ``<file stem>:`` when the source lists several files. Derived
(perturbation) suites load their source suite's splits and pass them through
:func:`harness.data.shifts.apply_transforms`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.labels import label_errors, label_indices, merge_outside
from harness.data.readers import (DOC_COL, DROP_COL, ID_COL, Reader, SPLIT_COL, as_key, first_values, resolve_file,
                                  text_missing)
from harness.data.shifts import apply_transforms, validate_transforms
from harness.data.splits import cap_documents, rows_fingerprint
from harness.errors import DataError, DataFileMissing, DataProblems, SpecError, format_error, unknown_name
from harness.records import SplitData, SplitRef, SuiteRole
from harness.spec.load import load_suite, read_yaml
from harness.spec.schema import OnMissingText, SplitSpec, Suite

__all__ = ["load_splits", "load_splits_or_problems", "sibling_resolver", "Resolver"]

logger = logging.getLogger(__name__)

Resolver = Callable[[str], "tuple[Suite, Path | None]"]
_MAX_DERIVED_DEPTH = 8


# ------------------------------------------------------------------------------------------------ one split
def _apply_where(table: pd.DataFrame, spec: SplitSpec, suite: Suite, where: str) -> pd.DataFrame:
    if not spec.where:
        return table
    mask = np.ones(len(table), dtype=bool)
    for col, want in spec.where.items():
        if col not in table.columns or str(col).startswith("__harness_"):
            present = [c for c in table.columns if not str(c).startswith("__harness_")]
            raise DataError(format_error(f"where names column {col!r}, which is not in the data", where=where,
                                         expected=f"one of {present}", got=col,
                                         fix=f"fix splits[{spec.name}].where in suite {suite.name!r}"))
        allowed = {as_key(v) for v in (want if isinstance(want, list) else [want])}
        mask &= np.fromiter((as_key(v) in allowed for v in table[col].tolist()), dtype=bool, count=len(table))
    return table.loc[mask]


def data_problems(errors: Sequence[DataError], where: str) -> None:
    """Raise the one error, or one :class:`~harness.errors.DataProblems` listing every problem found (each with
    its own message, each in its ``problems``), so a user fixes them all in one round; nothing when ``errors`` is
    empty."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        body = "\n".join(f"[{i}] " + str(e).replace("\n", "\n    ") for i, e in enumerate(errors, 1))
        raise DataProblems(f"{len(errors)} data problems in {where}:\n{body}", errors) from errors[0]


def _handle_missing_text(suite: Suite, spec: SplitSpec, rows: pd.DataFrame, where: str,
                         reasons: Counter) -> tuple[pd.DataFrame, DataError | None]:
    cols = [c for c in (suite.text, suite.text_pair) if c is not None]
    missing = np.zeros(len(rows), dtype=bool)
    for c in cols:
        missing |= np.fromiter((text_missing(v) for v in rows[c].tolist()), dtype=bool, count=len(rows))
    n = int(missing.sum())
    if n == 0:
        return rows, None
    policy = suite.source.on_missing_text  # type: ignore[union-attr]
    if policy is OnMissingText.ERROR:
        ids = rows[ID_COL].to_numpy()[missing].tolist()
        return rows, DataError(format_error(
            f"{n} row(s) of split {spec.name!r} have empty or null text", where=f"suite {suite.name!r}, column(s) "
            f"{', '.join(map(repr, cols))} of {where}", got=f"ids {first_values(ids)}",
            fix="set source.on_missing_text: drop (remove them, counted as missing_text) or keep (score them "
                "as empty strings), or fill in the text"))
    if policy is OnMissingText.DROP:
        reasons["missing_text"] += n
        return rows.loc[~missing], None
    rows = rows.copy()
    for c in cols:
        rows[c] = ["" if text_missing(v) else v for v in rows[c].tolist()]
    return rows, None


def _as_text(values: Sequence[Any]) -> list[str]:
    return [v if isinstance(v, str) else str(v) for v in values]


def _plain(v: Any) -> Any:
    """A cell as plain JSON data: numpy scalars and arrays to Python, NaN to null (nested values included)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def lm_row_json(rows: pd.DataFrame) -> list[str]:
    """Each row's own columns (not the harness's) as canonical JSON: what a language-model task reads (the
    ``row`` column of its split frame)."""
    cols = [c for c in rows.columns if not str(c).startswith("__harness_")]
    return [json.dumps({c: _plain(v) for c, v in zip(cols, values)}, sort_keys=True, ensure_ascii=False)
            for values in rows[cols].itertuples(index=False, name=None)]


def _lm_columns(suite: Suite, rows: pd.DataFrame) -> dict[str, list]:
    return {"example_id": rows[ID_COL].tolist(), "source_id": rows[DOC_COL].tolist(), "row": lm_row_json(rows)}


def _build_split(suite: Suite, spec: SplitSpec, table: pd.DataFrame, where: str) -> SplitData:
    rows = _apply_where(table, spec, suite, where)
    n_where = len(rows)
    if spec.where:
        logger.info("%s/%s: where %s selects %d of %d rows", suite.name, spec.name, spec.where, n_where, len(table))
    if spec.fraction is not None:
        rows = rows.loc[rows[SPLIT_COL].to_numpy() == spec.name]
    reasons: Counter = Counter()
    dropped = rows[DROP_COL].notna().to_numpy()
    reasons.update(rows.loc[dropped, DROP_COL].tolist())
    rows = rows.loc[~dropped]
    lm = suite.task_name != "classification"
    problems: list[DataError] = []
    if not lm:
        rows, text_problem = _handle_missing_text(suite, spec, rows, where, reasons)
        raw = rows[suite.label].tolist()
        labels, bad = label_indices(raw, suite)
        problems += [text_problem] if text_problem else []
        problems += label_errors(suite, spec.name, raw, rows[ID_COL].tolist(), labels, bad, where) if bad else []
    dup = rows[ID_COL].duplicated(keep=False).to_numpy()
    if dup.any():
        problems.append(DataError(format_error(
            f"{int(dup.sum())} row(s) of split {spec.name!r} share an id", where=f"suite {suite.name!r}, "
            f"{'column ' + repr(suite.id_column) if suite.id_column else 'row numbers'} of {where}",
            got=f"repeated ids {first_values(sorted(set(rows[ID_COL].to_numpy()[dup].tolist())))}",
            fix="set id_column to a column of unique ids, or remove id_column to number the rows")))
    data_problems(problems, f"split {spec.name!r} of suite {suite.name!r} ({where})")
    if lm:  # the task reads prompt, choices and gold from the row; the gold index is found when it prepares
        cols, labels = _lm_columns(suite, rows), np.zeros(len(rows), dtype=np.int64)
    else:
        cols = {"example_id": rows[ID_COL].tolist(), "source_id": rows[DOC_COL].tolist(),
                "text": _as_text(rows[suite.text].tolist())}
        if suite.text_pair is not None:
            cols["text_pair"] = _as_text(rows[suite.text_pair].tolist())
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()})
    frame["label"] = labels
    if spec.max_examples is not None:
        frame, n_cap = cap_documents(frame, spec.max_examples, spec.seed)
        if n_cap:
            reasons["cap"] += n_cap
    if len(frame) == 0:
        raise DataError(format_error(
            f"split {spec.name!r} has no rows", where=f"suite {suite.name!r}, {where}",
            got=f"{n_where} row(s) matched where, none left after fraction and drops {dict(reasons) or ''}".strip(),
            fix="check the split's where, fraction, files and max_examples" + (
                ", and source options such as neutral_band" if getattr(suite.source, "type", "") == "builtin" else
                "; a data file with a header and no rows gives no rows at all" if len(table) == 0 else "")))
    drop_reasons = {k: int(v) for k, v in sorted(reasons.items()) if v}
    ref = SplitRef(suite=suite.name, split=spec.name, role=spec.role, suite_role=SuiteRole(suite.role),
                   shift_type=suite.shift_type.value if suite.shift_type is not None else None,
                   suite_version=suite.version, fingerprint=rows_fingerprint(suite, spec.name, frame))
    logger.info("%s: %d rows (%d documents)%s", ref.key, len(frame), frame["source_id"].nunique(),
                f", dropped {drop_reasons}" if drop_reasons else "")
    return SplitData(ref=ref, frame=frame, classes=tuple(suite.classes), n_dropped=sum(drop_reasons.values()),
                     drop_reasons=drop_reasons)


# ------------------------------------------------------------------------------------------------- suites
def _select(suite: Suite, available: list[str], requested: Sequence[str] | None) -> list[str]:
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    for name in requested:
        if name not in available:
            raise SpecError(unknown_name(f"split of suite {suite.name!r}", name, available))
    return [n for n in available if n in set(requested)]


def sibling_resolver(suite_path: Path | None) -> Resolver:
    """The default way to find the suite a derived suite names in ``derived_from.suite``.

    Parameters
    ----------
    suite_path : Path or None
        The derived suite's file; ``None`` searches the current folder.

    Returns
    -------
    callable
        ``resolve(name) -> (Suite, Path)``: a name ending in ``.yaml``/``.yml`` or holding a ``/`` is a path
        relative to the folder; any other name is looked up among the ``kind: suite`` files of the folder
        (``*.yaml``, ``*.yml``) by their ``name:``. Raises :class:`SpecError` (with near matches) if none matches.
    """
    folder = suite_path.parent if suite_path is not None else Path.cwd()

    def resolve(name: str) -> tuple[Suite, Path | None]:
        if name.endswith((".yaml", ".yml")) or "/" in name or os.sep in name:
            path = resolve_file(name, folder)
            return load_suite(path), path
        found: dict[str, Path] = {}
        for f in sorted(folder.iterdir()) if folder.is_dir() else []:
            if f.suffix not in (".yaml", ".yml") or not f.is_file():
                continue
            try:
                doc = read_yaml(f)
            except SpecError:
                continue
            if doc.get("kind") == "suite" and isinstance(doc.get("name"), str):
                found.setdefault(doc["name"], f)
        if name not in found:
            raise SpecError(f"derived_from.suite (suite files searched in {folder}): "
                            + unknown_name("suite", name, found))
        return load_suite(found[name]), found[name]

    return resolve


def _load(suite: Suite, suite_path: Path | None, split_names: Sequence[str] | None, resolve: Resolver | None,
          chain: tuple[str, ...], roles: Collection[str] | None = None, optional_roles: Collection[str] = (),
          missing_only: bool = False) -> tuple[dict[str, SplitData], dict[str, DataError]]:
    """(splits read, problem of each split of an ``optional_roles`` role that could not be read; with
    ``missing_only``, only a missing file makes such a split optional, its other problems are raised)."""
    if suite.derived_from is None:
        specs = {s.name: s for s in suite.splits}
        names = [n for n in _select(suite, list(specs), split_names)
                 if roles is None or specs[n].role.value in roles]  # before any file is read
        base = Path(suite_path).parent if suite_path is not None else Path.cwd()
        reader = Reader(suite, base)  # reads each file once, for every split it holds
        out: dict[str, SplitData] = {}
        problems: list[DataError] = []
        unread: dict[str, DataError] = {}
        for n in names:  # every split's problems, then one error: a user fixes them all in one round
            try:
                out[n] = _build_split(suite, specs[n], *reader.table(specs[n]))
            except DataError as e:
                if specs[n].role.value in optional_roles and (isinstance(e, DataFileMissing) or not missing_only):
                    unread[n] = e
                    continue
                for p in e.problems if isinstance(e, DataProblems) else [e]:
                    if str(p) not in map(str, problems):  # a missing file: once, not once per split
                        problems.append(p)
        # a misspelt classes entry gives the same label problem in every split: one message naming the splits
        data_problems(merge_outside(problems, suite), f"suite {suite.name!r}")
        return out, unread
    names = _select(suite, suite.derived_from.split_names, split_names)
    validate_transforms(suite.transforms, owner=f"suite {suite.name!r}")  # fail before reading any data
    chain = chain + (suite.name,)
    if len(chain) > _MAX_DERIVED_DEPTH:
        raise SpecError(format_error("derived_from chain too deep", where=" -> ".join(chain),
                                     expected=f"at most {_MAX_DERIVED_DEPTH} levels", fix="remove the cycle"))
    source_suite, source_path = (resolve or sibling_resolver(suite_path))(suite.derived_from.suite)
    if source_suite.name in chain:
        raise SpecError(format_error("derived_from forms a cycle", where=" -> ".join(chain + (source_suite.name,)),
                                     fix="derive from a suite with a source"))
    source, unread = _load(source_suite, source_path, names, resolve, chain, roles, optional_roles, missing_only)
    return {n: apply_transforms(source[n], suite.transforms, suite) for n in names if n in source}, unread


def load_splits_or_problems(suite: Suite, *, suite_path: Path | None = None, resolve: Resolver | None = None,
                            roles: Collection[str] | None = None, optional_roles: Collection[str] = ("train",),
                            missing_only: bool = False) -> tuple[dict[str, SplitData], dict[str, DataError]]:
    """:func:`load_splits` of every split of ``roles``, in one read of each file, where a split of a role in
    ``optional_roles`` (default: ``train``) that cannot be read is returned with its problem instead of raised.

    With ``missing_only`` (default False; ``harness validate`` sets it), only a missing file
    (:class:`~harness.errors.DataFileMissing`) makes such a split optional; any other problem of it (a wrong
    column, labels outside ``classes``) is raised together with those of the other splits.

    Returns
    -------
    (dict of str to SplitData, dict of str to DataError)
        The splits read (as :func:`load_splits`), and split name -> the :class:`~harness.errors.DataError` of
        each optional split that could not be read.

    Raises
    ------
    SpecError, DataError
        As :func:`load_splits`, for the splits not of an optional role (with ``missing_only``: and for the
        problems of optional splits whose files exist).
    """
    path = Path(suite_path) if suite_path is not None else None
    return _load(suite, path, None, resolve, (), roles, optional_roles, missing_only)


def load_splits(suite: Suite, *, suite_path: Path | None = None, split_names: Sequence[str] | None = None,
                resolve: Resolver | None = None, roles: Collection[str] | None = None) -> dict[str, SplitData]:
    """Load the canonical rows of a suite's splits.

    Parameters
    ----------
    suite : Suite
        A validated suite (:func:`harness.spec.load.load_suite`).
    suite_path : Path, default=None
        The suite's file: relative data paths (and sibling suites of a derived suite) resolve against its
        folder; ``None`` uses the current folder.
    split_names : sequence of str, default=None
        The splits to load; ``None`` loads all. Returned in spec order whatever the order asked.
    resolve : callable, default=None
        ``resolve(name) -> (Suite, path or None)`` finds the suite a derived suite names in ``derived_from``;
        ``None`` uses :func:`sibling_resolver` on ``suite_path``.
    roles : collection of str, default=None
        If given, only the splits of these roles (``train``, ``validation``, ``test``; a derived suite's splits
        have their source split's role) are read: ``eval`` reads no train split it does not need, so a missing
        or broken train file does not stop it.

    Returns
    -------
    dict of str to SplitData
        Split name -> :class:`~harness.records.SplitData`, whose ``frame`` has columns ``example_id`` (str,
        unique in the split), ``source_id`` (str, the document: bootstrap cluster), ``text`` (str), optional
        ``text_pair`` (str) and ``label`` (int64 index into ``suite.classes``); ``n_dropped`` and
        ``drop_reasons`` (``neutral_band``, ``missing_text``, ``cap``) count every removed row; ``ref`` carries
        suite, split, roles, version and a sha256 fingerprint over the spec hash, the split name and the rows.
        A derived suite's splits keep the source split's names, roles, ids, documents and labels.

    Raises
    ------
    SpecError
        For an unknown split name (listing the available ones), an invalid transform, or a ``derived_from``
        suite that cannot be found or forms a cycle.
    DataError
        For a missing or unreadable file, a missing column, empty text under ``on_missing_text: error``, a label
        outside the classes (or empty: said apart), repeated ids, a split with no rows, a hub dataset that cannot
        be loaded (naming ``HF_DATASETS_OFFLINE`` and the cache when offline), or VADER data that cannot be fetched
        or verified.
        The row problems of every split (text, labels, ids, empty split) are found first and raised together as
        one error listing each (:func:`data_problems`).
    """
    return _load(suite, Path(suite_path) if suite_path is not None else None, split_names, resolve, (), roles)[0]
