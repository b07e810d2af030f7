"""Stage 4e (kernel): packed bidirectional attention for short sequences on CUDA.

PyTorch's variable-length flash attention (:func:`torch.nn.attention.varlen.varlen_attn`, FlashAttention-2)
processes queries in tiles of 128 rows. Classification inputs are short (English sentences: about 50 tokens), so
most of each tile is empty: on an H200, attention took 16% of the GPU time of a packed BERT-large forward for 1% of
its FLOPs. :func:`packed_short_attention` runs the same computation with tiles sized to the batch's longest
sequence (16, 32 or 64 rows; :func:`tile_for`), as a Triton kernel (``harness/models/_short_attention_kernel.py``)
registered as the custom operator ``harness::packed_short_attention`` so ``torch.compile`` keeps it as one call.

Measured (benchmarks/bench_attention.py, H200, bf16, 16 heads of 64, 32,768 tokens per call): English-like
lengths (mean 50, max 128) 124 us vs 259 us for the flash kernel (bandwidth bound 64 us); uniform lengths 32 / 64 /
128 / 256 / 512: 94 / 84 / 96 / 130 / 212 us vs 384 / 213 / 123 / 176 / 285 us. In the BERT-large runner
(benchmarks/bench_gpu.py): 14,863 vs 13,934 examples/s, attention 7% of GPU time instead of 16%.

The packed scorer (:mod:`harness.models.packed`) uses it for bf16/fp16 batches whose longest sequence is at most
:data:`MAX_LEN` tokens when Triton is installed and the head dimension is a power of two from 16 to 128, and the
flash kernel otherwise.

Source: the online-softmax tiling of FlashAttention (Dao et al., 2022, "FlashAttention: Fast and
Memory-Efficient Exact Attention with IO-Awareness") applied to packed sequences as in its varlen interface.
"""

from __future__ import annotations

import functools
import importlib

import torch

__all__ = ["MAX_LEN", "packed_short_attention", "short_attention_unavailable_reason", "tile_for"]

MAX_LEN = 512
"""Longest sequence (tokens) in a batch for which the short-sequence kernel is used (it was faster than the flash
kernel at every length measured up to 512, BERT's limit); longer batches use the flash kernel."""


@functools.cache
def _kernel():
    try:
        return importlib.import_module("harness.models._short_attention_kernel")
    except ImportError:
        return None


def short_attention_unavailable_reason(device: torch.device, dtype: torch.dtype, head_dim: int,
                                       max_len: int) -> str | None:
    """Why :func:`packed_short_attention` cannot run on ``dtype`` tensors on ``device`` with ``head_dim`` for a
    batch whose longest sequence has ``max_len`` tokens (``None`` when it can)."""
    if torch.device(device).type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return "needs bf16/fp16 tensors on CUDA"
    d = head_dim
    if d not in (16, 32, 64, 128):
        return f"head dimension {d} is not a power of two from 16 to 128"
    if max_len > MAX_LEN:
        return f"longest sequence {max_len} > {MAX_LEN} tokens"
    if _kernel() is None:
        return "Triton is not installed"
    return None


def tile_for(max_len: int, head_dim: int) -> tuple[int, int]:
    """``(rows per tile, warps)`` for a batch whose longest sequence has ``max_len`` tokens: the smallest power of
    two from 16 to 64 that holds the sequence (Triton's matrix instructions need 16), 4 warps from 64 rows on."""
    block = min(64, max(16, 1 << max(0, int(max_len) - 1).bit_length()))
    return block, (4 if block >= 64 or head_dim >= 128 else 2)


@torch.library.custom_op("harness::packed_short_attention", mutates_args=())
def packed_short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                           max_len: int, scale: float) -> torch.Tensor:
    """Attention of packed sequences, each attending to itself only (bidirectional, no mask).

    Parameters
    ----------
    q, k, v : Tensor, shape (tokens, heads, head_dim), bf16 or fp16, CUDA
        Packed queries, keys and values (any strides with a unit last stride).
    cu_seqlens : Tensor of int32, shape (sequences + 1,)
        Cumulative sequence lengths starting at 0; ``cu_seqlens[-1] == tokens``.
    max_len : int
        The longest sequence in the batch (tokens).
    scale : float
        Multiplier of the scores (``1/sqrt(head_dim)`` for BERT).

    Returns
    -------
    Tensor, shape (tokens, heads, head_dim), dtype of ``q``
        ``softmax(scale * q k^T) v`` per sequence and head, computed in fp32 with probabilities rounded to the
        input dtype before the value product (as FlashAttention does).

    Raises
    ------
    RuntimeError
        If the inputs do not qualify (:func:`short_attention_unavailable_reason` gives the reason).
    """
    reason = short_attention_unavailable_reason(q.device, q.dtype, q.shape[-1], max_len)
    if reason is not None:
        raise RuntimeError(f"packed_short_attention cannot run: {reason}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    if q.shape[0]:
        block, warps = tile_for(max_len, q.shape[-1])
        _kernel().launch(q, k, v, out, cu_seqlens, max_len, scale, block, warps)
    return out


@packed_short_attention.register_fake
def _(q, k, v, cu_seqlens, max_len, scale):
    return torch.empty_like(q)
