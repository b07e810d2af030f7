"""Stage 2a, reading a suite's source: local csv/tsv/jsonl/parquet files (pandas/pyarrow, literal "NA" text kept),
a pinned Hub dataset (``datasets``), or a built-in loader, each distinct input once per suite, with id, document,
drop and split-assignment columns added (:class:`Reader`). :mod:`harness.data.sources` builds the splits."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.lm_rows import task_columns
from harness.data.splits import assign_fraction_splits
from harness.data.vader import read_vader_domain
from harness.errors import DataError, DataFileMissing, SpecError, did_you_mean, format_error
from harness.settings import env
from harness.spec.schema import BuiltinSource, HubSource, LocalSource, SplitSpec, Suite

__all__ = ["Reader", "ID_COL", "DOC_COL", "DROP_COL", "SPLIT_COL", "SHOW", "as_key", "first_values",
           "is_null", "resolve_file", "text_missing"]

logger = logging.getLogger(__name__)

ID_COL, DOC_COL, DROP_COL, SPLIT_COL = "__harness_id", "__harness_doc", "__harness_drop", "__harness_split"
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}
SHOW = 5  # ids or values shown in an error message


# ------------------------------------------------------------------------------------------------ value helpers
def is_null(v: Any) -> bool:
    """Whether a cell is missing: ``None``, ``pd.NA``, ``pd.NaT`` or a float NaN (never the text "NA")."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def as_key(v: Any) -> str | None:
    """Canonical string of a cell for matching (ids, ``where``, ``label_map``): ``1``, ``1.0`` and ``"1"`` agree."""
    if is_null(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v).strip()


def text_missing(v: Any) -> bool:
    """Whether a text cell is missing: null (:func:`is_null`) or only whitespace."""
    return is_null(v) or (isinstance(v, str) and not v.strip())


def first_values(values: Sequence[Any], n: int = SHOW) -> str:
    """The first ``n`` values as reprs for an error message, with the total count when there are more."""
    shown = ", ".join(repr(v) for v in list(values)[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


# ---------------------------------------------------------------------------------------------------- reading
def resolve_file(name: str, base: Path) -> Path:
    """A source file path: ``~`` expanded; relative paths are relative to ``base`` (the suite file's folder)."""
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
        raise DataFileMissing(format_error("data file not found", where=str(path),
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
    except pd.errors.EmptyDataError:
        return pd.DataFrame()  # no header, no rows: _read_local refuses it unless another file has rows
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(format_error(f"cannot read the {fmt} file", where=str(path), got=f"{type(e).__name__}: {e}",
                                     fix=f"check that it is a valid UTF-8 {fmt} file, or set source.format")) from e


def _read_local(source: LocalSource, files: list[str], base: Path) -> tuple[pd.DataFrame, list[str], str]:
    paths = [resolve_file(f, base) for f in files]
    labels = [p.stem for p in paths]
    if len(set(labels)) != len(labels):
        labels = list(files)
    prefix = len(paths) > 1 or len(source.files) > 1
    frames, ids = [], []
    for path, label in zip(paths, labels):
        df = _read_file(path, _file_format(path, source.format))
        frames.append(df)
        ids += [f"{label}:{i}" if prefix else str(i) for i in range(len(df))]
    if all(df.shape == (0, 0) for df in frames):  # every file empty: no header, no rows
        raise DataError(format_error(f"the data file{'s are' if len(paths) > 1 else ' is'} empty",
                                     where=", ".join(map(str, paths)), got="no header and no rows",
                                     fix="point the suite at the file that holds the rows, or fill it"))
    frames = [df for df in frames if df.shape != (0, 0)] or frames  # an empty file among others adds no rows
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return table, ids, ", ".join(map(str, paths))


def _hf_cache_dir() -> str:
    if env("HF_DATASETS_CACHE"):
        return env("HF_DATASETS_CACHE")
    home = env("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
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
                   if (env(v) or "").strip().upper() in ("1", "ON", "YES", "TRUE")]
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
        table[suite.label] = [names[int(v)] if not is_null(v) and 0 <= int(v) < len(names) else v
                              for v in table[suite.label]]
    return table, [str(i) for i in range(len(table))], f"hub dataset {source.id}@{source.revision} split {split}"


def _read_builtin(source: BuiltinSource) -> tuple[pd.DataFrame, list[str], str]:
    df = read_vader_domain(source.domain)
    rating = df["rating"].to_numpy()
    table = pd.DataFrame({
        "id": df["example_id"], "document": df["source_id"], "text": df["text"], "rating": rating,
        "label": np.where(rating > 0, "positive", np.where(rating < 0, "negative", "neutral")).astype(object),
    })
    in_band = (np.abs(rating) < source.neutral_band) | (rating == 0)
    table[DROP_COL] = np.where(in_band, "neutral_band", None).astype(object)
    return table, df["example_id"].tolist(), f"built-in {source.name}/{source.domain}"


def _wanted_columns(suite: Suite) -> dict[str, str]:
    """Spec field path -> a column it reads (language-model tasks: the template's fields, choices and gold)."""
    src = suite.source
    wanted = {"id_column": suite.id_column, "source.document_key": src.document_key if src is not None else None}
    if suite.task_name == "classification":
        wanted |= {"text": suite.text, "text_pair": suite.text_pair, "label": suite.label}
    else:
        choices, gold = getattr(suite.task, "choices", None), getattr(suite.task, "gold", None)
        for path, cols in task_columns(suite.task).items():
            if path == "task.choices" and choices is not None and choices.fields:  # each field by its place
                for j, f in enumerate(choices.fields):
                    wanted[f"task.choices.fields[{j}]"] = f.split(".")[0]
                continue
            if path == "task.choices" and choices is not None and choices.field:
                wanted["task.choices.field"] = choices.field.split(".")[0]
                continue
            if path == "task.gold" and gold is not None:  # each key by its path: "set task.gold.label to ..."
                for key in ("index", "label", "labels", "text"):
                    if getattr(gold, key):
                        wanted[f"task.gold.{key}"] = getattr(gold, key).split(".")[0]
                continue
            for col in sorted(cols):  # a template's fields: "set the field {{x}} of task.prompt.template to ..."
                wanted[f"the field {{{{{col}}}}} of {path}" if path == "task.prompt.template" else
                       path if len(cols) == 1 else f"{path} field {col!r}"] = col
    return {k: v for k, v in wanted.items() if v is not None}


def _missing_columns(suite: Suite, table: pd.DataFrame, where: str) -> None:
    missing = {field: col for field, col in _wanted_columns(suite).items() if col not in table.columns}
    if missing:
        present = [c for c in table.columns if not str(c).startswith("__harness_")]
        raise DataError(format_error(
            f"column(s) {', '.join(map(repr, missing.values()))} not found", where=where,
            expected=", ".join(f"{field}: {col!r}" for field, col in missing.items()), got=f"columns {present}",
            fix=f"in suite {suite.name!r}, " + "; ".join(  # each field with its own hint
                f"set {field} to a column of the data file{did_you_mean(str(col), map(str, present))}"
                for field, col in missing.items())))


def _keys(values: Sequence[Any], what: str, where: str, fix: str) -> list[str]:
    keys = [as_key(v) for v in values]
    nulls = [i for i, k in enumerate(keys) if k is None or k == ""]
    if nulls:
        raise DataError(format_error(f"{len(nulls)} row(s) have an empty {what}", where=where,
                                     got=f"rows (counting from 0) {first_values(nulls)}", fix=fix))
    return keys  # type: ignore[return-value]


class Reader:
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
            table[ID_COL] = _keys(table[suite.id_column].tolist(), f"id (column {suite.id_column!r})", where,
                               "fill every id, or remove id_column to number rows")
        else:
            table[ID_COL] = default_ids
        doc_col = src.document_key or ("document" if isinstance(src, BuiltinSource) else None)  # type: ignore
        if doc_col is not None:
            table[DOC_COL] = _keys(table[doc_col].tolist(), f"document key (column {doc_col!r})", where,
                                "fill every document key, or remove source.document_key")
        else:
            table[DOC_COL] = table[ID_COL]
        if DROP_COL not in table.columns:
            table[DROP_COL] = None
        if any(s.fraction is not None for s in suite.splits):
            table[SPLIT_COL] = assign_fraction_splits(table[DOC_COL].tolist(), suite.splits, suite.split_seed)
        return table, where


