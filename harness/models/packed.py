"""Stage 4e: padding-free ("packed") encoder forward for scoring on CUDA.

Length-sorted batches still carry some padding (about 6% of the tokens for English-like lengths at a 32k-token
budget), every layer spends FLOPs on it, and padded attention needs a mask, which keeps scaled-dot-product
attention off its flash kernel. :class:`PackedEncoder` runs the encoder layers on the real tokens only:

1. a forward pre-hook on the encoder stack gathers the real tokens of the padded hidden states, shape
   (batch, length, hidden), into one packed row of shape (1, tokens, hidden);
2. self-attention runs on that row with variable-length attention given the cumulative sequence offsets, so no
   token attends across sequences: the short-sequence Triton kernel
   (:func:`harness.models.short_attention.packed_short_attention`) where it applies, else PyTorch's flash kernel
   (:func:`torch.nn.attention.varlen.varlen_attn`, PyTorch >= 2.10); off CUDA, an exact reference path runs one
   unmasked attention per run of equal-length sequences. The function is registered with transformers'
   ``AttentionInterface`` and behaves exactly like ``sdpa`` whenever no packing is active;
3. a forward hook scatters the output back to the padded layout (zeros at padding).

The embeddings and the classification head run on the padded tensors as before, so every head (CLS pooler,
RoBERTa-style head, the harness mean-pooling class) works unchanged. Only encoders whose layers are position-wise
apart from self-attention through the attention interface qualify (:data:`SUPPORTED_MODEL_TYPES`), and the first
packed forward checks that every attention layer actually took the packed path.

Source: the unpad/pad scheme of FlashAttention's ``bert_padding`` (Dao et al., 2022, "FlashAttention: Fast and
Memory-Efficient Exact Attention with IO-Awareness") and packed BERT inference (Krell et al., 2021, "Efficient
Sequence Packing without Cross-contamination").
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import ModelError, format_error
from harness.models.short_attention import short_attention_unavailable_reason

__all__ = ["ATTENTION_NAME", "SUPPORTED_MODEL_TYPES", "PackedEncoder", "Packing", "encoder_parts",
           "packing_unavailable_reason"]

log = logging.getLogger(__name__)

ATTENTION_NAME = "harness_packed"
SUPPORTED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})
"""Encoders whose layers mix tokens only in self-attention, through the attention interface (no relative-position
bias over the whole row, no convolution over time)."""

# keyword arguments the stack's pre-hook passes down to the attention function: plain tensors and ints only, so
# compiled layers guard on nothing that changes per batch (a per-batch object would be a new guard every batch)
_KW_CU = "harness_cu_seqlens"
_KW_MAX = "harness_max_len"
_KW_RUNS = "harness_runs"  # reference path only
_KW_KERNEL = "harness_attention_kernel"  # "short", "flash" or "reference"
# the encoder config of the model inside PackedEncoder.packing(): its mask is never built
_ACTIVE = contextvars.ContextVar("harness_packing_config", default=None)
_KW_COUNT = "harness_packing_count"  # set on the first packed forward only: the layer check counts calls


@dataclass(frozen=True, eq=False)  # identity equality: it holds tensors and arrays
class Packing:
    """Where the real tokens of one padded batch are.

    ``flat_index``: int64 tensor of shape (tokens,), positions of the real tokens in the flattened (batch * length)
    layout, row by row; ``cu_seqlens``: int32 tensor of shape (batch + 1,), cumulative real lengths starting at 0;
    ``max_len``: the longest real length; ``shape``: (batch, length) of the padded batch; ``lengths``: host-side
    int array of shape (batch,), each row's real length. Tensors live on the model's device.
    """

    flat_index: torch.Tensor
    cu_seqlens: torch.Tensor
    max_len: int
    shape: tuple[int, int]
    lengths: np.ndarray

    @classmethod
    def from_mask(cls, attention_mask: np.ndarray, device: torch.device, pin: bool = False) -> Packing:
        """Packing of a host-side 0/1 ``attention_mask`` of shape (batch, length) (any padding side; each row's
        real tokens keep their order). Copies to ``device`` without waiting when ``pin`` is set."""
        mask = np.asarray(attention_mask).astype(bool)
        lengths = mask.sum(1)
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)

        def to(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t.pin_memory().to(device, non_blocking=True) if pin else t.to(device)

        return cls(flat_index=to(np.flatnonzero(mask.reshape(-1)).astype(np.int64)), cu_seqlens=to(cu),
                   max_len=int(lengths.max(initial=0)), shape=(int(mask.shape[0]), int(mask.shape[1])),
                   lengths=lengths)

    @functools.cached_property
    def runs(self) -> tuple[tuple[int, int, int], ...]:
        """``(first_token, n_sequences, length)`` of each run of consecutive equal-length sequences (length-sorted
        batches have few); used by the reference attention path only."""
        lengths = self.lengths
        starts = np.flatnonzero(np.diff(lengths, prepend=-1) != 0)
        counts = np.diff(np.append(starts, len(lengths)))
        first = np.concatenate([[0], np.cumsum(lengths)])
        return tuple((int(first[s]), int(n), int(lengths[s])) for s, n in zip(starts, counts))


def packing_unavailable_reason(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot be scored packed (``None`` when it can): it must be on CUDA in bf16 or fp16 (the flash
    kernel's dtypes), PyTorch must provide ``torch.nn.attention.varlen``, the encoder must be a supported model type
    using transformers' ``sdpa`` attention, and the encoder stack must be found."""
    p = next(model.parameters(), None)
    if p is None or p.device.type != "cuda":
        return "not on a CUDA device"
    if p.dtype not in (torch.bfloat16, torch.float16):
        return f"weights are {p.dtype}, the flash kernel needs bfloat16 or float16"
    try:
        importlib.import_module("torch.nn.attention.varlen")
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen (needs >= 2.10)"
    return _structure_problem(model)


def encoder_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """``(base model, encoder stack)`` of a transformers encoder classifier: ``model.base_model`` (or the model
    itself) and its ``encoder`` attribute (``None`` when there is none). The stack holds the layer list
    ``encoder.layer`` in the BERT family."""
    base = getattr(model, "base_model", model)
    stack = getattr(base, "encoder", None)
    return base, stack


def _structure_problem(model: torch.nn.Module) -> str | None:
    base, stack = encoder_parts(model)
    cfg = getattr(base, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        return f"model type {mt!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    if stack is None or not isinstance(getattr(stack, "layer", None), torch.nn.ModuleList):
        return "no encoder layer stack found (base_model.encoder.layer)"
    impl = getattr(cfg, "_attn_implementation", None)
    if impl not in ("sdpa", ATTENTION_NAME):
        return f"attention implementation is {impl!r}, packing replaces 'sdpa' only"
    if getattr(cfg, "is_decoder", False):
        return "decoder configuration (causal attention)"
    return None


def _attention_by_runs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, runs, scaling) -> torch.Tensor:
    """Exact attention for packed (tokens, heads, head_dim) ``q, k, v`` whose sequences come in ``runs`` of equal
    length: one unmasked scaled-dot-product attention per run."""
    out = torch.empty_like(q)
    for start, n, length in runs:
        end = start + n * length

        def view(x: torch.Tensor) -> torch.Tensor:
            return x[start:end].view(n, length, *x.shape[1:]).transpose(1, 2)

        res = torch.nn.functional.scaled_dot_product_attention(view(q), view(k), view(v), scale=scaling)
        out[start:end].view(n, length, *q.shape[1:]).copy_(res.transpose(1, 2))
    return out


def _register() -> None:
    # transformers: only when a model is packed (this module is imported by every scorer)
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        cu_seqlens = kwargs.pop(_KW_CU, None)
        max_len = kwargs.pop(_KW_MAX, 0)
        runs = kwargs.pop(_KW_RUNS, ())
        count = kwargs.pop(_KW_COUNT, False)
        kernel = kwargs.pop(_KW_KERNEL, "reference")
        if cu_seqlens is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        if count:  # only on the first forward, so compiled layers never see attribute writes
            module._harness_packed_calls = getattr(module, "_harness_packed_calls", 0) + 1
        # (1, heads, tokens, head_dim) views of the projections -> (tokens, heads, head_dim)
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))
        if kernel == "short":
            out = torch.ops.harness.packed_short_attention(q, k, v, cu_seqlens, max_len,
                                                           float(scaling if scaling is not None
                                                                 else q.shape[-1] ** -0.5))
        elif kernel == "flash":
            from torch.nn.attention.varlen import varlen_attn  # optional: PyTorch >= 2.10

            out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, scale=scaling)
        else:  # exact reference path (CPU, fp32)
            out = _attention_by_runs(q, k, v, runs, scaling)
        return out.unsqueeze(0), None  # (1, tokens, heads, head_dim), as the interface returns

    sdpa_mask = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]

    def packed_mask(*args, **kwargs):
        # A packed forward never uses the 4D mask (the stack's pre-hook drops it); building it would also cost a
        # device sync per batch (transformers checks ``padding_mask.all()`` to skip the mask), which lets the GPU
        # idle while the host prepares the next batch.
        active = _ACTIVE.get()
        return None if active is not None and kwargs.get("config") is active else sdpa_mask(*args, **kwargs)

    AttentionInterface.register(ATTENTION_NAME, packed_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, packed_mask)


class PackedEncoder:
    """Runs the encoder stack of ``model`` on packed real tokens while :meth:`packing` is active.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers encoder classifier (or the harness mean-pooling class) whose encoder is a supported model
        type using ``sdpa`` attention. Its attention implementation is switched to :data:`ATTENTION_NAME`, which
        is ``sdpa`` whenever no packing is active, so other forwards are unchanged.
    require_kernel : bool, default=True
        Refuse models the flash kernel cannot run (not CUDA, not bf16/fp16); ``False`` allows the exact
        one-sequence-at-a-time reference path (tests on CPU).
    attention : {"auto", "flash"}, default="auto"
        ``"auto"`` runs batches whose longest sequence fits :data:`harness.models.short_attention.MAX_LEN` with the
        short-sequence Triton kernel (:func:`~harness.models.short_attention.packed_short_attention`) where it is
        available, others with the flash kernel; ``"flash"`` always uses the flash kernel.

    Raises
    ------
    ModelError
        If the model cannot be packed (the message says why), or, on the first packed forward, if not every
        attention layer took the packed path.
    """

    def __init__(self, model: torch.nn.Module, *, require_kernel: bool = True, attention: str = "auto") -> None:
        if attention not in ("auto", "flash"):
            raise ValueError(f"attention must be 'auto' or 'flash', got {attention!r}")
        reason = packing_unavailable_reason(model) if require_kernel else _structure_problem(model)
        if reason is not None:
            raise ModelError(format_error("this model cannot be scored with packed (padding-free) batches",
                                          expected="a BERT-family encoder in bf16/fp16 on CUDA", got=reason,
                                          fix="score it padded (the default off CUDA)"))
        _register()
        self.model = model
        base, self._stack = encoder_parts(model)
        base.set_attn_implementation(ATTENTION_NAME)
        self._attention = [m for m in self._stack.modules() if hasattr(m, "scaling") and hasattr(m, "query")]
        self._n_layers = len(self._stack.layer)
        self.attention = attention
        cfg = self._config = base.config
        self._head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self._active: Packing | None = None
        self._checked = False
        self._hooks = [self._stack.register_forward_pre_hook(self._pre, with_kwargs=True),
                       self._stack.register_forward_hook(self._post)]

    @classmethod
    def for_model(cls, model: torch.nn.Module, **kwargs) -> PackedEncoder:
        """The packer attached to ``model`` (or to the module a ``torch.compile`` wrapper holds), attaching one if
        there is none, so two scorers of one model share its hooks (an ``attention`` keyword updates the kernel
        choice of an attached packer)."""
        target = getattr(model, "_orig_mod", model)
        packer = getattr(target, "_harness_packer", None)
        if packer is None:
            packer = cls(target, **kwargs)
            target._harness_packer = packer
        elif "attention" in kwargs:  # the newest scorer's kernel choice applies
            packer.attention = kwargs["attention"]
        return packer

    def close(self) -> None:
        """Remove the hooks and restore ``sdpa`` attention."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        encoder_parts(self.model)[0].set_attn_implementation("sdpa")
        if getattr(self.model, "_harness_packer", None) is self:
            del self.model._harness_packer

    @contextlib.contextmanager
    def packing(self, packing: Packing) -> Iterator[None]:
        """Within this context, forwards of the model run packed; ``packing`` must describe the batch passed."""
        self._active = packing
        token = _ACTIVE.set(self._config)
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            self._active = None

    @property
    def mode(self) -> str:
        """Which attention kernels packed batches run, for manifests and result keys: ``"short+flash"`` when the
        short-sequence kernel is used for short batches, ``"flash"``, or ``"reference"`` off CUDA."""
        w = next(self.model.parameters())
        return {"short": "short+flash", "flash": "flash"}.get(self.kernel_for(w, 1), "reference")

    @property
    def checked(self) -> bool:
        """Whether the first packed forward has confirmed that every attention layer takes the packed path."""
        return self._checked

    def kernel_for(self, hidden: torch.Tensor, max_len: int) -> str:
        """The attention kernel a packed batch of ``hidden`` states with longest sequence ``max_len`` runs:
        ``"short"`` (Triton, short sequences), ``"flash"`` (flash kernel, CUDA bf16/fp16) or ``"reference"``
        (one exact attention per run of equal-length sequences, elsewhere)."""
        if not (hidden.is_cuda and hidden.dtype in (torch.bfloat16, torch.float16)):
            return "reference"
        if self.attention == "auto" and short_attention_unavailable_reason(hidden.device, hidden.dtype,
                                                                          self._head_dim, max_len) is None:
            return "short"
        return "flash"

    def _pre(self, module, args, kwargs):
        p = self._active
        if p is None:
            return None
        args = list(args)
        hidden = args[0] if args else kwargs["hidden_states"]
        if tuple(hidden.shape[:2]) != p.shape:
            raise ModelError(format_error("packing does not match the batch", expected=p.shape,
                                          got=tuple(hidden.shape[:2]), fix="report this as a harness bug"))
        packed = hidden.reshape(-1, hidden.shape[-1]).index_select(0, p.flat_index).unsqueeze(0)
        if args:
            args[0] = packed
        else:
            kwargs["hidden_states"] = packed
        if len(args) > 1:
            args[1] = None
        else:
            kwargs["attention_mask"] = None
        kernel = self.kernel_for(packed, p.max_len)
        kwargs.update({_KW_CU: p.cu_seqlens, _KW_MAX: p.max_len, _KW_KERNEL: kernel})
        if kernel == "reference":
            kwargs[_KW_RUNS] = p.runs
        if not self._checked:
            kwargs[_KW_COUNT] = True
            for m in self._attention:
                m._harness_packed_calls = 0
        return tuple(args), kwargs

    def _post(self, module, args, output):
        p = self._active
        if p is None:
            return None
        if not self._checked:
            calls = sum(getattr(m, "_harness_packed_calls", 0) for m in self._attention)
            if calls != self._n_layers:
                raise ModelError(format_error("packed attention was not used by every encoder layer",
                                              expected=f"{self._n_layers} packed attention calls", got=calls,
                                              fix="score this model padded"))
            self._checked = True
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        n, length = p.shape
        full = hidden.new_zeros(n * length, hidden.shape[-1]).index_copy_(0, p.flat_index, hidden[0])
        full = full.view(n, length, -1)
        if isinstance(output, tuple):
            return (full, *output[1:])
        output.last_hidden_state = full
        return output
