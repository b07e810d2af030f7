"""The Triton kernel behind :mod:`harness.models.short_attention` (imported only where Triton is installed).

One program computes one block of query rows of one sequence and one head: it loads the block of queries once,
streams the sequence's keys and values in blocks of ``BLOCK_N`` with the online softmax of FlashAttention (running
row maximum and normaliser in fp32, rescaling the accumulator when the maximum grows; Milakov & Gimelshein, 2018,
"Online normalizer calculation for softmax"; Dao et al., 2022, "FlashAttention"), and writes the normalised rows.
Inputs are packed: row ``t`` of ``q``/``k``/``v``/``o`` (shape (tokens, heads, head_dim)) is token ``t`` of the
concatenated sequences, and sequence ``s`` spans rows ``cu[s]:cu[s+1]``. Attention is bidirectional within a
sequence and never crosses sequences.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def packed_attention_fwd(Q, K, V, O, CU, scale_log2e,
                         sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h,
                         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    seq = tl.program_id(0)  # sequences on the grid's first axis: it allows 2**31 - 1 programs, the others 65,535
    block = tl.program_id(1)
    head = tl.program_id(2)
    start = tl.load(CU + seq).to(tl.int64)  # int64 offsets: row * stride overflows int32 past ~2M tokens
    length = (tl.load(CU + seq + 1) - tl.load(CU + seq)).to(tl.int32)
    if block * BLOCK_M < length:
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, HEAD_DIM)
        row_ok = rows < length
        q = tl.load(Q + (start + rows)[:, None] * sq_t + head * sq_h + dims[None, :], mask=row_ok[:, None],
                    other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for n0 in range(0, length, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < length
            k_t = tl.load(K + (start + cols)[None, :] * sk_t + head * sk_h + dims[:, None], mask=col_ok[None, :],
                          other=0.0)
            s = tl.dot(q, k_t) * scale_log2e  # scores in log2 units, fp32
            s = tl.where(col_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
            rescale = tl.exp2(m_i - m_new)
            l_i = l_i * rescale + tl.sum(p, 1)
            v = tl.load(V + (start + cols)[:, None] * sv_t + head * sv_h + dims[None, :], mask=col_ok[:, None],
                        other=0.0)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(O + (start + rows)[:, None] * so_t + head * so_h + dims[None, :], out.to(O.dtype.element_ty),
                 mask=row_ok[:, None])


def launch(q, k, v, out, cu_seqlens, max_len: int, scale: float, block: int, num_warps: int) -> None:
    """Launch over (sequences, query blocks of the longest sequence, heads)."""
    grid = (cu_seqlens.numel() - 1, triton.cdiv(max_len, block), q.shape[1])
    packed_attention_fwd[grid](q, k, v, out, cu_seqlens, scale * 1.4426950408889634,
                               q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                               out.stride(0), out.stride(1),
                               HEAD_DIM=q.shape[2], BLOCK_M=block, BLOCK_N=block, num_warps=num_warps)
