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


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class of the mapping at ``loc`` (a pydantic error location) of ``model``; None if unknown."""
    t: Any = model
    for part in loc:
        t = _step(t, part)
        if t is None:
            return None
    models = [m for m in _members(t) if _is_model(m)]
    return models[0] if len(models) == 1 else None


def keys_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys accepted by the mapping at ``loc`` (a pydantic error location) of ``model``; None if unknown."""
    m = _model_at(model, loc)
    return None if m is None else sorted(f.alias or name for name, f in m.model_fields.items())


def _described(m: type[BaseModel], keys: list[str]) -> str:
    """``'floor' (floor rules: value at least this) or 'min_delta' (...)``: each key with its field description."""
    def one(k: str) -> str:
        f = m.model_fields.get(k)
        return f"{k!r} ({f.description})" if f is not None and f.description else repr(k)
    return ", ".join(one(k) for k in keys[:-1]) + (" or " if len(keys) > 1 else "") + one(keys[-1])


def _meant(m: type[BaseModel], key: str, valid: list[str]) -> list[str]:
    """The valid keys that ``key`` could mean, from the model's ``keys_meant`` table (a word such as ``min``, or
    a misspelling of one, to the keys with that meaning), in the table's order."""
    table: dict[str, tuple[str, ...]] = getattr(m, "keys_meant", {})
    word = key.lower() if key.lower() in table else next(iter(difflib.get_close_matches(key.lower(), table, 1,
                                                                                          0.8)), None)
    return [k for k in table.get(word, ()) if k in valid] if word else []


def unknown_key_message(model: type[BaseModel] | None, loc: tuple) -> str:
    """The line for an ``extra_forbidden`` error: the unknown key, the keys it could mean with what each does,
    and the valid keys at its path.

    By meaning first: a model may declare ``keys_meant`` (a word to the keys it could mean: ``min`` -> ``floor``,
    ``min_delta`` in a gate rule), so that ``min:`` is not steered by spelling alone to ``min_n`` (a sample-size
    floor); a spelling match that means something else is named with its description. Without a meaning match:
    ``unknown key 'fromat' (typo? closest valid key: 'format'); valid keys here: ...``.
    """
    key = str(loc[-1]) if loc else "?"
    m = _model_at(model, tuple(loc[:-1])) if model is not None else None
    if m is None:
        return f"unknown key {key!r} (typo? remove it or check the schema in suites/README.md)"
    valid = keys_at(m, ())
    meant = _meant(m, key, valid)
    if meant:
        spelt = [k for k in difflib.get_close_matches(key, valid, n=2, cutoff=0.6) if k not in meant]
        other = f" Not {_described(m, spelt)}" if spelt else ""
        hint = f"did you mean {_described(m, meant)}?{other}"
    else:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
        hint = f"typo? closest valid key: {close[0]!r}" if close else "typo?"
    return f"unknown key {key!r} ({hint}); valid keys here: {', '.join(valid)}"
