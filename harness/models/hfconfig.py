"""Read a checkpoint's ``config.json`` through transformers, with the harness's own model types registered.

Every path that opens a full checkpoint (``eval``/``sweep`` loading, ``blend`` streaming, causal LMs) reads its
config here, so a model type the harness defines (``harness_mean_pooling``, written by ``harness train --method
lpft`` and the sentence demo) is known everywhere, and a type nobody knows gets one full, honest message.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.errors import ModelError, format_error

__all__ = ["read_config"]

log = logging.getLogger(__name__)


def _declared_type(path: Path) -> tuple[str | None, bool]:
    """(``model_type`` from config.json, whether it declares its own code in ``auto_map``); (None, False) when
    the file cannot be read as JSON (transformers' own message then says why)."""
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, False
    if not isinstance(raw, dict):
        return None, False
    return (str(raw["model_type"]) if "model_type" in raw else None), bool(raw.get("auto_map"))


def _fix(path: Path, msg: str, trust_remote_code: bool) -> str:
    """The fix line of an unreadable config: what is actually missing (an unknown type, remote code, bad JSON)."""
    import transformers
    from transformers import CONFIG_MAPPING

    from harness.models.pooling import MODEL_TYPE

    mtype, has_code = _declared_type(path)
    if mtype is not None and mtype not in CONFIG_MAPPING:
        if has_code and not trust_remote_code:
            code = ("its config.json declares its own code (auto_map): pass --trust-remote-code only if you trust "
                    "that code")
        elif has_code:
            code = "its own code (auto_map in config.json) did not register the type even with --trust-remote-code"
        else:
            code = "it ships no model code of its own (no auto_map in config.json), so --trust-remote-code cannot help"
        return (f"model type {mtype!r} is one transformers {transformers.__version__} does not know and the harness "
                f"does not register (the harness registers {MODEL_TYPE!r}); {code}; to load it, install a transformers "
                f"version that has {mtype!r}, or correct model_type in config.json if it is a typo")
    if "trust_remote_code" in msg and not trust_remote_code:
        return "pass --trust-remote-code only if you trust this checkpoint's code"
    return "check config.json (valid JSON with a model_type transformers knows)"


def read_config(path: str | Path, trust_remote_code: bool = False) -> Any:
    """``AutoConfig.from_pretrained(path)`` after :func:`harness.register`.

    Parameters
    ----------
    path : str or Path
        A local checkpoint folder holding ``config.json``.
    trust_remote_code : bool, default=False
        Passed to transformers (runs code shipped with the checkpoint).

    Returns
    -------
    transformers.PretrainedConfig

    Raises
    ------
    ModelError
        The config cannot be read: the message carries transformers' whole text (never cut) and a fix naming the
        real limit (a model type transformers does not know and the harness does not register, remote code, JSON).
    """
    from transformers import AutoConfig

    from harness.models.pooling import register

    register()
    path = Path(path)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:  # OSError: transformers' "not a valid JSON file"
        msg = " ".join(str(e).split())
        raise ModelError(format_error("cannot read the model config", where=str(path), got=msg,
                                      fix=_fix(path, msg, trust_remote_code))) from e
