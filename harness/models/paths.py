"""Check that a model argument names something that exists, before any data or model is loaded.

A local path that does not exist fails at once (with near matches from its parent folder); a string that reads as
a hub id (``org/name``) is left to the loader, which fetches it or, offline, fails with its own message.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from harness.errors import ModelError, format_error

__all__ = ["looks_like_hub_id", "check_model_path", "missing_model_error"]


def looks_like_hub_id(text: str) -> bool:
    """True for ``org/name`` strings that are not explicit paths (no leading ``.``, ``/`` or ``~``)."""
    return not text.startswith((".", "/", "~")) and text.count("/") == 1


def missing_model_error(text: str, where: str | None = None) -> ModelError:
    """The error for a local model path that does not exist, naming close siblings in its parent folder."""
    p = Path(text).expanduser()
    parent = p.parent
    close: list[str] = []
    if parent.is_dir():
        names = sorted(q.name for q in parent.iterdir())
        close = [str(parent / n) for n in difflib.get_close_matches(p.name, names, n=3, cutoff=0.6)]
    elif str(parent) not in ("", "."):
        return ModelError(format_error("model folder not found", where=f"{where}: {text}" if where else text,
                                       expected="an existing folder or a hub id such as org/name",
                                       got=f"its parent folder {parent} does not exist either",
                                       fix="check the path (relative paths start at the current directory, "
                                           f"{Path.cwd()})"))
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ModelError(format_error("model folder not found", where=f"{where}: {text}" if where else text,
                                   expected="an existing folder or a hub id such as org/name",
                                   fix=f"{hint}check the path"))


def check_model_path(name: str | Path | None, where: str) -> None:
    """Raise at once when ``name`` is a local path (not hub-id-looking) that does not exist.

    Parameters
    ----------
    name : str, Path or None
        A model argument (folder, file, or hub id); None is skipped.
    where : str
        The flag it came from, e.g. ``--base``.

    Raises
    ------
    ModelError
        If ``name`` does not exist locally and does not read as a hub id.
    """
    if name is None:
        return
    text = str(name)
    if Path(text).expanduser().exists() or looks_like_hub_id(text):
        return
    raise missing_model_error(text, where)
