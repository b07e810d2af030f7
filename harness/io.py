"""File-system helpers every stage may use: the cache root, atomic writes (temp file, fsync, rename), so every
file the harness writes appears whole or not at all, and the two content hashes (of a file, of canonical JSON)
behind every fingerprint and cache key."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from harness.errors import OutputError, format_error
from harness.settings import env

__all__ = ["cache_root", "atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_write_json",
           "ensure_dir", "canonical_json", "sha256_json", "sha256_file", "library_versions"]


def cache_root() -> Path:
    """The cache root: ``$HARNESS_CACHE`` or ``~/.cache/harness`` (created on first use)."""
    root = Path(env("HARNESS_CACHE") or Path.home() / ".cache" / "harness").expanduser()
    return ensure_dir(root)


def ensure_dir(path: str | Path) -> Path:
    """Create a folder (and parents) or raise :class:`OutputError` saying why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise OutputError(format_error("a file stands where a folder is needed", where=str(path),
                                       fix="remove the file or choose another path")) from e
    except OSError as e:
        raise OutputError(format_error("cannot create folder", where=str(path), got=e.strerror,
                                       fix="choose a writable location")) from e
    return path


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``.

    On any exception the temporary file is removed and ``target`` is untouched.

    Raises
    ------
    OutputError
        If the folder is not writable or the disk is full.
    """
    target = Path(target)
    ensure_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    except OSError as e:
        raise OutputError(format_error("cannot write output file", where=str(target), got=e.strerror,
                                       fix="choose a writable output folder")) from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise OutputError(format_error("cannot write output file", where=str(target), got=e.strerror,
                                       fix="free disk space or choose a writable output folder")) from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically; returns ``target``."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (NaN is refused: encode it as null first)."""
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=default)
                             + "\n")


def canonical_json(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``obj`` as canonical JSON: keys sorted, no whitespace (the text every content hash is taken of).

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default)


def sha256_json(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``obj`` (UTF-8): spec hashes, cache and store keys.

    >>> sha256_json({"a": 1}) == sha256_json({"a": 1}) != sha256_json({"a": 2})
    True
    """
    return hashlib.sha256(canonical_json(obj, default).encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks.

    Raises
    ------
    OSError
        If the file cannot be read (callers word the error for their stage).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of harness, Python and the installed libraries that can change a result (those not installed are
    left out), for run manifests and training records."""
    import importlib.metadata as md

    from harness import __version__

    out = {"harness": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "datasets", "numpy", "pandas", "scikit-learn", "safetensors",
                "pydantic", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
