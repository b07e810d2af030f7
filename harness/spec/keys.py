"""The keys a spec model accepts at a field path: what an "unknown key" message lists, with the closest one.

Walks the pydantic field annotations along a validation error's ``loc`` (lists and tuples by index, dicts by key,
unions by member: a tagged member by its tag value or class name, else the first member that has the field).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any

from pydantic import BaseModel

__all__ = ["keys_at", "unknown_key_message"]


def _members(t: Any) -> list[Any]:
    """``t`` without ``Annotated``/``Optional``/``Union`` wrappers: the member types."""
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _members(typing.get_args(t)[0])
    if origin is typing.Union or type(t).__name__ == "UnionType":
        return [m for a in typing.get_args(t) for m in _members(a)]
    return [t]


def _is_model(t: Any) -> bool:
    return inspect.isclass(t) and issubclass(t, BaseModel)


def _tagged(m: type[BaseModel], tag: str) -> bool:
    if m.__name__ == tag:
        return True
    for f in m.model_fields.values():
        if typing.get_origin(f.annotation) is typing.Literal and tag in typing.get_args(f.annotation):
            return True
    return False


def _step(t: Any, part: Any) -> Any:
    members = _members(t)
    models = [m for m in members if _is_model(m)]
    if isinstance(part, str):
        tagged = [m for m in models if _tagged(m, part) and part not in m.model_fields]
        if len(models) > 1 and tagged:
            return tagged[0]  # a union's member named in the path: stay on it
        for m in models:
            if part in m.model_fields:
                return m.model_fields[part].annotation
    for m in members:
        origin, args = typing.get_origin(m), typing.get_args(m)
        if origin in (list, tuple, set, frozenset) and isinstance(part, int) and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
    return None


def keys_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys accepted by the mapping at ``loc`` (a pydantic error location) of ``model``; None if unknown."""
    t: Any = model
    for part in loc:
        t = _step(t, part)
        if t is None:
            return None
    models = [m for m in _members(t) if _is_model(m)]
    if len(models) != 1:
        return None
    return sorted(f.alias or name for name, f in models[0].model_fields.items())


def unknown_key_message(model: type[BaseModel] | None, loc: tuple) -> str:
    """``unknown key 'min' (typo? closest: 'min_n'); valid keys here: ...`` for an ``extra_forbidden`` error."""
    key = str(loc[-1]) if loc else "?"
    valid = keys_at(model, tuple(loc[:-1])) if model is not None else None
    if not valid:
        return f"unknown key {key!r} (typo? remove it or check the schema in suites/README.md)"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
    hint = f"typo? closest valid key: {close[0]!r}" if close else "typo?"
    return f"unknown key {key!r} ({hint}); valid keys here: {', '.join(valid)}"
