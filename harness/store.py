"""The results store: an embedded SQLite database under ``$HARNESS_CACHE`` holding the per-example records of every
(model or blend, split) ever scored, so reruns and resumed sweeps recompute only what is missing.

A classification entry is one ``.npy`` float32 logits array (as in wave 1); other tasks' entries are ``.npz``
archives of their named columns (numbers and fixed-width unicode text, never pickled objects).

Keys are sha256 hashes of canonical JSON over everything that can change a prediction: the model fingerprint
(a blend's fingerprint is a hash of base fingerprint, adapted fingerprint, alpha and mode, so no weights are
rehashed per alpha), the alpha as a canonical decimal, the tokenized split's cache key, dtype, device type, head
mode, blend path and harness version (see :func:`prediction_key`). Each row also stores a sha256 of its payload;
a corrupt row is reported, deleted and recomputed. Writes are single transactions in WAL mode with a busy
timeout, so a SIGKILL loses at most the point being computed and concurrent sweeps sharing a store do not
corrupt it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import StoreError, format_error
from harness.io import cache_root, canonical_json, sha256_json

__all__ = ["prediction_key", "blend_fingerprint", "ResultsStore"]

log = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    key TEXT PRIMARY KEY,
    logits BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    n INTEGER NOT NULL,
    meta TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def blend_fingerprint(base_fp: str, adapted_fp: str, alpha: float, mode: str) -> str:
    """Fingerprint of a blend: sha256 of (base fingerprint, adapted fingerprint, canonical alpha, head mode)."""
    return sha256_json({"base": base_fp, "adapted": adapted_fp, "alpha": f"{alpha:.6f}", "mode": mode}, default=str)


def prediction_key(*, model_fp: str, alpha: float | None, split_key: str, dtype: str, device_type: str,
                   head: str = "shared", blend_path: str = "merged", harness_version: str = "",
                   extra: dict[str, Any] | None = None) -> str:
    """The store key of one model (or blend) on one tokenized split (sha256 hex)."""
    return sha256_json({
        "model": model_fp, "alpha": None if alpha is None else f"{alpha:.6f}", "split": split_key,
        "dtype": dtype, "device": device_type, "head": head, "blend_path": blend_path,
        "version": harness_version, "extra": extra or {}}, default=str)


def _digest(key: str, blob: bytes) -> str:
    """Checksum of a row: the key and the payload together, so a payload moved under another key is caught."""
    return hashlib.sha256(key.encode() + b"\0" + blob).hexdigest()


def _to_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


class ResultsStore:
    """SQLite-backed cache of logits arrays, shared safely between processes.

    Parameters
    ----------
    path : str or Path, default=None
        Database file; default ``$HARNESS_CACHE/results.sqlite``.
    timeout_s : float, default=60
        How long a writer waits for a lock held by another process.

    Raises
    ------
    StoreError
        If the database cannot be opened (the message names the file and says it can be deleted: it is a cache).
    """

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0) -> None:
        self.path = Path(path) if path else cache_root() / "results.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open(timeout_s)
        except sqlite3.DatabaseError as e:
            raise StoreError(format_error("cannot open the results store", where=str(self.path), got=str(e),
                                          fix="delete the file (it is only a cache) or set HARNESS_CACHE "
                                              "elsewhere")) from e

    def _open(self, timeout_s: float) -> sqlite3.Connection:
        # Switching a new database to WAL (and creating the table) needs an exclusive lock, and SQLite answers
        # "database is locked" at once, without waiting for busy_timeout, when another process is doing the same:
        # two sweeps starting together on a fresh store. Retry that until the timeout.
        deadline, attempt = time.monotonic() + timeout_s, 0
        while True:
            db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                return db
            except sqlite3.OperationalError as e:
                db.close()
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                attempt += 1
                time.sleep(min(0.5, 0.01 * attempt))
            except BaseException:
                db.close()
                raise

    def get(self, key: str, n: int | None = None) -> np.ndarray | None:
        """The stored logits for ``key`` (float32, shape (n, n_classes)), or ``None`` when absent or corrupt."""
        row = self._db.execute("SELECT logits, sha256, n FROM predictions WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        blob, digest, stored_n = row
        try:
            if _digest(key, blob) != digest:
                raise ValueError("checksum mismatch")
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
            if arr.ndim != 2 or arr.shape[0] != stored_n or (n is not None and stored_n != n):
                raise ValueError(f"shape {arr.shape} does not match n={n}")
        except ValueError as e:
            log.warning("results store entry %s… is corrupt (%s); it will be recomputed", key[:12], e)
            self.delete(key)
            return None
        return arr.astype(np.float32, copy=False)

    def get_outputs(self, key: str, n: int | None = None) -> dict[str, np.ndarray] | None:
        """The stored per-example columns for ``key`` (see :class:`harness.records.Predictions`), or ``None``
        when absent or corrupt (a corrupt entry is reported, deleted and recomputed)."""
        row = self._db.execute("SELECT logits, sha256, n FROM predictions WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        blob, digest, stored_n = row
        if not blob.startswith(b"PK"):  # a plain .npy: classification logits
            logits = self.get(key, n)
            return None if logits is None else {"logits": logits}
        try:
            if _digest(key, blob) != digest:
                raise ValueError("checksum mismatch")
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                out = {name: z[name] for name in z.files}
            if any(v.shape[0] != stored_n for v in out.values()) or (n is not None and stored_n != n):
                raise ValueError(f"rows do not match n={n}")
        except (ValueError, OSError) as e:
            log.warning("results store entry %s… is corrupt (%s); it will be recomputed", key[:12], e)
            self.delete(key)
            return None
        return out

    def put_outputs(self, key: str, outputs: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        """Store a split's per-example columns under ``key`` (classification logits alone as ``.npy``)."""
        if set(outputs) == {"logits"}:
            self.put(key, outputs["logits"], meta)
            return
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in outputs.items()})
        self._write(key, buf.getvalue(), int(next(iter(outputs.values())).shape[0]), meta)

    def put(self, key: str, logits: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Store ``logits`` (n, n_classes) under ``key`` in one transaction (replacing any old row)."""
        self._write(key, _to_bytes(logits), int(logits.shape[0]), meta)

    def _write(self, key: str, blob: bytes, n: int, meta: dict[str, Any] | None) -> None:
        for attempt in range(5):
            try:
                self._db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, blob, _digest(key, blob), n, canonical_json(meta or {}, default=str), time.time()))
                return
            except sqlite3.OperationalError as e:  # "database is locked" beyond busy_timeout
                if attempt == 4:
                    raise StoreError(format_error("cannot write the results store", where=str(self.path),
                                                  got=str(e), fix="retry; if it persists delete the file")) from e
                time.sleep(0.2 * (attempt + 1))

    def delete(self, key: str) -> None:
        """Remove one entry (no error if absent)."""
        self._db.execute("DELETE FROM predictions WHERE key=?", (key,))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def __bool__(self) -> bool:
        # an open store is truthy even when empty (else ``if store:`` would skip every read and write)
        return True

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
