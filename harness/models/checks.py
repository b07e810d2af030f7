"""The checks every blend goes through, whichever command asked for it (``sweep``, ``blend``, the API).

One function, :func:`validate_pair`, decides whether two state dicts can be interpolated: the same key sets, shapes
and dtypes, equal integer buffers, finite floating-point weights, and tied tensors (aliases of one storage) that hold
the same values. :class:`harness.models.blend.BlendEngine`, :func:`harness.models.blend.interpolate` and the
streaming writer :mod:`harness.models.blend_stream` all call it; the streaming writer checks names, shapes and
dtypes from the safetensors headers first (``values=False`` with :class:`TensorMeta` entries) and the values of each
tensor as it reads it (:func:`check_values`), so a bad tensor in the last shard fails before the output folder
is put in place.

Every error is a :class:`~harness.errors.BlendError` naming the first offending tensor (sorted key order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from harness.errors import BlendError, format_error

__all__ = ["TensorMeta", "HEAD_PREFIXES", "is_float", "head_keys", "check_keys", "check_meta", "check_values",
           "check_finite", "check_ties", "alias_groups", "validate_pair", "check_compatible"]

log = logging.getLogger(__name__)
HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.", "head.", "classification_head.")


@dataclass(frozen=True)
class TensorMeta:
    """Name-free description of a tensor not read yet (from a safetensors header): shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def dim(self) -> int:
        return len(self.shape)


def is_float(t: torch.Tensor | TensorMeta) -> bool:
    """True for floating-point (and complex) tensors or metadata: the ones that are interpolated."""
    return t.dtype.is_floating_point or t.dtype.is_complex


def head_keys(keys: Iterable[str], base_model_prefix: str | None = None) -> set[str]:
    """The classification-head tensors among ``keys``: those outside ``base_model_prefix`` (e.g. ``bert.``,
    ``encoder.``) when given, else those under a known head prefix (``classifier.``, ``score.``, ...)."""
    keys = list(keys)
    if base_model_prefix and any(k.startswith(base_model_prefix + ".") for k in keys):
        return {k for k in keys if not k.startswith(base_model_prefix + ".")}
    return {k for k in keys if k.startswith(HEAD_PREFIXES)}


def check_keys(base_keys: Iterable[str], adapted_keys: Iterable[str]) -> None:
    """Both sides name the same tensors.

    Raises
    ------
    BlendError
        Listing a few names only in each side, with a hint for wrapper prefixes (``module.``,
        ``base_model.model.``).
    """
    bk, ak = set(base_keys), set(adapted_keys)
    if bk == ak:
        return
    only_b, only_a = sorted(bk - ak), sorted(ak - bk)
    hint = ""
    if any(k.startswith(("module.", "base_model.model.")) for k in only_a):
        hint = " (the adapted keys carry a wrapper prefix such as 'module.' or 'base_model.model.': save the " \
               "unwrapped model, or pass a PEFT adapter folder as --adapted)"
    raise BlendError(format_error("base and adapted models have different parameter names" + hint,
                                  where=f"{len(only_b)} only in base, {len(only_a)} only in adapted",
                                  expected="the same architecture", got=f"only in base: {only_b[:3]}; "
                                  f"only in adapted: {only_a[:3]}",
                                  fix="blend checkpoints of the same architecture"))


def check_meta(name: str, b: torch.Tensor | TensorMeta, a: torch.Tensor | TensorMeta) -> None:
    """Same shape and dtype (tensors or header metadata).

    Raises
    ------
    BlendError
        Naming the tensor, both shapes or dtypes, and the fix (``--head adapted`` for a head with another number of
        labels; a resized vocabulary is explained).
    """
    if tuple(b.shape) != tuple(a.shape):
        fix = "blend checkpoints of the same architecture"
        if "embed" in name and b.dim() == 2 and tuple(b.shape[1:]) == tuple(a.shape[1:]):
            fix = (f"the vocabulary was resized (base {b.shape[0]} rows, adapted {a.shape[0]}); resize the "
                   "base's embeddings the same way before blending, or use `harness blend`, which keeps the "
                   "added rows of a fine-tune whose tokenizer extends the base's")
        elif name in head_keys([name]):
            fix = ("the heads differ in number of labels; use --head adapted to keep the adapted head and "
                   "interpolate only the shared backbone")
        raise BlendError(format_error("tensor shapes differ", where=name, expected=tuple(b.shape),
                                      got=tuple(a.shape), fix=fix))
    if b.dtype != a.dtype:
        raise BlendError(format_error("tensor dtypes differ", where=name, expected=str(b.dtype), got=str(a.dtype),
                                      fix="load both models with the same --dtype"))


def check_finite(name: str, t: torch.Tensor, which: str) -> None:
    """A floating tensor holds no NaN or infinity.

    Raises
    ------
    BlendError
        Naming the tensor and which side (``base``/``adapted``) it came from.
    """
    if is_float(t) and not bool(torch.isfinite(t).all()):
        raise BlendError(format_error(f"{which} weights hold NaN or infinite values", where=name,
                                      fix=f"fix the {which} checkpoint; non-finite weights cannot be blended"))


def check_values(name: str, b: torch.Tensor | None, a: torch.Tensor | None, result: torch.Tensor | None = None
                 ) -> None:
    """Value checks of one tensor pair: integer buffers equal, floating weights finite (``None`` skips a side).

    ``result`` (optional) is the blend computed from them: a NaN or infinity in either input makes it non-finite
    (``lerp`` propagates them at every alpha, 0 and 1 included), so when its sum is finite the inputs are too and
    the elementwise checks are skipped (one reduction instead of two ``isfinite`` passes; a non-finite sum, e.g.
    an overflow, falls back to the elementwise checks).

    Raises
    ------
    BlendError
        For a differing integer buffer or a non-finite weight.
    """
    ref = b if b is not None else a
    if ref is None:
        return
    if not is_float(ref):
        if b is not None and a is not None and not torch.equal(b, a):
            raise BlendError(format_error("integer buffer differs between base and adapted", where=name,
                                          fix="integer buffers (e.g. position_ids) cannot be interpolated; make "
                                              "them equal"))
        return
    if result is not None and bool(torch.isfinite(result.sum())):
        return
    if b is not None:
        check_finite(name, b, "base")
    if a is not None:
        check_finite(name, a, "adapted")


def alias_groups(model: torch.nn.Module) -> list[list[str]]:
    """Names that share one storage (tied weights), one list per storage with two or more names, in
    ``named_parameters`` / ``named_buffers`` order (first name first). Works on a meta-device model."""
    by_id: dict[int, list[str]] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        by_id.setdefault(id(t), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def check_ties(groups: Iterable[list[str]], base: Mapping[str, torch.Tensor],
               adapted: Mapping[str, torch.Tensor]) -> None:
    """Tied tensors are written once, so every alias present in a state dict must hold its owner's values.

    Raises
    ------
    BlendError
        Naming the alias whose values differ and pointing at ``tie_word_embeddings``.
    """
    for names in groups:
        owner = names[0]
        for name in names[1:]:
            for which, sd in (("base", base), ("adapted", adapted)):
                if owner in sd and name in sd and not torch.equal(sd[owner], sd[name]):
                    raise BlendError(format_error(
                        f"{name!r} is tied to {owner!r} in the model but the {which} weights differ", where=name,
                        fix="blend checkpoints saved with the same weight tying (tie_word_embeddings) as the live "
                            "model; `harness blend` handles a tied base with an untied fine-tune (and the reverse)"))


def check_compatible(base: Mapping[str, torch.Tensor | TensorMeta], adapted: Mapping[str, torch.Tensor | TensorMeta],
                     skip: Iterable[str] = frozenset()) -> None:
    """Same keys, shapes, dtypes, and equal integer buffers (``skip``: names exempt from shape/value checks, e.g.
    heads taken from the adapted model). Non-finite values are checked by :func:`validate_pair`.

    Raises
    ------
    BlendError
        Naming the first offending tensor, both values, and the fix.
    """
    validate_pair(base, adapted, skip=skip, finite=False)


def validate_pair(base: Mapping[str, torch.Tensor | TensorMeta], adapted: Mapping[str, torch.Tensor | TensorMeta], *,
                  skip: Iterable[str] = frozenset(), groups: Iterable[list[str]] = (), values: bool = True,
                  finite: bool = True) -> None:
    """The one check of a blend's inputs, shared by every command.

    Parameters
    ----------
    base, adapted : Mapping[str, torch.Tensor or TensorMeta]
        State dicts (or header metadata when ``values=False``). Never modified.
    skip : iterable of str
        Names whose shapes may differ and whose base value is not used (``head="adapted"``); their adapted value is
        still checked for finiteness.
    groups : iterable of list of str
        Tied names (:func:`alias_groups`); aliases present in a state dict must equal their owner.
    values : bool, default=True
        Also check values (integer buffers equal, floats finite, ties); False for header-only metadata.
    finite : bool, default=True
        Check floating weights for NaN/inf (only with ``values``).

    Raises
    ------
    BlendError
        Naming the first offending tensor in sorted key order: different key sets, shapes, dtypes, integer
        buffers, non-finite weights (key order, base before adapted), or tied aliases with other values.
    """
    skip = set(skip)
    check_keys(base, adapted)
    for k in sorted(base):
        if k not in skip:
            check_meta(k, base[k], adapted[k])
            if values and not is_float(base[k]):
                check_values(k, base[k], adapted[k])
    if values and finite:
        for k in base:
            check_values(k, None if k in skip else base[k], adapted[k])
    if values:
        check_ties(groups, base, adapted)
