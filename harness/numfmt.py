"""Numbers as text: the one formatter behind every number the gate, the CLI and the report print.

Python's ``format`` keeps the sign of negative zero (``f"{-0.0:.3f}"`` is ``"-0.000"``) and of a small negative
number that rounds to zero (``f"{-0.0004:.3f}"`` is ``"-0.000"``). A gate threshold of ``-max_drop`` with
``max_drop: 0`` is exactly ``-0.0``, and "threshold -0.000" reads as a bug. These helpers round first and add
``0.0``, which turns ``-0.0`` into ``0.0``, so zero always prints unsigned (``0.000``) or, where a sign is asked
for, as ``+0.000``.

Shared module: imports nothing from the harness, so any stage may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["NA", "is_finite_number", "fmt_num", "fmt_g"]

NA = "n/a"


def is_finite_number(v: Any) -> bool:
    """True for an ``int`` or ``float`` (numpy scalars included, ``bool`` excluded) that is finite."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def fmt_num(v: Any, digits: int = 3, *, signed: bool = False, missing: str = NA) -> str:
    """Fixed-point text of a number with ``digits`` decimals, never ``-0.000``.

    Parameters
    ----------
    v : float or None
        The number; ``None``, NaN, an infinity or a non-number prints as ``missing``.
    digits : int, default=3
        Decimals.
    signed : bool, default=False
        Always print the sign (``+0.021``, ``-0.004``, ``+0.000``), as for a difference or a margin.
    missing : str, default="n/a"
        Text for a missing value (the gate's tables use ``-``).

    Returns
    -------
    str
        ``0.873``; ``-0.0`` and ``-0.0004`` print as ``0.000`` (``+0.000`` when ``signed``).
    """
    if not is_finite_number(v):
        return missing
    x = round(float(v), digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_g(v: Any, missing: str = NA) -> str:
    """``format(v, "g")`` without the sign of negative zero (``-0.0`` prints ``0``); ``missing`` for ``None``.

    NaN and infinities print as Python does (``nan``, ``inf``) since ``g`` is used for settings and parameters,
    where such a value should be shown as given.
    """
    if v is None or isinstance(v, bool):
        return missing if v is None else str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x + 0.0:g}" if x == 0.0 else f"{x:g}"
