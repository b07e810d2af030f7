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

import csv
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.shifts import apply_transforms, validate_transforms
from harness.data.splits import assign_fraction_splits, cap_documents, rows_fingerprint
from harness.errors import DataError, SpecError, format_error, unknown_name
from harness.records import SplitData, SplitRef, SuiteRole
from harness.spec.load import load_suite, read_yaml
from harness.spec.schema import BuiltinSource, HubSource, LocalSource, OnMissingText, SplitSpec, Suite

__all__ = ["load_splits", "sibling_resolver", "Resolver"]

logger = logging.getLogger(__name__)

Resolver = Callable[[str], "tuple[Suite, Path | None]"]
_ID, _DOC, _DROP, _SPLIT = "__harness_id", "__harness_doc", "__harness_drop", "__harness_split"
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}
_MAX_DERIVED_DEPTH = 8
_SHOW = 5  # ids or values shown in an error message


# ------------------------------------------------------------------------------------------------ value helpers
def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _as_key(v: Any) -> str | None:
    """Canonical string of a cell for matching (ids, ``where``, ``label_map``): ``1``, ``1.0`` and ``"1"`` agree."""
    if _is_null(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v).strip()


def _text_missing(v: Any) -> bool:
    return _is_null(v) or (isinstance(v, str) and not v.strip())


def _first(values: Sequence[Any], n: int = _SHOW) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


# ---------------------------------------------------------------------------------------------------- reading
def _resolve_file(name: str, base: Path) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(format_error("cannot tell the file format from its extension", where=str(path),
                                     expected=f"one of {', '.join(_FORMATS)}", got=path.suffix or "(none)",
                                     fix="rename the file or set source.format: csv, jsonl or parquet"))
    return fmt


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with open(path, encoding="utf-8-sig") as f:  # -sig: a leading byte-order mark is not part of the data
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(format_error("invalid JSON line", where=f"{path}:{lineno}", got=str(e),
                                             fix="make every line one JSON object")) from e
            if not isinstance(rec, dict):
                raise DataError(format_error("a JSON line is not an object", where=f"{path}:{lineno}",
                                             expected='{"text": ..., "label": ...}', got=type(rec).__name__))
            records.append(rec)
    return pd.DataFrame(records, dtype=object)


def _read_file(path: Path, fmt: str) -> pd.DataFrame:
    """Read one local file; every column as Python objects (CSV: all strings, literal "NA"/"null" kept)."""
    if not path.is_file():
        raise DataError(format_error("data file not found", where=str(path),
                                     fix="check source.files / the split's files (relative paths resolve against "
                                         "the suite file's folder)"))
    try:
        if fmt in ("csv", "tsv"):
            extra: dict[str, Any] = {"sep": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                               **extra)
        if fmt == "jsonl":
            return _read_jsonl(path)
        return pd.read_parquet(path)
    except DataError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(format_error(f"cannot read the {fmt} file", where=str(path), got=f"{type(e).__name__}: {e}",
                                     fix=f"check that it is a valid UTF-8 {fmt} file, or set source.format")) from e


def _read_local(source: LocalSource, files: list[str], base: Path) -> tuple[pd.DataFrame, list[str], str]:
    paths = [_resolve_file(f, base) for f in files]
    labels = [p.stem for p in paths]
    if len(set(labels)) != len(labels):
        labels = list(files)
    prefix = len(paths) > 1 or len(source.files) > 1
    frames, ids = [], []
    for path, label in zip(paths, labels):
        df = _read_file(path, _file_format(path, source.format))
        frames.append(df)
        ids += [f"{label}:{i}" if prefix else str(i) for i in range(len(df))]
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return table, ids, ", ".join(map(str, paths))


def _hf_cache_dir() -> str:
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "datasets")


def _offline_cause(e: BaseException) -> bool:
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    names = {cls.__name__ for ex in chain for cls in type(ex).__mro__}
    return bool(names & {"ConnectionError", "ConnectError", "ConnectTimeout", "Timeout", "OfflineModeIsEnabled",
                         "LocalEntryNotFoundError"})


def _hub_error(source: HubSource, split: str, e: Exception) -> DataError:
    where = f"hub dataset {source.id!r} (config {source.config!r}, revision {source.revision!r}, split {split!r})"
    got = f"{type(e).__name__}: {e}"
    offline_env = [v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
                   if os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")]
    if offline_env or _offline_cause(e):
        state = f"{' and '.join(offline_env)} set" if offline_env else "no network connection"
        return DataError(format_error(
            f"cannot load a hub dataset offline ({state}) and it is not in the datasets cache", where=where,
            got=got, fix=f"run once with network access and HF_DATASETS_OFFLINE unset to fill the cache at "
                         f"{_hf_cache_dir()} (HF_DATASETS_CACHE moves it), then set HF_DATASETS_OFFLINE=1; or "
                         "copy a filled cache there; or export the split to a file and use a local source"))
    return DataError(format_error("cannot load the hub dataset", where=where, got=got,
                                  fix="check source.id, config, revision and the split name on the Hub"))


def _read_hub(suite: Suite, source: HubSource, split: str) -> tuple[pd.DataFrame, list[str], str]:
    import datasets  # heavy: only when a hub source is read

    try:  # never trust_remote_code: a dataset script would run arbitrary code
        ds = datasets.load_dataset(source.id, source.config, revision=source.revision, split=split)
    except Exception as e:  # noqa: BLE001 - every failure becomes one DataError naming the dataset
        raise _hub_error(source, split, e) from e
    table = ds.to_pandas()
    names = getattr((getattr(ds, "features", None) or {}).get(suite.label), "names", None)
    if suite.label_map is None and names and set(names) <= set(suite.classes) and suite.label in table.columns:
        # a ClassLabel whose names are the suite's classes: map by name, whatever the order of either list
        table[suite.label] = [names[int(v)] if not _is_null(v) and 0 <= int(v) < len(names) else v
                              for v in table[suite.label]]
    return table, [str(i) for i in range(len(table))], f"hub dataset {source.id}@{source.revision} split {split}"


def _read_builtin(source: BuiltinSource) -> tuple[pd.DataFrame, list[str], str]:
    from harness.data.vader import read_vader_domain

    df = read_vader_domain(source.domain)
    rating = df["rating"].to_numpy()
    table = pd.DataFrame({
        "id": df["example_id"], "document": df["source_id"], "text": df["text"], "rating": rating,
        "label": np.where(rating > 0, "positive", np.where(rating < 0, "negative", "neutral")).astype(object),
    })
    in_band = (np.abs(rating) < source.neutral_band) | (rating == 0)
    table[_DROP] = np.where(in_band, "neutral_band", None).astype(object)
    return table, df["example_id"].tolist(), f"built-in {source.name}/{source.domain}"


def _missing_columns(suite: Suite, table: pd.DataFrame, where: str) -> None:
    src = suite.source
    wanted = {"text": suite.text, "text_pair": suite.text_pair, "label": suite.label, "id_column": suite.id_column,
              "source.document_key": src.document_key if src is not None else None}
    missing = {field: col for field, col in wanted.items() if col is not None and col not in table.columns}
    if missing:
        present = [c for c in table.columns if not str(c).startswith("__harness_")]
        raise DataError(format_error(
            f"column(s) {', '.join(map(repr, missing.values()))} not found", where=where,
            expected=", ".join(f"{field}: {col!r}" for field, col in missing.items()), got=f"columns {present}",
            fix=f"set {', '.join(missing)} in suite {suite.name!r} to one of the columns present"))


def _keys(values: Sequence[Any], what: str, where: str, fix: str) -> list[str]:
    keys = [_as_key(v) for v in values]
    nulls = [i for i, k in enumerate(keys) if k is None or k == ""]
    if nulls:
        raise DataError(format_error(f"{len(nulls)} row(s) have an empty {what}", where=where,
                                     got=f"rows (counting from 0) {_first(nulls)}", fix=fix))
    return keys  # type: ignore[return-value]


class _Reader:
    """Reads each distinct input of one suite once, and adds id, document, drop and split-assignment columns."""

    def __init__(self, suite: Suite, base: Path):
        self.suite, self.base = suite, base
        self._memo: dict[tuple, tuple[pd.DataFrame, str]] = {}

    def table(self, spec: SplitSpec) -> tuple[pd.DataFrame, str]:
        src = self.suite.source
        if isinstance(src, LocalSource):
            files = spec.files if spec.files is not None else src.files
            key: tuple = ("local", *files)
        elif isinstance(src, HubSource):
            split = spec.hub_split or src.split
            if split is None:
                raise SpecError(format_error("a hub source needs a split name", where=f"suite {self.suite.name!r}, "
                                             f"split {spec.name!r}", fix="set source.split or the split's hub_split"))
            key = ("hub", split)
        else:
            key = ("builtin",)
        if key not in self._memo:
            if isinstance(src, LocalSource):
                raw = _read_local(src, list(key[1:]), self.base)
            elif isinstance(src, HubSource):
                raw = _read_hub(self.suite, src, key[1])
            else:
                raw = _read_builtin(src)  # type: ignore[arg-type]
            self._memo[key] = self._finish(*raw)
        return self._memo[key]

    def _finish(self, table: pd.DataFrame, default_ids: list[str], where: str) -> tuple[pd.DataFrame, str]:
        suite, src = self.suite, self.suite.source
        _missing_columns(suite, table, where)
        table = table.copy()
        if suite.id_column is not None:
            table[_ID] = _keys(table[suite.id_column].tolist(), f"id (column {suite.id_column!r})", where,
                               "fill every id, or remove id_column to number rows")
        else:
            table[_ID] = default_ids
        doc_col = src.document_key or ("document" if isinstance(src, BuiltinSource) else None)  # type: ignore
        if doc_col is not None:
            table[_DOC] = _keys(table[doc_col].tolist(), f"document key (column {doc_col!r})", where,
                                "fill every document key, or remove source.document_key")
        else:
            table[_DOC] = table[_ID]
        if _DROP not in table.columns:
            table[_DROP] = None
        if any(s.fraction is not None for s in suite.splits):
            table[_SPLIT] = assign_fraction_splits(table[_DOC].tolist(), suite.splits, suite.split_seed)
        return table, where


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
        allowed = {_as_key(v) for v in (want if isinstance(want, list) else [want])}
        mask &= np.fromiter((_as_key(v) in allowed for v in table[col].tolist()), dtype=bool, count=len(table))
    return table.loc[mask]


def _label_indices(raw: Sequence[Any], suite: Suite) -> tuple[np.ndarray, list[int]]:
    """Class index of each raw label (-1 where it cannot be mapped) and the positions of the bad ones."""
    index = {c: i for i, c in enumerate(suite.classes)}
    lmap = {_as_key(k): v for k, v in suite.label_map.items()} if suite.label_map is not None else None
    memo: dict[tuple[str, str | None], int] = {}

    def one(v: Any) -> int:
        key = _as_key(v)
        if key is None:
            return -1
        if lmap is not None:  # label_map first; an exact class name passes through
            return index[lmap[key]] if key in lmap else index.get(key, -1)
        if isinstance(v, str) and key in index:
            return index[key]
        if re.fullmatch(r"[+-]?\d+", key) and not isinstance(v, (bool, np.bool_)):
            n = int(key)  # an integer (or a string of digits in CSV) indexes classes
            return n if 0 <= n < len(index) else -1
        return -1

    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        k = (type(v).__name__, _as_key(v))
        if k not in memo:
            memo[k] = one(v)
        out[i] = memo[k]
    return out, np.flatnonzero(out < 0).tolist()


def _label_error(suite: Suite, spec: SplitSpec, rows: pd.DataFrame, bad: list[int], where: str) -> DataError:
    raw = rows[suite.label].tolist()
    seen = sorted({repr(raw[i]) for i in bad})
    ids = rows[_ID].iloc[bad].tolist()
    how = (f"{'extend' if suite.label_map else 'add'} label_map with an entry for each value shown (raw value -> "
           f"one of {list(suite.classes)}), or leave those rows out with the split's where")
    expected = (f"a key of label_map {sorted(map(str, suite.label_map))} or a class name" if suite.label_map else
                f"a class name {list(suite.classes)} or an integer index in [0, {len(suite.classes) - 1}]")
    return DataError(format_error(
        f"{len(bad)} row(s) of split {spec.name!r} have a label outside the classes",
        where=f"suite {suite.name!r}, column {suite.label!r} of {where}; ids {_first(ids)}", expected=expected,
        got=f"values {', '.join(seen[:10])}" + (" ..." if len(seen) > 10 else ""), fix=how))


def _handle_missing_text(suite: Suite, spec: SplitSpec, rows: pd.DataFrame, where: str,
                         reasons: Counter) -> pd.DataFrame:
    cols = [c for c in (suite.text, suite.text_pair) if c is not None]
    missing = np.zeros(len(rows), dtype=bool)
    for c in cols:
        missing |= np.fromiter((_text_missing(v) for v in rows[c].tolist()), dtype=bool, count=len(rows))
    n = int(missing.sum())
    if n == 0:
        return rows
    policy = suite.source.on_missing_text  # type: ignore[union-attr]
    if policy is OnMissingText.ERROR:
        ids = rows[_ID].to_numpy()[missing].tolist()
        raise DataError(format_error(
            f"{n} row(s) of split {spec.name!r} have empty or null text", where=f"suite {suite.name!r}, column(s) "
            f"{', '.join(map(repr, cols))} of {where}", got=f"ids {_first(ids)}",
            fix="set source.on_missing_text: drop (remove them, counted as missing_text) or keep (score them "
                "as empty strings), or fill in the text"))
    if policy is OnMissingText.DROP:
        reasons["missing_text"] += n
        return rows.loc[~missing]
    rows = rows.copy()
    for c in cols:
        rows[c] = ["" if _text_missing(v) else v for v in rows[c].tolist()]
    return rows


def _as_text(values: Sequence[Any]) -> list[str]:
    return [v if isinstance(v, str) else str(v) for v in values]


def _build_split(suite: Suite, spec: SplitSpec, table: pd.DataFrame, where: str) -> SplitData:
    rows = _apply_where(table, spec, suite, where)
    n_where = len(rows)
    if spec.where:
        logger.info("%s/%s: where %s selects %d of %d rows", suite.name, spec.name, spec.where, n_where, len(table))
    if spec.fraction is not None:
        rows = rows.loc[rows[_SPLIT].to_numpy() == spec.name]
    reasons: Counter = Counter()
    dropped = rows[_DROP].notna().to_numpy()
    reasons.update(rows.loc[dropped, _DROP].tolist())
    rows = rows.loc[~dropped]
    rows = _handle_missing_text(suite, spec, rows, where, reasons)
    labels, bad = _label_indices(rows[suite.label].tolist(), suite)
    if bad:
        raise _label_error(suite, spec, rows, bad, where)
    dup = rows[_ID].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(format_error(
            f"{int(dup.sum())} row(s) of split {spec.name!r} share an id", where=f"suite {suite.name!r}, "
            f"{'column ' + repr(suite.id_column) if suite.id_column else 'row numbers'} of {where}",
            got=f"repeated ids {_first(sorted(set(rows[_ID].to_numpy()[dup].tolist())))}",
            fix="set id_column to a column of unique ids, or remove id_column to number the rows"))
    cols = {"example_id": rows[_ID].tolist(), "source_id": rows[_DOC].tolist(),
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
            fix="check the split's where, fraction, files and max_examples, and source options such as "
                "neutral_band"))
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
            path = _resolve_file(name, folder)
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
          chain: tuple[str, ...]) -> dict[str, SplitData]:
    if suite.derived_from is None:
        names = _select(suite, [s.name for s in suite.splits], split_names)
        base = Path(suite_path).parent if suite_path is not None else Path.cwd()
        reader = _Reader(suite, base)
        specs = {s.name: s for s in suite.splits}
        return {n: _build_split(suite, specs[n], *reader.table(specs[n])) for n in names}
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
    source = _load(source_suite, source_path, names, resolve, chain)
    return {n: apply_transforms(source[n], suite.transforms, suite) for n in names}


def load_splits(suite: Suite, *, suite_path: Path | None = None, split_names: Sequence[str] | None = None,
                resolve: Resolver | None = None) -> dict[str, SplitData]:
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
        outside the classes, repeated ids, a split with no rows, a hub dataset that cannot be loaded (naming
        ``HF_DATASETS_OFFLINE`` and the cache when offline), or VADER data that cannot be fetched or verified.
    """
    return _load(suite, Path(suite_path) if suite_path is not None else None, split_names, resolve, ())
