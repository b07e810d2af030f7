"""Stage 4d: representation fine-tuning (ReFT, Wu et al. 2024, "ReFT: Representation Finetuning for Language
Models") applied natively with forward hooks on a frozen base; the blend weight is the intervention strength.

Two intervention kinds, as pyreft 0.1.0 defines them (``pyreft/interventions.py``), on the hidden state ``h``
(shape ``(hidden,)``) of one token at one layer; ``R`` is ``(rank, hidden)`` with orthonormal rows, ``W``
``(rank, hidden)``, ``b`` ``(rank,)``:

* ``loreft``: ``edit(h) = R^T (W h + b - R h)``
* ``direft``: ``edit(h) = R^T (W h + b)``

and the blend at strength alpha is ``h <- h + alpha * edit(h)``: alpha = 0 is the base model bit for bit (the
hooks return the layer's output object untouched), alpha = 1 the adapted model. The base's weights are never
modified; :meth:`InterventionEngine.remove` detaches every hook.

Positions (pyreft's ``"f<N>+l<M>"`` strings, ``pyreft.dataset.parse_positions`` / ``get_intervention_locations``):
an intervention edits the first ``N`` and the last ``M`` tokens of the *prompt*, each count clamped to
``prompt_length // 2`` (so a 1-token prompt gets no edit, as in pyreft). Positions are computed per row from the
attention mask, counting only attended tokens, so left and right padding give the same edits. The prompt of a row
is all its attended tokens, unless the caller names per-row prompt lengths with :func:`prompt_lengths` (a scorer
that feeds context + continuation in one forward must do so: the prompt is the context). With a KV cache
(``model.generate``) only the first forward (the prompt, no cached tokens yet) is edited; decoding steps are not,
as pyreft does by default (``intervene_on_prompt=True``): the cached keys/values of the edited prompt carry the
edit forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from harness.errors import BlendError, ModelError, format_error
from harness.records import canonical_alpha

__all__ = ["KINDS", "COMPONENTS", "InterventionSpec", "parse_positions", "ReftIntervention", "ReftAdapter", "has_interventions",
           "intervention_mask", "prompt_lengths", "find_layers", "model_dims", "check_adapter_fits",
           "InterventionEngine"]

log = logging.getLogger(__name__)
KINDS = ("loreft", "direft")
COMPONENTS = ("block_output", "block_input")
_POSITIONS = re.compile(r"^(?:f(\d+))?(?:\+?l(\d+))?$")
_PROMPT_LENGTHS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("reft_prompt_lengths",
                                                                                       default=None)


def parse_positions(positions: str) -> tuple[int, int]:
    """``"f1+l1"`` -> ``(1, 1)``, ``"l3"`` -> ``(0, 3)``, ``"f2"`` -> ``(2, 0)`` (pyreft's ``parse_positions``).

    Raises
    ------
    ModelError
        If the string is not ``f<N>``, ``l<M>`` or ``f<N>+l<M>`` with at least one count above 0.
    """
    m = _POSITIONS.match(str(positions).strip())
    if not m or (m.group(1) is None and m.group(2) is None) or ("+" in positions and None in m.groups()):
        raise ModelError(format_error("unknown ReFT positions string", where="positions",
                                      expected="'f<N>', 'l<M>' or 'f<N>+l<M>' (pyreft's syntax), e.g. 'l1'",
                                      got=positions))
    first, last = int(m.group(1) or 0), int(m.group(2) or 0)
    if first + last == 0:
        raise ModelError(format_error("ReFT positions select no token", where="positions", got=positions,
                                      fix="use at least one first or last position, e.g. 'l1'"))
    return first, last


@dataclass(frozen=True)
class InterventionSpec:
    """Where one intervention acts: ``layer`` (0-based index into the model's block list), ``component``
    (``block_output``: the block's output hidden states, the same as ``hidden_states[layer + 1]`` of
    ``output_hidden_states``; ``block_input``: the block's input), and the first/last prompt-token counts."""

    layer: int
    component: str = "block_output"
    first_n: int = 0
    last_n: int = 1

    @property
    def positions(self) -> str:
        """pyreft's positions string (``f1+l1``, ``l1``, ``f2``)."""
        parts = ([f"f{self.first_n}"] if self.first_n else []) + ([f"l{self.last_n}"] if self.last_n else [])
        return "+".join(parts)


class ReftIntervention(torch.nn.Module):
    """One low-rank intervention: parameters ``R`` ``(rank, hidden)``, ``W`` ``(rank, hidden)``, ``b`` ``(rank,)``,
    fp32. :meth:`edit` maps hidden states ``(..., hidden)`` (any float dtype) to the fp32 edit ``(..., hidden)``."""

    def __init__(self, kind: str, hidden: int, rank: int) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ModelError(format_error("unknown ReFT intervention kind", expected=KINDS, got=kind))
        if not 1 <= rank <= hidden:
            raise ModelError(format_error("ReFT rank out of range", expected=f"1 <= rank <= hidden ({hidden})",
                                         got=rank))
        self.kind = kind
        self.R = torch.nn.Parameter(torch.empty(rank, hidden))
        self.W = torch.nn.Parameter(torch.empty(rank, hidden))
        self.b = torch.nn.Parameter(torch.zeros(rank))
        torch.nn.init.orthogonal_(self.R)
        torch.nn.init.kaiming_uniform_(self.W, a=5 ** 0.5)  # nn.Linear's default, as pyreft's learned_source

    @property
    def rank(self) -> int:
        return self.R.shape[0]

    def edit(self, h: torch.Tensor) -> torch.Tensor:
        """``R^T (W h + b - R h)`` (loreft) or ``R^T (W h + b)`` (direft), in fp32."""
        h = h.float()
        R = self.R
        low = torch.nn.functional.linear(h, self.W, self.b)
        if self.kind == "loreft":
            low = low - h @ R.T
        return low @ R


@dataclass
class ReftAdapter:
    """A loaded (or trained) ReFT adaptation: ``kind``, one :class:`InterventionSpec` per intervention with its
    :class:`ReftIntervention` (same order), the hidden size and layer count it was made for, and provenance
    (``info``: base model name/fingerprint, source format, training settings)."""

    kind: str
    specs: list[InterventionSpec]
    interventions: torch.nn.ModuleList
    hidden_size: int
    num_layers: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return max(m.rank for m in self.interventions)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.interventions.parameters())

    def describe(self) -> str:
        """One line for logs and the manifest: kind, rank, layers, positions."""
        layers = sorted({s.layer for s in self.specs})
        pos = sorted({s.positions for s in self.specs})
        return (f"{'LoReFT' if self.kind == 'loreft' else 'DiReFT'} rank {self.rank}, {len(self.specs)} "
                f"intervention(s) at layers {layers}, positions {'/'.join(pos)}")


_ATTACHED = "_harness_interventions"  # instance attribute: the InterventionEngines hooked on this model


def has_interventions(model: torch.nn.Module) -> bool:
    """Whether an :class:`InterventionEngine` attached to ``model`` edits its forwards (alpha above 0): they then
    need one prompt per row (:mod:`harness.models.causal_shared` stops sharing a context between choices). At
    alpha 0 the engine edits nothing and the model runs exactly as the plain base."""
    return any(e.alpha != 0.0 for e in model.__dict__.get(_ATTACHED, ()))


@contextlib.contextmanager
def prompt_lengths(lengths: Sequence[int] | torch.Tensor | None) -> Iterator[None]:
    """Name the prompt length of each row for the forwards inside the block (a no-op when no engine is attached).

    ``lengths[i]`` counts row i's attended tokens that belong to the prompt, from its first attended token;
    the remaining attended tokens (e.g. a scored continuation, or a training answer) are never edited and do not
    move the "last k" positions. Outside such a block the prompt is every attended token.
    """
    value = None if lengths is None else torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
    token = _PROMPT_LENGTHS.set(value)
    try:
        yield
    finally:
        _PROMPT_LENGTHS.reset(token)


def intervention_mask(attention_mask: torch.Tensor, first_n: int, last_n: int,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Which tokens an intervention edits: bool ``(batch, seq)``.

    Parameters
    ----------
    attention_mask : torch.Tensor
        ``(batch, seq)``, 1 for real tokens (left or right padding; attended tokens contiguous or not).
    first_n, last_n : int
        pyreft's counts; each is clamped to ``prompt_length // 2`` per row.
    lengths : torch.Tensor, default=None
        ``(batch,)`` prompt lengths in attended tokens (default: every attended token).
    """
    att = attention_mask.bool()
    rank = att.long().cumsum(1) - 1  # index of each attended token among its row's attended tokens
    total = att.sum(1)
    plen = total if lengths is None else torch.minimum(lengths.to(total.device), total)
    nf = torch.clamp(plen // 2, max=first_n)[:, None]
    nl = torch.clamp(plen // 2, max=last_n)[:, None]
    plen = plen[:, None]
    return att & ((rank < nf) | ((rank >= plen - nl) & (rank < plen)))


_LAYER_PATHS = ("model.layers", "model.model.layers", "transformer.h", "model.decoder.layers", "layers", "h",
                "bert.encoder.layer", "encoder.layer", "roberta.encoder.layer", "distilbert.transformer.layer")


def model_dims(model: torch.nn.Module) -> tuple[int, int]:
    """``(hidden_size, num_layers)`` from the model's (text) config."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "dim", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not hidden or not layers:
        raise ModelError(format_error("cannot read the hidden size and layer count from the model config",
                                      where=type(model).__name__, fix="use a llama-, gpt2- or BERT-style model"))
    return int(hidden), int(layers)


def find_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of transformer blocks (llama ``model.layers``, gpt2 ``transformer.h``, BERT
    ``bert.encoder.layer`` and the like).

    Raises
    ------
    ModelError
        If no known block list holding ``num_layers`` blocks is found.
    """
    _, n = model_dims(model)
    for path in _LAYER_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ModelError(format_error("cannot find the model's transformer blocks", where=type(model).__name__,
                                  expected=f"a ModuleList of {n} blocks at one of {', '.join(_LAYER_PATHS)}",
                                  fix="use a llama-, gpt2- or BERT-style model"))


def _cache_len(cache: Any) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:  # legacy tuple of (key, value) per layer: (batch, heads, seq, head_dim)
        return int(cache[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


class InterventionEngine:
    """Attaches a :class:`ReftAdapter` to a live model with forward hooks; :meth:`apply` sets the strength alpha.

    The same shape as :class:`harness.models.blend.BlendEngine` for the sweep: ``apply(alpha)`` then score;
    ``alpha`` is the intervention strength (``h <- h + alpha * edit(h)``), 0 = base bit for bit, 1 = adapted.
    ``kind`` and ``path`` are ``"intervention"`` (a weight blend's engine has ``path`` ``lora-scale`` or ``merged``;
    the manifest records :meth:`manifest`). :meth:`remove` detaches the hooks and leaves the model as it was.

    Parameters
    ----------
    model : torch.nn.Module
        The frozen base (llama, gpt2 or BERT family); its weights are never written.
    adapter : ReftAdapter
        Checked against the model's hidden size and layer count (:class:`~harness.errors.ModelError`).
    alpha : float, default=1.0
        Initial strength.
    """

    kind = "intervention"
    path = "intervention"  # the blend path recorded in store keys and the manifest (weight blends: lora-scale, merged)

    def __init__(self, model: torch.nn.Module, adapter: ReftAdapter, *, alpha: float = 1.0) -> None:
        hidden, n_layers = model_dims(model)
        check_adapter_fits(adapter, hidden, n_layers)
        self.model = model
        self.adapter = adapter
        param = next(model.parameters())
        adapter.interventions.to(param.device)
        layers = find_layers(model)
        self._state: dict[str, Any] = {"mask": None, "decode": False}
        self._handles = [model.register_forward_pre_hook(self._on_call, with_kwargs=True)]
        model.__dict__.setdefault(_ATTACHED, []).append(self)  # read by has_interventions
        for spec, mod in zip(adapter.specs, adapter.interventions):
            block = layers[spec.layer]
            if spec.component == "block_output":
                self._handles.append(block.register_forward_hook(self._output_hook(spec, mod)))
            else:
                self._handles.append(block.register_forward_pre_hook(self._input_hook(spec, mod), with_kwargs=True))
        self.alpha = 0.0
        self.apply(alpha)

    @property
    def description(self) -> str:
        """What the blend weight means, for the manifest and report."""
        edit = "R^T(Wh + b - Rh)" if self.adapter.kind == "loreft" else "R^T(Wh + b)"
        return (f"intervention strength: h <- h + alpha * {edit} ({self.adapter.describe()}); alpha = 0 is the "
                "base model, 1 the ReFT-adapted model; base weights unchanged")

    @property
    def n_params(self) -> int:
        """Number of intervention parameters."""
        return self.adapter.n_params

    def manifest(self) -> dict[str, Any]:
        """A JSON-ready record of the adaptation for the run manifest."""
        return {"kind": self.kind, "method": self.adapter.kind, "description": self.description,
                "rank": self.adapter.rank, "n_params": self.n_params,
                "interventions": [{"layer": s.layer, "component": s.component, "positions": s.positions}
                                  for s in self.adapter.specs], **{k: v for k, v in self.adapter.info.items()
                                                                  if isinstance(v, (str, int, float, bool))}}

    def apply(self, alpha: float) -> None:
        """Set the strength for the following forwards (no weight is written)."""
        try:
            self.alpha = canonical_alpha(alpha)
        except ValueError as e:
            raise BlendError(str(e)) from e

    def remove(self) -> None:
        """Detach every hook; the model is the plain base again."""
        attached = self.model.__dict__.get(_ATTACHED, [])
        if self in attached:
            attached.remove(self)
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- hooks ----
    def _on_call(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Top-level pre-hook: record the call's attention mask and whether it is a cached decoding step."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # transformers 5 names it ``cache``
        seq = None if ids is None else ids.shape[1]
        # a decoding step: tokens already cached (the mask then also covers them)
        decode = _cache_len(cache) > 0 or (mask is not None and mask.dim() == 2 and seq is not None
                                          and mask.shape[1] > seq)
        self._state["decode"] = decode
        if ids is None or decode or self.alpha == 0.0:  # alpha 0 edits nothing: any mask shape will do
            self._state["mask"] = None
            return
        batch = ids.shape[0]
        mask = torch.ones(batch, seq, dtype=torch.long, device=ids.device) if mask is None else mask
        if mask.dim() != 2 or tuple(mask.shape) != (batch, seq):
            raise ModelError(format_error("ReFT needs a 2-D attention mask of the input's shape", got=tuple(mask.shape),
                                          expected=(batch, seq), fix="pass attention_mask of shape (batch, seq)"))
        lengths = _PROMPT_LENGTHS.get()
        if lengths is not None and lengths.numel() != batch:
            raise ModelError(format_error("prompt_lengths has the wrong number of rows", expected=batch,
                                          got=lengths.numel(), fix="pass one prompt length per row"))
        self._state.update(mask=mask, lengths=lengths, cache={})

    def _edited(self, h: torch.Tensor, spec: InterventionSpec, mod: ReftIntervention) -> torch.Tensor:
        if self.alpha == 0.0 or self._state["decode"] or self._state["mask"] is None:
            return h
        cache = self._state["cache"]
        key = (spec.first_n, spec.last_n)
        if key not in cache:
            cache[key] = intervention_mask(self._state["mask"], spec.first_n, spec.last_n,
                                           self._state["lengths"]).to(h.device)
        sel = cache[key]
        if h.shape[:2] != sel.shape:
            raise ModelError(format_error("hidden states do not match the input's (batch, seq)",
                                          where=f"layer {spec.layer}", expected=tuple(sel.shape),
                                          got=tuple(h.shape[:2])))
        new = (h.float() + self.alpha * mod.edit(h)).to(h.dtype)
        return torch.where(sel[..., None], new, h)

    def _output_hook(self, spec: InterventionSpec, mod: ReftIntervention):
        def hook(module, args, output):
            if isinstance(output, tuple):
                h = self._edited(output[0], spec, mod)
                return output if h is output[0] else (h,) + tuple(output[1:])
            h = self._edited(output, spec, mod)
            return output if h is output else h
        return hook

    def _input_hook(self, spec: InterventionSpec, mod: ReftIntervention):
        def hook(module, args, kwargs):
            if args:
                h = self._edited(args[0], spec, mod)
                return None if h is args[0] else ((h,) + tuple(args[1:]), kwargs)
            h = self._edited(kwargs["hidden_states"], spec, mod)
            return None if h is kwargs["hidden_states"] else (args, {**kwargs, "hidden_states": h})
        return hook


def check_adapter_fits(adapter: ReftAdapter, hidden: int, n_layers: int) -> None:
    """Raise :class:`~harness.errors.ModelError` when ``adapter`` was not made for a model of this hidden size and
    layer count (or names a layer or component the model lacks)."""
    src = adapter.info.get("source", "the ReFT adapter")
    if adapter.hidden_size != hidden:
        raise ModelError(format_error("the ReFT adapter was made for another hidden size", where=src,
                                      expected=hidden, got=adapter.hidden_size,
                                      fix="pass the base model the interventions were trained on"))
    if adapter.num_layers and adapter.num_layers != n_layers:
        raise ModelError(format_error("the ReFT adapter was made for a model with another number of layers",
                                      where=src, expected=n_layers, got=adapter.num_layers,
                                      fix="pass the base model the interventions were trained on"))
    for spec, mod in zip(adapter.specs, adapter.interventions):
        if not 0 <= spec.layer < n_layers:
            raise ModelError(format_error("ReFT intervention layer out of range", where=src,
                                          expected=f"0..{n_layers - 1}", got=spec.layer))
        if spec.component not in COMPONENTS:
            raise ModelError(format_error("unsupported ReFT component", where=src, expected=COMPONENTS,
                                          got=spec.component))
        if mod.R.shape[1] != hidden or mod.W.shape != mod.R.shape or mod.b.shape != (mod.R.shape[0],):
            raise ModelError(format_error("ReFT tensor shapes do not fit the model", where=f"{src}, layer {spec.layer}",
                                          expected=f"R and W (rank, {hidden}), b (rank,)",
                                          got=f"R {tuple(mod.R.shape)}, W {tuple(mod.W.shape)}, b {tuple(mod.b.shape)}"))
    if len(adapter.specs) != len(adapter.interventions):
        raise ModelError(format_error("ReFT specs and interventions differ in number", where=src,
                                      expected=len(adapter.specs), got=len(adapter.interventions)))
