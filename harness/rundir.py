"""Read and write a run directory (``../shared/CONTRACT.md``): ``summary.json``, ``per_alpha.csv``,
``predictions.parquet``, ``manifest.json`` (and ``verdict.json`` when a gate ran).

Any stage may import this module (like :mod:`harness.records`); it imports no torch. Every write is atomic.

predictions.parquet columns: ``point`` (str, point id; output-ensemble rows are not stored, they derive from
base and adapted), ``alpha`` (float64, NaN for none), ``suite``, ``split`` (str), ``example_id``, ``source_id``
(str), ``label`` (int64), then the task's per-example columns (:class:`harness.records.Predictions`):
classification ``logits`` (list<float32>, length n_classes); multiple choice ``loglik``, ``is_greedy``,
``choice_len``, ``choice_bytes`` (list<float64>, length of the split's most choices, NaN/0 past a row's last);
generation ``output``, ``answer``, ``reference`` (str) and one float64 per match metric; perplexity ``doc_loglik``,
``tokens``, ``words``, ``bytes`` (float64). A row holds nulls in the columns of other suites' tasks.
"""

from __future__ import annotations

import difflib

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import DataError, HarnessError, OutputError, format_error
from harness.io import atomic_path, atomic_write_json, atomic_write_text, cache_root
from harness.records import Predictions, Verdict
from harness.summary import Summary

__all__ = ["SUMMARY", "MANIFEST", "PER_ALPHA", "PREDICTIONS", "VERDICT", "write_summary", "read_summary",
           "write_predictions", "read_predictions", "per_alpha_frame", "write_per_alpha", "write_manifest",
           "read_manifest", "write_verdict", "read_verdict", "predictions_for", "write_run", "swap_dir",
           "check_out_dir", "tmp_prefix", "clean_stale_siblings", "RUN_ENTRIES", "OUT_RUN_HELP", "run_dir_line",
           "is_gate_junit"]

log = logging.getLogger(__name__)
SUMMARY, MANIFEST, PER_ALPHA, PREDICTIONS, VERDICT = (
    "summary.json", "manifest.json", "per_alpha.csv", "predictions.parquet", "verdict.json")
# everything a run directory can hold: the run's files, the gate's (verdict.json, junit.xml) and the report's
RUN_ENTRIES = frozenset({SUMMARY, MANIFEST, PER_ALPHA, PREDICTIONS, VERDICT, "junit.xml", "report.md", "report.html",
                         "figures"})


OUT_RUN_HELP = ("run directory to write (summary.json, predictions, manifest, report); without it the results are "
                "printed and no run directory is written, but the results store under HARNESS_CACHE, a cache that "
                "makes a rerun of the same models and suites fast, is still read and written (off: --no-store)")


def run_dir_line(run_dir: str | Path | None, run_file: bool = False, use_store: bool = True,
                 model_kind: str = "classification", report: bool = True) -> str:
    """What ``eval`` and ``sweep`` print about their outputs: where the run directory is and, on a second line,
    where its report is (``report``, default True: rendered into it, ``report.html`` and ``report.md``) or how to
    render it (False: ``--no-report``); or, with none written (no ``--out``), how to keep one and, on a second
    line, what the caches under ``HARNESS_CACHE`` kept for this run: the results store unless ``--no-store`` (a
    run without ``--out`` still speeds up its rerun), the model file fingerprints, and for a classification run
    (``model_kind``, default ``classification``; else ``causal_lm``) its tokenized splits (:mod:`harness.tokcache`;
    language-model tasks build their prompts and tokens each run)."""
    if run_dir:
        again = f"`harness report {run_dir}`"
        return f"run directory: {run_dir}\n" + (
            f"report: {Path(run_dir) / 'report.html'} (and report.md beside it; re-render with {again})" if report
            else f"report: not rendered (--no-report); render it with {again}")
    where = "--out DIR (or out: in the -c run file)" if run_file else "--out DIR"
    root = cache_root()
    cache = (f"the results store {root / 'results.sqlite'} keeps this run's per-example scores, so a rerun of the "
             "same models and suites is fast (a cache, not a run directory; --no-store turns it off)" if use_store
             else "the results store was not used (--no-store)")
    also = "tokenized splits and model file fingerprints" if model_kind == "classification" else (
        "model file fingerprints")
    return (f"run directory: none written (no --out); pass {where} to keep the summary, predictions and report for "
            f"`harness gate` and `harness report`\ncaches under HARNESS_CACHE ({root}): {cache}; {also} are cached "
            "there too")


def _missing(run_dir: Path, name: str) -> DataError:
    expected = "a folder written by `harness eval` or `harness sweep`"
    if not run_dir.exists():
        parent = run_dir.parent
        runs = sorted(q.name for q in parent.iterdir() if (q / SUMMARY).is_file()) if parent.is_dir() else []
        close = difflib.get_close_matches(run_dir.name, runs, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(str(parent / c) for c in close)}? " if close else ""
        shown = ", ".join(runs[:10]) + (f" and {len(runs) - 10} more" if len(runs) > 10 else "")
        got = (f"runs in {parent}: {shown}" if runs else
               f"no run directories in {parent}" if parent.is_dir() else f"{parent} does not exist either")
        return DataError(format_error("the run directory does not exist", where=str(run_dir), expected=expected,
                                      got=got, fix=f"{hint}pass the --out folder of a finished run"))
    if not run_dir.is_dir():
        return DataError(format_error("the run directory is a file, not a folder", where=str(run_dir),
                                      expected=expected, fix="pass the --out folder of a finished run"))
    return DataError(format_error(f"run directory has no {name}", where=str(run_dir), expected=expected,
                                  fix="pass the --out folder of a finished run (an interrupted run writes none)"))


def write_summary(run_dir: str | Path, summary: Summary) -> Path:
    """Write summary.json (NaN values become null)."""
    return atomic_write_text(Path(run_dir) / SUMMARY, summary.model_dump_json(indent=2) + "\n")


def read_summary(run_dir: str | Path) -> Summary:
    """Read and validate summary.json; :class:`DataError` if missing or invalid."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise _missing(Path(run_dir), SUMMARY)
    try:
        return Summary.model_validate_json(path.read_text(encoding="utf-8"))
    except Exception as e:  # pydantic ValidationError or bad JSON
        raise DataError(format_error("summary.json is not a valid harness summary", where=str(path),
                                     got=str(e)[:500], fix="re-run the sweep that wrote it")) from e


def write_predictions(run_dir: str | Path, preds: Iterable[Predictions]) -> Path:
    """Write predictions.parquet from :class:`Predictions` records (one row per point, split and example)."""
    tables = []
    for p in preds:
        n = p.n
        tables.append(pa.table({
            "point": pa.array([p.point] * n, pa.string()),
            "alpha": pa.array(np.full(n, np.nan if p.alpha is None else p.alpha), pa.float64()),
            "suite": pa.array([p.ref.suite] * n, pa.string()),
            "split": pa.array([p.ref.split] * n, pa.string()),
            "example_id": pa.array(p.example_ids.astype(str), pa.string()),
            "source_id": pa.array(p.source_ids.astype(str), pa.string()),
            "label": pa.array(p.labels.astype(np.int64), pa.int64()),
            **{name: _column(name, values) for name, values in p.outputs.items()},
        }))
    target = Path(run_dir) / PREDICTIONS
    with atomic_path(target) as tmp:
        if tables:
            pq.write_table(pa.concat_tables(tables, promote_options="permissive"), tmp)
        else:
            pq.write_table(pa.table({"point": pa.array([], pa.string())}), tmp)
    return target


def _column(name: str, values: np.ndarray) -> pa.Array:
    """One per-example column as an Arrow array: text as strings, 2-D numbers as fixed-size lists (float32 for
    logits, as in wave 1; float64 otherwise), 1-D numbers as float64."""
    values = np.asarray(values)
    if values.dtype.kind in "US":
        return pa.array(values.astype(str).tolist(), pa.string())
    if values.ndim == 2 and name == "logits":
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    if values.ndim == 2:  # variable-size lists: suites of one run may offer different numbers of choices
        return pa.array([row.tolist() for row in np.asarray(values, dtype=np.float64)], pa.list_(pa.float64()))
    return pa.array(values.astype(np.float64), pa.float64())


def read_predictions(run_dir: str | Path) -> pd.DataFrame:
    """Read predictions.parquet as a DataFrame (``logits`` as arrays); :class:`DataError` if missing."""
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise _missing(Path(run_dir), PREDICTIONS)
    try:
        return pq.read_table(path).to_pandas()
    except Exception as e:
        raise DataError(format_error("predictions.parquet cannot be read", where=str(path), got=str(e)[:300],
                                     fix="re-run the sweep that wrote it")) from e


_KEY_COLUMNS = ("point", "alpha", "suite", "split", "example_id", "source_id", "label")


def predictions_for(frame: pd.DataFrame, point: str, suite: str, split: str) -> tuple[Any, ...] | None:
    """(example_ids, source_ids, labels int64 (n,), outputs) of one point on one split, in stored order;
    ``None`` if the run holds no such rows. ``outputs`` maps each of the task's per-example columns to an array
    (classification: ``logits`` float32 (n, C); see the module docstring for the other tasks)."""
    rows = frame[(frame["point"] == point) & (frame["suite"] == suite) & (frame["split"] == split)]
    if rows.empty:
        return None
    outputs: dict[str, np.ndarray] = {}
    for name in rows.columns:
        if name in _KEY_COLUMNS or rows[name].isna().all():
            continue
        col = rows[name].to_numpy()
        if isinstance(col[0], (np.ndarray, list)):
            outputs[name] = np.stack([np.asarray(v) for v in col]).astype(np.float32 if name == "logits" else np.float64)
        elif isinstance(col[0], str):
            outputs[name] = col.astype(str)
        else:
            outputs[name] = col.astype(np.float64)
    return (rows["example_id"].to_numpy(str), rows["source_id"].to_numpy(str),
            rows["label"].to_numpy(np.int64), outputs)


def per_alpha_frame(summary: Summary) -> pd.DataFrame:
    """The long table of per_alpha.csv: one row per (point, suite, split, metric) with value, ci_low, ci_high, n.

    Output-ensemble rows have ``kind == "ensemble"``; weight-space points ``kind == "weights"``.
    """
    rows: list[dict[str, Any]] = []
    alphas = {p.id: p.alpha for p in summary.points}
    for kind, results in (("weights", summary.results), ("ensemble", summary.ensemble)):
        for pid, suites in results.items():
            for suite, splits in suites.items():
                for split, entry in splits.items():
                    for metric, m in entry.metrics.items():
                        rows.append({"kind": kind, "point": pid,
                                     "alpha": alphas.get(pid, _alpha_of(pid)), "suite": suite, "split": split,
                                     "metric": metric, "value": m.value, "ci_low": m.ci_low,
                                     "ci_high": m.ci_high, "n": entry.n})
    return pd.DataFrame(rows, columns=["kind", "point", "alpha", "suite", "split", "metric", "value", "ci_low",
                                       "ci_high", "n"])


def _alpha_of(pid: str) -> float | None:
    return float(pid.split("=", 1)[1]) if "=" in pid else None


def write_per_alpha(run_dir: str | Path, summary: Summary) -> Path:
    """Write per_alpha.csv (see :func:`per_alpha_frame`)."""
    return atomic_write_text(Path(run_dir) / PER_ALPHA, per_alpha_frame(summary).to_csv(index=False))


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json."""
    return atomic_write_json(Path(run_dir) / MANIFEST, manifest, default=str)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read manifest.json ({} if absent: a manifest is informative, never required)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # informative only: a damaged manifest must not stop gate or report
        log.warning("manifest.json in %s cannot be read (%s); continuing without it", run_dir, e)
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_verdict(run_dir: str | Path, verdict: Verdict) -> Path:
    """Write verdict.json (``dataclasses.asdict`` of the :class:`Verdict`, NaN as null)."""
    return atomic_write_json(Path(run_dir) / VERDICT, _clean(asdict(verdict)))


def read_verdict(run_dir: str | Path) -> dict[str, Any] | None:
    """Read verdict.json as a dict, or ``None`` when no gate ran."""
    path = Path(run_dir) / VERDICT
    if not path.is_file():
        return None
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise DataError(format_error("verdict.json cannot be read", where=str(path), got=str(e)[:300],
                                     fix="re-run `harness gate` on the run directory")) from e
    if not isinstance(verdict, dict):
        raise DataError(format_error("verdict.json is not a JSON object", where=str(path),
                                     got=type(verdict).__name__, fix="re-run `harness gate` on the run directory"))
    return verdict


# entries a run directory may hold besides RUN_ENTRIES and that a rerun may drop: a file manager's or notebook's
# leftovers, and the temporary file of an atomic write (harness.io) that a killed gate or report left behind
_IGNORABLE = re.compile(r"\.DS_Store|Thumbs\.db|desktop\.ini|\.ipynb_checkpoints|\._.*|"
                        rf"\.({'|'.join(re.escape(n) for n in sorted(RUN_ENTRIES))})\..+\.tmp")


def check_out_dir(out: str | Path, flag: str = "--out", *,
                  others: Callable[[Path, list[Path]], list[str]] | None = None,
                  holds: str = "a harness run directory", expected: str | None = None) -> None:
    """Refuse an output folder whose content a run would destroy. A run directory replaces ``out`` as a whole, so
    ``out`` must be new, empty, or an earlier run directory: ``summary.json`` (every run directory has it) and
    nothing but :data:`RUN_ENTRIES` (``figures`` a folder of ``.png`` files, the others files) and ignorable
    leftovers (``.DS_Store``, a killed write's ``.<name>.*.tmp``). Called before any work (a mistyped
    ``--out ~/project`` must neither cost a sweep nor delete the project) and again when writing. ``harness
    blend`` checks its folder with its own ``others``.

    Parameters
    ----------
    out : str or Path
        The folder to be replaced.
    flag : str, default="--out"
        The option that named it, for the message.
    others : callable, default=None
        ``others(folder, entries)``: the names of the entries of a non-empty folder that the output did not write
        (an empty list allows the replacement); default: those of a run directory, as above.
    holds, expected : str
        What the folder must be and what it may hold, for the message (default: a run directory's).

    Raises
    ------
    OutputError
        If ``out`` is a file, a symbolic link, the current folder or one above it, a folder holding anything else
        (the first few entries are named), or cannot be read.
    """
    p = Path(out).expanduser()
    try:
        if p.is_symlink():
            raise OutputError(format_error(f"{flag} is a symbolic link", where=str(p),
                                           got=f"a link to {os.readlink(p)}",
                                           fix=f"pass the folder it points to as {flag}"))
        if not p.exists():
            return
        if not p.is_dir():
            raise OutputError(format_error(f"{flag} names a file, not a folder", where=str(p),
                                           fix=f"choose a folder for {flag}"))
        if Path.cwd().resolve().is_relative_to(p.resolve()):
            raise OutputError(format_error(
                f"{flag} is the folder this command runs in (or one above it): the output replaces its folder as a "
                "whole", where=str(p), got=str(p.resolve()),
                fix=f"name a subfolder, e.g. {flag} runs/NAME, or run from the parent folder"))
        entries = sorted(p.iterdir())
        other = (others or _run_dir_others)(p, entries) if entries else []
    except OutputError:
        raise
    except OSError as e:  # OutputError is an OSError too: re-raised above as it is
        raise OutputError(format_error(f"{flag} cannot be read", where=str(p), got=e.strerror or str(e),
                                       fix="choose a folder you can read and write")) from e
    if other:
        raise OutputError(format_error(
            f"{flag} names a folder that is not {holds}: writing would replace it and delete what it holds",
            where=str(p), expected=expected or f"a new or empty folder, or an earlier run directory (summary.json "
            f"and only {', '.join(sorted(RUN_ENTRIES - {SUMMARY}))})",
            got=f"{len(other)} other entr{'y' if len(other) == 1 else 'ies'}"
            f": {', '.join(other[:5])}{', ...' if len(other) > 5 else ''}",
            fix=f"choose another {flag} folder (e.g. a new subfolder), or move those entries out"))


# how the gate's JUnit XML starts (harness.gate_outputs.verdict_to_junit): recognised by these bytes, not parsed
_GATE_JUNIT = re.compile(rb"<\?xml [^<>]{0,100}\?>\s{0,4}<testsuites name=\"harness gate\"[ >]")


def is_gate_junit(path: Path) -> bool:
    """Whether ``path`` is a JUnit XML file the gate wrote (``--junit`` pointed into a run directory): a plain
    ``.xml`` file that starts as :func:`harness.gate_outputs.verdict_to_junit` writes it. Read from its first bytes
    only; nothing is parsed, so no XML entity is expanded. A rerun into the run directory replaces such a file
    with the rest (the gate writes it again when ``--junit`` names it).

    Parameters
    ----------
    path : Path

    Returns
    -------
    bool
        ``False`` also for a link, a folder, another suffix or an unreadable file.
    """
    if path.suffix != ".xml" or path.is_symlink() or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return _GATE_JUNIT.match(f.read(128)) is not None
    except OSError:
        return False


def _run_dir_others(folder: Path, entries: list[Path]) -> list[str]:
    """The entries of a non-empty folder that are not a run directory's (all of them without summary.json)."""
    other = [e.name + ("/" if e.is_dir() else "") for e in entries if not _run_entry(e)]
    return other if other or (folder / SUMMARY).is_file() else [e.name for e in entries]


def _run_entry(e: Path) -> bool:
    """Whether ``e`` is something a run directory holds (or an ignorable leftover)."""
    if _IGNORABLE.fullmatch(e.name) or is_gate_junit(e):
        return True
    if e.name not in RUN_ENTRIES or e.is_symlink():
        return False
    if e.name == "figures":
        return e.is_dir() and all(f.is_file() and not f.is_symlink() and f.suffix == ".png" for f in e.iterdir())
    return e.is_file()


def write_run(out: str | Path, summary: Summary, predictions: list[Predictions], manifest: dict[str, Any]) -> Path:
    """Write a complete run directory atomically: everything goes to a temporary sibling folder that replaces
    ``out`` only when complete (an existing run at ``out`` is replaced as a whole, never mixed).

    Raises
    ------
    OutputError
        If ``out`` is a file, a folder that is not a run directory (:func:`check_out_dir`), or its parent is not
        writable.
    """
    out = _named_folder(Path(out).expanduser())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_siblings(out)  # first: it may move an interrupted run's folder back to out, checked next
    except OSError as e:
        raise OutputError(format_error("cannot write the run directory", where=str(out), got=e.strerror,
                                       fix="choose a writable --out folder")) from e
    check_out_dir(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out), dir=out.parent))
    except OSError as e:
        raise OutputError(format_error("cannot write the run directory", where=str(out), got=e.strerror,
                                       fix="choose a writable --out folder")) from e
    try:
        write_summary(tmp, summary)
        write_per_alpha(tmp, summary)
        write_predictions(tmp, predictions)
        write_manifest(tmp, manifest)
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


STALE_AFTER_S = 600.0
"""A hidden work folder of ``out`` untouched for this long belongs to a writer that died (writing a run takes
seconds): :func:`clean_stale_siblings` removes or restores it."""


def _named_folder(out: Path) -> Path:
    """``out`` itself, or its absolute form when it names no folder of its own (``.``, ``..``, ``runs/..``):
    its siblings are written beside it under its name."""
    return out.resolve() if out.name in ("", ".", "..") else out


def tmp_prefix(out: Path) -> str:
    """Name prefix of the hidden sibling folder a run directory or blend is written into before it is swapped
    onto ``out`` (``.<name>.tmp-`` + 8 random characters): :func:`clean_stale_siblings` removes only these."""
    return f".{out.name}.tmp-"


def clean_stale_siblings(out: Path, *, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Tidy what a writer killed mid-write (SIGKILL, power loss) left beside ``out``: hidden ``.<name>.tmp-*``
    temporary folders (:func:`tmp_prefix`) older than ``stale_after_s`` seconds are removed; a ``.<name>.old-*``
    folder (the previous run, moved aside by :func:`swap_dir`) is moved back to ``out`` when ``out`` is missing,
    else removed. Younger folders may belong to a writer still at work and are left alone. Returns the folders
    handled; each is logged.
    """
    handled: list[Path] = []
    if not out.parent.is_dir():
        return handled
    now = time.time()
    # exactly the names write_run/blend (tmp_prefix + mkdtemp's 8 characters) and swap_dir (time_ns: 19 digits)
    # make: not another run's ".<name>.x.*", nor a user's own hidden ".<name>.backup"
    ours = re.compile(rf"\.{re.escape(out.name)}\.(old-\d{{19}}|tmp-[a-z0-9_]{{8}})")
    for p in sorted(out.parent.glob(f".{out.name}.*")):
        try:
            if (not ours.fullmatch(p.name) or not p.is_dir() or p.is_symlink()
                    or now - p.stat().st_mtime < stale_after_s):
                continue
            if p.name.startswith(f".{out.name}.old-") and not out.exists():
                p.rename(out)
                log.warning("restored %s from %s, left by an interrupted run", out, p.name)
            else:
                shutil.rmtree(p)
                log.warning("removed %s, left by an interrupted run", p)
            handled.append(p)
        except OSError as e:  # another process got there first, or no permission: not this run's problem
            log.debug("could not tidy %s: %s", p, e)
    return handled


def swap_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out``; an existing ``out`` is replaced as a whole, and put back
    if the move fails.

    Raises
    ------
    OutputError
        If a rename fails (``out`` then holds what it held before).
    """
    old = None
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)
            raise
    except OSError as e:
        if isinstance(e, HarnessError):
            raise
        raise OutputError(format_error("cannot move the finished output into place", where=str(out),
                                       got=e.strerror or str(e), fix="check the folder is writable and not in use; "
                                       "the previous content of the folder was kept")) from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
