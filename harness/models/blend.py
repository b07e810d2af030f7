"""Stage 4b: weight-space interpolation (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models").

``theta(alpha) = (1 - alpha) * theta_base + alpha * theta_adapted``; alpha is the fraction of adapted weights
(0 = base, 1 = adapted). :func:`interpolate` defines the semantics as a pure function over state dicts;
:class:`BlendEngine` writes the same values into a live model in place (no reload, no reallocation per alpha) and
tests check the two agree bit for bit.

Rules: floating-point parameters and buffers are interpolated with ``torch.lerp`` in fp32 (exact at both
endpoints) and cast back to the storage dtype; integer and bool buffers (``position_ids``, ``token_type_ids``,
``num_batches_tracked``) are copied and must be equal; tied weights are blended once; differing key sets, shapes
or dtypes and non-finite values raise :class:`~harness.errors.BlendError` naming the first offending tensor.
With ``head="adapted"`` the classification head is taken from the adapted model at every alpha and only the
shared backbone is interpolated (the WiSE-FT authors' suggestion when the head is new).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from harness.errors import BlendError, format_error
from harness.records import canonical_alpha

__all__ = ["HEAD_MODES", "head_keys", "check_compatible", "interpolate", "resize_head", "BlendEngine"]

log = logging.getLogger(__name__)
HEAD_MODES = ("shared", "adapted")
_HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.", "head.", "classification_head.")


def head_keys(keys, base_model_prefix: str | None = None) -> set[str]:
    """The classification-head tensors among ``keys``: those outside ``base_model_prefix`` (e.g. ``bert.``,
    ``encoder.``) when given, else those under a known head prefix (``classifier.``, ``score.``, ...)."""
    keys = list(keys)
    if base_model_prefix and any(k.startswith(base_model_prefix + ".") for k in keys):
        return {k for k in keys if not k.startswith(base_model_prefix + ".")}
    return {k for k in keys if k.startswith(_HEAD_PREFIXES)}


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def check_compatible(base: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor],
                     skip: set[str] = frozenset()) -> None:
    """Check two state dicts can be interpolated: same keys, shapes, dtypes; equal integer buffers.

    Raises
    ------
    BlendError
        Naming the first offending tensor, both values, and the fix (e.g. ``--head adapted`` for a head with a
        different number of labels, or a resized vocabulary).
    """
    bk, ak = set(base), set(adapted)
    if bk != ak:
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
    for k in sorted(bk):
        if k in skip:
            continue
        b, a = base[k], adapted[k]
        if b.shape != a.shape:
            fix = "blend checkpoints of the same architecture"
            if "embed" in k and b.dim() == 2 and b.shape[1:] == a.shape[1:]:
                fix = (f"the vocabulary was resized (base {b.shape[0]} rows, adapted {a.shape[0]}); resize the "
                       "base's embeddings the same way before blending")
            elif k in head_keys([k]):
                fix = ("the heads differ in number of labels; use --head adapted to keep the adapted head and "
                       "interpolate only the shared backbone")
            raise BlendError(format_error("tensor shapes differ", where=k, expected=tuple(b.shape),
                                          got=tuple(a.shape), fix=fix))
        if b.dtype != a.dtype:
            raise BlendError(format_error("tensor dtypes differ", where=k, expected=str(b.dtype), got=str(a.dtype),
                                          fix="load both models with the same --dtype"))
        if not _is_float(b) and not torch.equal(b, a):
            raise BlendError(format_error("integer buffer differs between base and adapted", where=k,
                                          fix="integer buffers (e.g. position_ids) cannot be interpolated; make "
                                              "them equal"))


def _check_finite(name: str, t: torch.Tensor, which: str) -> None:
    if _is_float(t) and not bool(torch.isfinite(t).all()):
        raise BlendError(format_error(f"{which} weights hold NaN or infinite values", where=name,
                                      fix=f"fix the {which} checkpoint; non-finite weights cannot be blended"))


def interpolate(base: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor], alpha: float, *,
                head: str = "shared", head_names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The blend ``(1 - alpha) * base + alpha * adapted`` over state dicts; the reference semantics.

    Parameters
    ----------
    base, adapted : Mapping[str, torch.Tensor]
        State dicts of one architecture. Never modified.
    alpha : float
        Fraction of adapted weights in [0, 1] (canonicalised to 6 decimals).
    head : {"shared", "adapted"}, default="shared"
        ``adapted``: tensors in ``head_names`` come from ``adapted`` unchanged at every alpha.
    head_names : set of str, default=None
        Head tensor names (default: :func:`head_keys`).

    Returns
    -------
    dict[str, torch.Tensor]
        New tensors, each with the storage dtype of the input; floating tensors computed as
        ``torch.lerp(base.float(), adapted.float(), alpha)`` (exact at alpha 0 and 1).

    Raises
    ------
    BlendError
        Different keys, shapes, dtypes or integer buffers, non-finite weights, or alpha outside [0, 1].
    """
    try:
        alpha = canonical_alpha(alpha)
    except ValueError as e:
        raise BlendError(str(e)) from e
    if head not in HEAD_MODES:
        raise BlendError(format_error("unknown head mode", where="--head", expected=HEAD_MODES, got=head))
    heads = (head_names if head_names is not None else head_keys(base)) if head == "adapted" else set()
    check_compatible(base, adapted, skip=heads)
    out: dict[str, torch.Tensor] = {}
    for k, b in base.items():
        a = adapted[k]
        if k in heads:
            _check_finite(k, a, "adapted")
            out[k] = a.clone()
        elif _is_float(b):
            _check_finite(k, b, "base")
            _check_finite(k, a, "adapted")
            out[k] = torch.lerp(b.float(), a.float(), alpha).to(b.dtype)
        else:
            out[k] = b.clone()
    return out


def _check_tied(model: torch.nn.Module, base: Mapping[str, torch.Tensor],
                adapted: Mapping[str, torch.Tensor]) -> None:
    """Tied tensors are written once, so every alias must hold the same values in both state dicts."""
    first: dict[int, str] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        owner = first.setdefault(id(t), name)
        if owner == name or name not in base or owner not in base:
            continue
        for which, sd in (("base", base), ("adapted", adapted)):
            if not torch.equal(sd[owner], sd[name]):
                raise BlendError(format_error(f"{name!r} is tied to {owner!r} in the model but the {which} "
                                              "weights differ", where=name,
                                              fix="blend checkpoints saved with the same weight tying "
                                                  "(tie_word_embeddings) as the live model"))


def resize_head(model: torch.nn.Module, name: str, target: torch.Tensor, value: torch.Tensor) -> None:
    """Give the live model's head tensor ``name`` the adapted head's shape (``head="adapted"`` only)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    with torch.no_grad():
        target.data = torch.empty_like(value)  # same Parameter object, storage of the adapted head's shape
    if isinstance(module, torch.nn.Linear) and attr == "weight":
        module.out_features, module.in_features = value.shape
    log.info("the live model's head tensor %s now has the adapted head's shape %s", name, tuple(value.shape))


@dataclass
class _Group:
    """Blendable tensors of one (device, dtype): fp32 flat copies of base and adapted, and the flat storage the
    live model's tensors now view (so one fused ``lerp`` kernel writes a whole blend)."""

    names: list[str]
    sizes: list[int]
    base: torch.Tensor
    adapted: torch.Tensor
    target: torch.Tensor


def _flatten(items: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]) -> _Group:
    """Pack (name, live tensor, base, adapted) into flat buffers and re-point the live tensors into them."""
    t0 = items[0][1]
    n = sum(t.numel() for _, t, _, _ in items)
    base = torch.empty(n, dtype=torch.float32, device=t0.device)
    adapted = torch.empty_like(base)
    target = torch.empty(n, dtype=t0.dtype, device=t0.device)
    offset = 0
    with torch.no_grad():
        for _, t, b, a in items:
            k = t.numel()
            base[offset:offset + k].copy_(b.reshape(-1))
            adapted[offset:offset + k].copy_(a.reshape(-1))
            view = target[offset:offset + k]
            view.copy_(t.reshape(-1))
            t.data = view.view(t.shape)  # same Parameter/buffer object, storage inside the flat buffer
            offset += k
    return _Group([name for name, _, _, _ in items], [t.numel() for _, t, _, _ in items], base, adapted, target)


_CHUNK = 1 << 20  # elements per chunk of a reduced-precision blend on CPU (4 MB of fp32 scratch)


class BlendEngine:
    """Writes blends into a live model in place, keeping fp32 copies of base and adapted weights on its device.

    The blendable tensors of each (device, dtype) are packed once into flat buffers; the live model's parameters
    become views into the flat target, and :meth:`apply` is one fused ``torch.lerp(base, adapted, alpha,
    out=target)`` per group: it reads 8 bytes and writes 4 (fp32) or 2 (bf16/fp16) per weight, the minimum for
    this blend. On CPU, a bf16/fp16 target is written in 1M-element chunks through a 4 MB fp32 scratch buffer
    (lerp with a casting output would otherwise go through a full-size temporary: 33 ms vs 8 ms for MiniLM).

    Memory: two fp32 flat copies of the blendable weights plus the live model: about three copies of the weights
    (fp32 model), less with a bf16 model.

    Parameters
    ----------
    model : torch.nn.Module
        The live model (its structure matches both state dicts); it is overwritten by :meth:`apply`. With
        ``head="adapted"`` a head tensor of another shape (another number of labels) is given the adapted head's
        shape once, here.
    base, adapted : Mapping[str, torch.Tensor]
        State dicts (any device/dtype); validated with :func:`check_compatible` and for finiteness.
    head : {"shared", "adapted"}, default="shared"
        See :func:`interpolate`.

    Raises
    ------
    BlendError
        If the state dicts are incompatible, non-finite, or do not cover the model's tensors.
    """

    def __init__(self, model: torch.nn.Module, base: Mapping[str, torch.Tensor],
                 adapted: Mapping[str, torch.Tensor], *, head: str = "shared") -> None:
        if head not in HEAD_MODES:
            raise BlendError(format_error("unknown head mode", where="--head", expected=HEAD_MODES, got=head))
        self.model = model
        self.head = head
        prefix = getattr(model, "base_model_prefix", None)
        self.head_names = head_keys(base, prefix) if head == "adapted" else set()
        check_compatible(base, adapted, skip=self.head_names)
        live = dict(model.named_parameters())  # remove_duplicate=True: tied weights appear once
        # persistent buffers only: non-persistent ones (e.g. position_ids) are not weights and stay as they are
        live.update({k: v for k, v in model.named_buffers() if k in base})
        missing = sorted(k for k in live if k not in base)
        if missing:
            raise BlendError(format_error("the state dicts do not cover the model's tensors", where=missing[0],
                                          fix="pass state dicts of this architecture"))
        _check_tied(model, base, adapted)
        groups: dict[tuple, list] = {}
        self._fixed: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, target in live.items():
            b, a = base[name], adapted[name]
            if name in self.head_names:
                _check_finite(name, a, "adapted")
                value = a.detach().to(target.device, target.dtype)
                if target.shape != value.shape:  # a new head (e.g. another number of labels): adopt its shape once
                    resize_head(model, name, target, value)
                self._fixed.append((target, value))
            elif _is_float(target):
                _check_finite(name, b, "base")
                _check_finite(name, a, "adapted")
                groups.setdefault((target.device, target.dtype), []).append(
                    (name, target, b.detach().to(target.device), a.detach().to(target.device)))
            else:
                self._fixed.append((target, b.detach().to(target.device, target.dtype)))
        self._groups = [_flatten(items) for items in groups.values()]
        self.alpha: float | None = None
        self._scratch_buf: torch.Tensor | None = None

    @torch.no_grad()
    def apply(self, alpha: float) -> None:
        """Make the live model the blend at ``alpha`` (same values as :func:`interpolate`, bit for bit)."""
        try:
            alpha = canonical_alpha(alpha)
        except ValueError as e:
            raise BlendError(str(e)) from e
        for g in self._groups:
            if g.target.dtype == torch.float32 or g.target.device.type != "cpu":
                torch.lerp(g.base, g.adapted, alpha, out=g.target)
            else:  # CPU: a cast inside lerp goes through a full-size temporary; chunks keep it in cache (4x faster)
                scratch = self._scratch(g.target.device)
                for i in range(0, g.target.numel(), _CHUNK):
                    j = min(i + _CHUNK, g.target.numel())
                    torch.lerp(g.base[i:j], g.adapted[i:j], alpha, out=scratch[:j - i])
                    g.target[i:j].copy_(scratch[:j - i])
        for target, value in self._fixed:
            target.copy_(value)
        self.alpha = alpha

    @torch.no_grad()
    def changed_names(self) -> set[str]:
        """Names of the tensors whose blend depends on alpha: base and adapted differ (exact comparison of the fp32
        copies), plus heads taken from the adapted model. Every other tensor has its base value at every alpha
        (``lerp(w, w, alpha) == w`` exactly), which :mod:`harness.models.trunk` relies on."""
        out = set(self.head_names)
        for g in self._groups:
            offset = 0
            for name, n in zip(g.names, g.sizes):
                if not torch.equal(g.base[offset:offset + n], g.adapted[offset:offset + n]):
                    out.add(name)
                offset += n
        return out

    def _scratch(self, device: torch.device) -> torch.Tensor:
        if self._scratch_buf is None:
            self._scratch_buf = torch.empty(_CHUNK, dtype=torch.float32, device=device)
        return self._scratch_buf

    @property
    def n_params(self) -> int:
        """Number of interpolated weights."""
        return sum(g.base.numel() for g in self._groups)

    def bytes_per_apply(self) -> int:
        """Bytes one :meth:`apply` moves through memory: reads of both fp32 copies plus the write of the target."""
        return sum(g.base.numel() * (8 + g.target.element_size()) for g in self._groups)

    @property
    def n_bytes(self) -> int:
        """Bytes held by the engine's fp32 copies of base and adapted."""
        return sum(g.base.numel() * 8 for g in self._groups)
