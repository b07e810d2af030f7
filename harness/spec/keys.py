"""The keys a spec model accepts at a field path: what an "unknown key" message lists, with the closest one.

Walks the pydantic field annotations along a validation error's ``loc`` (lists and tuples by index, dicts by key,
unions by member: a tagged member by its tag value or class name, else the first member that has the field).
"""

from __future__ import annotations

import difflib
import inspect
import re
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


def _keys(m: type[BaseModel]) -> dict[str, Any]:
    """Key as written in a spec (the field's alias, else its name) -> its ``FieldInfo``."""
    return {f.alias or name: f for name, f in m.model_fields.items()}


def keys_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys accepted by the mapping at ``loc`` (a pydantic error location) of ``model``; None if unknown."""
    m = _model_at(model, loc)
    return None if m is None else sorted(_keys(m))


def _described(m: type[BaseModel], keys: list[str]) -> str:
    """``'floor' (floor rules: value at least this) or 'min_delta' (...)``: each key with its field description."""
    fields = _keys(m)

    def one(k: str) -> str:
        f = fields.get(k)
        return f"{k!r} ({f.description})" if f is not None and f.description else repr(k)
    return ", ".join(one(k) for k in keys[:-1]) + (" or " if len(keys) > 1 else "") + one(keys[-1])


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _meant(m: type[BaseModel], key: str) -> tuple[list[str], float]:
    """(the keys ``key`` could mean, from the model's ``keys_meant`` table (a word such as ``min``, or a
    misspelling of one, to the field names or keys with that meaning), in the table's order; how close ``key``
    is to that word: 1.0 when it is exactly the word)."""
    table: dict[str, tuple[str, ...]] = getattr(m, "keys_meant", {})
    word = key.lower()
    if word not in table:
        word = next(iter(difflib.get_close_matches(word, table, 1, 0.8)), None)
    if word is None:
        return [], 0.0
    as_key = {name: f.alias or name for name, f in m.model_fields.items()}  # a field name to its spec key
    valid = _keys(m)
    meant = [k for k in dict.fromkeys(as_key.get(k, k) for k in table[word]) if k in valid]
    return meant, _ratio(key.lower(), word)


# how pydantic names a union's member in an error's path (not a key of the spec)
_UNION_TAG = re.compile(r"(tagged-union|union|nullable|literal|function-(after|before|wrap|plain))\[")


def unknown_key_message(model: type[BaseModel] | None, loc: tuple) -> str:
    """The line for an ``extra_forbidden`` error: the unknown key, the keys it could mean with what each does,
    and the valid keys at its path.

    By meaning first: a model may declare ``keys_meant`` (a word to the keys it could mean: ``min`` -> ``floor``,
    ``min_delta`` in a gate rule), so that ``min:`` is not steered by spelling alone to ``min_n`` (a sample-size
    floor). When the key is exactly such a word, a spelling match that means something else is named as what it
    is not (``Not 'min_n' (...)``); when it only resembles one and is spelt closer to a valid key (``minn``), that
    key is offered too (``or by spelling 'min_n' (...)``). Without a meaning match:
    ``unknown key 'fromat' (typo? closest valid key: 'format'); valid keys here: ...``.
    """
    key = str(loc[-1]) if loc else "?"
    # pydantic names a union's member in the path (``tagged-union[...]``, ``function-after[...]``): not a key
    loc = tuple(p for p in loc[:-1] if not (isinstance(p, str) and _UNION_TAG.match(p)))
    m = _model_at(model, loc) if model is not None else None
    if m is None:
        return f"unknown key {key!r} (typo? remove it or check the schema in suites/README.md)"
    valid = keys_at(m, ())
    meant, closeness = _meant(m, key)
    if meant:
        spelt = [k for k in difflib.get_close_matches(key, valid, n=2, cutoff=0.6) if k not in meant]
        if closeness == 1.0:  # exactly a word of that meaning: a key merely spelt alike is not what it means
            hint = f"did you mean {_described(m, meant)}?" + (f" Not {_described(m, spelt)}" if spelt else "")
        else:
            spelt = [k for k in spelt[:1] if _ratio(key.lower(), k.lower()) >= closeness]
            hint = f"did you mean {_described(m, meant)}" + (
                f", or by spelling {_described(m, spelt)}?" if spelt else "?")
    else:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.4)
        hint = f"typo? closest valid key: {close[0]!r}" if close else "typo?"
    return f"unknown key {key!r} ({hint}); valid keys here: {', '.join(valid)}"
