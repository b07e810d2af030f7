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
from harness.models.checks import (alias_groups, check_compatible, head_keys, is_float,  # noqa: F401 (re-exported)
                                   validate_pair)
from harness.records import canonical_alpha

__all__ = ["HEAD_MODES", "head_keys", "check_compatible", "validate_pair", "interpolate", "resize_head",
           "BlendEngine"]

log = logging.getLogger(__name__)
HEAD_MODES = ("shared", "adapted")


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
    validate_pair(base, adapted, skip=heads)
    out: dict[str, torch.Tensor] = {}
    for k, b in base.items():
        a = adapted[k]
        if k in heads:
            out[k] = a.clone()
        elif is_float(b):
            out[k] = torch.lerp(b.float(), a.float(), alpha).to(b.dtype)
        else:
            out[k] = b.clone()
    return out


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
    """Blendable tensors of one (device, live dtype, reference dtype): flat copies of base and adapted in the
    state dicts' storage dtype, and the flat storage the live model's tensors now view (so one ``lerp`` per chunk
    writes a whole blend)."""

    names: list[str]
    sizes: list[int]
    base: torch.Tensor
    adapted: torch.Tensor
    target: torch.Tensor


def _flatten(items: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]) -> _Group:
    """Pack (name, live tensor, base, adapted) into flat buffers (references on the device of ``base``) and
    re-point the live tensors into them."""
    t0, b0 = items[0][1], items[0][2]
    n = sum(t.numel() for _, t, _, _ in items)
    # references in CPU memory for a model on an accelerator: pinned, so each apply streams them asynchronously
    pin = b0.device.type == "cpu" and t0.device.type == "cuda"
    base = torch.empty(n, dtype=b0.dtype, device=b0.device, pin_memory=pin)
    adapted = torch.empty(n, dtype=b0.dtype, device=b0.device, pin_memory=pin)
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


_CHUNK = 1 << 20  # elements per chunk of a reduced-precision blend on CPU (4 MB of fp32 scratch per operand)
_CHUNK_GPU = 1 << 24  # on an accelerator (64 MB of fp32 scratch per operand)


class BlendEngine:
    """Writes blends into a live model in place.

    The blendable tensors of each (device, dtype) are packed once into flat buffers holding base and adapted in
    their storage dtype (on that device: a model split over GPUs by a device map is blended in place on each) (fp32, bf16 or fp16); the live model's parameters become views into a flat target, and
    :meth:`apply` computes ``torch.lerp(base, adapted, alpha)`` in fp32 and writes the storage dtype. With fp32
    storage that is one fused ``lerp(..., out=target)``; with bf16/fp16 storage it runs in chunks (1M elements on
    CPU, 16M on an accelerator) through fp32 scratch buffers: the values are those of :func:`interpolate` bit for
    bit (a bf16 value converts to fp32 exactly, so fp32 references of bf16 weights would give the same bits).

    Tensors whose base and adapted values are equal (the same object, or equal values) are written once and not
    copied: ``lerp(w, w, alpha) == w`` exactly.

    With ``lora`` (a :class:`harness.models.lora_scale.LoraDelta` for a LoRA/rsLoRA adapter, whose merged weight is
    linear in the scale) the LoRA layers are injected into the live model and :meth:`apply` sets their scale to
    ``alpha * lora_alpha / r``: ``theta(alpha) = theta_base + alpha * delta_LoRA`` evaluated by peft's unmerged
    forward, so the engine holds one model plus the adapter factors; ``adapted`` then only needs the other
    tensors the adapter trained (``modules_to_save``, biases), which are interpolated as usual. :attr:`path` says
    which path is in use (``"lora-scale"`` or ``"merged"``).

    Memory (merged path): the live model plus base and adapted copies of the tensors that differ, in their storage
    dtype: about three copies of the weights for a full fine-tune with the references beside the model; with
    ``reference_device="cpu"`` and a model on a GPU the GPU holds one copy plus two scratch buffers and the
    references sit in pinned CPU memory (each :meth:`apply` streams them: 2 x weight bytes over the bus).

    Parameters
    ----------
    model : torch.nn.Module
        The live model (its structure matches both state dicts); it is overwritten by :meth:`apply`. With
        ``head="adapted"`` a head tensor of another shape (another number of labels) is given the adapted head's
        shape once, here.
    base, adapted : Mapping[str, torch.Tensor]
        State dicts (any device/dtype); validated with :func:`harness.models.checks.validate_pair`. With ``lora``,
        ``adapted`` may omit tensors (they keep their base value).
    head : {"shared", "adapted"}, default="shared"
        See :func:`interpolate`.
    lora : LoraDelta, default=None
        The adapter's low-rank factors: use the LoRA-scale path.
    reference_device : str or torch.device, default=None
        Where the base and adapted references live: the live model's device by default; ``"cpu"`` keeps them off
        the accelerator, which then holds one model copy plus two 64 MB scratch buffers (each :meth:`apply` moves
        the references over the bus in chunks).

    Raises
    ------
    BlendError
        If the state dicts are incompatible, non-finite, or do not cover the model's tensors.
    """

    def __init__(self, model: torch.nn.Module, base: Mapping[str, torch.Tensor],
                 adapted: Mapping[str, torch.Tensor], *, head: str = "shared", lora=None,
                 reference_device: str | torch.device | None = None) -> None:
        if head not in HEAD_MODES:
            raise BlendError(format_error("unknown head mode", where="--head", expected=HEAD_MODES, got=head))
        self.model, self.head, self.lora = model, head, lora
        self._ref_device = None if reference_device is None else torch.device(reference_device)
        self.path = "merged" if lora is None else "lora-scale"
        if lora is not None:
            adapted = {k: adapted[k] if k in adapted else base[k] for k in base}
        prefix = getattr(model, "base_model_prefix", None)
        self.head_names = head_keys(base, prefix) if head == "adapted" else set()
        live = dict(model.named_parameters())  # remove_duplicate=True: tied weights appear once
        # persistent buffers only: non-persistent ones (e.g. position_ids) are not weights and stay as they are
        live.update({k: v for k, v in model.named_buffers() if k in base})
        missing = sorted(k for k in live if k not in base)
        if missing:
            raise BlendError(format_error("the state dicts do not cover the model's tensors", where=missing[0],
                                          fix="pass state dicts of this architecture"))
        validate_pair(base, adapted, skip=self.head_names, groups=alias_groups(model))
        self._groups = self._pack(live, base, adapted)
        if lora is not None:
            lora.attach(model)
        self.alpha: float | None = None
        self._scratch_buf: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _pack(self, live, base, adapted) -> list[_Group]:
        groups: dict[tuple, list] = {}
        self._fixed: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name, target in live.items():
            b, a = base[name], adapted[name]
            if name in self.head_names:
                value = a.detach().to(target.device, target.dtype)
                if target.shape != value.shape:  # a new head (e.g. another number of labels): adopt its shape once
                    resize_head(self.model, name, target, value)
                self._fixed.append((target, value))
            elif is_float(target) and not (a is b or torch.equal(a, b)):
                ref = self._ref_device or target.device
                groups.setdefault((target.device, target.dtype, b.dtype), []).append(
                    (name, target, b.detach().to(ref), a.detach().to(ref)))
            elif not torch.equal(target, b.to(target.device, target.dtype)):  # constant: written once, not held
                target.copy_(b)
        return [_flatten(items) for items in groups.values()]

    @torch.no_grad()
    def apply(self, alpha: float) -> None:
        """Make the live model the blend at ``alpha`` (same values as :func:`interpolate`, bit for bit, on the
        merged path; on the LoRA-scale path the LoRA layers' scale is set to alpha times their own)."""
        try:
            alpha = canonical_alpha(alpha)
        except ValueError as e:
            raise BlendError(str(e)) from e
        for g in self._groups:
            if g.base.dtype == g.target.dtype == torch.float32 and g.base.device == g.target.device:
                torch.lerp(g.base, g.adapted, alpha, out=g.target)
                continue
            # reduced precision: fp32 arithmetic per chunk (a cast inside lerp would allocate a full-size temporary)
            sb, sa = self._scratch(g.target.device)
            for i in range(0, g.target.numel(), sb.numel()):
                j = min(i + sb.numel(), g.target.numel())
                sb[:j - i].copy_(g.base[i:j], non_blocking=True)  # from pinned CPU references: asynchronous,
                sa[:j - i].copy_(g.adapted[i:j], non_blocking=True)  # ordered before the lerp on the same stream
                torch.lerp(sb[:j - i], sa[:j - i], alpha, out=sb[:j - i])
                g.target[i:j].copy_(sb[:j - i])
        for target, value in self._fixed:
            target.copy_(value)
        if self.lora is not None:
            self.lora.set_alpha(alpha)
        self.alpha = alpha

    @torch.no_grad()
    def changed_names(self) -> set[str]:
        """Names of the tensors whose blend depends on alpha: base and adapted differ (exact comparison), heads
        taken from the adapted model, and the weights a LoRA adapter changes. Every other tensor has its base
        value at every alpha (``lerp(w, w, alpha) == w`` exactly), which :mod:`harness.models.trunk` relies on."""
        out = set(self.head_names)
        for g in self._groups:
            offset = 0
            for name, n in zip(g.names, g.sizes):
                if not torch.equal(g.base[offset:offset + n], g.adapted[offset:offset + n]):
                    out.add(name)
                offset += n
        if self.lora is not None:
            out |= set(self.lora.target_names)
        return out

    def _scratch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two fp32 scratch buffers on ``device``, kept per device (a model split over GPUs has groups on each)."""
        if device not in self._scratch_buf:
            n = _CHUNK if device.type == "cpu" else _CHUNK_GPU
            n = min(n, max(g.target.numel() for g in self._groups if g.target.device == device))
            self._scratch_buf[device] = tuple(torch.empty(n, dtype=torch.float32, device=device) for _ in range(2))
        return self._scratch_buf[device]

    @property
    def reference_location(self) -> str:
        """Where the base and adapted references live: ``"cpu"``, ``"device"`` (beside each live tensor), or
        ``"none"`` (nothing differs, or only LoRA factors)."""
        if not self._groups:
            return "none"
        return "cpu" if all(g.base.device.type == "cpu" and g.target.device.type != "cpu" for g in self._groups) \
            else "device"

    @property
    def n_params(self) -> int:
        """Number of interpolated weights (those whose base and adapted values differ)."""
        return sum(g.base.numel() for g in self._groups)

    def bytes_per_apply(self) -> int:
        """Bytes one :meth:`apply` moves through memory: reads of both references plus the write of the target."""
        return sum(g.base.numel() * (2 * g.base.element_size() + g.target.element_size()) for g in self._groups)

    @property
    def n_bytes(self) -> int:
        """Bytes held by the engine's references of base and adapted (storage dtype) plus the LoRA factors."""
        extra = 0 if self.lora is None else self.lora.n_bytes
        return sum(g.base.numel() * 2 * g.base.element_size() for g in self._groups) + extra
