"""Packed attention kernels on CUDA: the harness's short-sequence Triton kernel (each tile size and warp count)
vs PyTorch's variable-length flash attention (FlashAttention-2), on packed batches like the GPU benchmark's
(BERT-large heads: 16 x 64) and on uniform lengths up to 512, to place the switch-over length
(harness.models.short_attention.MAX_LEN).

    python benchmarks/bench_attention.py [--tokens 32768] [--repeats 5]

Prints, per batch shape, microseconds per call (median of --repeats timings of 20 calls) and the achieved
bandwidth (q, k, v read once and the output written once, over the measured copy bandwidth), and the largest
difference from the flash kernel's output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def lengths_like_english(tokens: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    out, total = [], 0
    while True:
        n = int(np.clip(np.exp(rng.normal(np.log(44), 0.5)).round(), 8, 128))
        if total + n > tokens:
            return sorted(out, reverse=True)  # the runner's batches are length-sorted
        out.append(n)
        total += n


def timed_us(fn, repeats: int, calls: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / calls)
    return statistics.median(ts) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device; this benchmark needs a GPU")
        return 0
    from torch.nn.attention.varlen import varlen_attn

    from harness.models import _short_attention_kernel as kernel
    from harness.models.short_attention import tile_for

    x = torch.empty(1 << 28, device="cuda", dtype=torch.float32)
    y = torch.empty_like(x)
    bw = 2 * x.numel() * 4 / (timed_us(lambda: y.copy_(x), a.repeats, 5) * 1e-6)
    del x, y
    heads, d = 16, 64
    shapes = {"english (mean ~50, max 128)": lengths_like_english(a.tokens)}
    for n in (32, 64, 128, 256, 512):
        shapes[f"uniform {n}"] = [n] * (a.tokens // n)
    results: dict = {"gpu": torch.cuda.get_device_name(), "copy_tb_s": bw / 1e12}
    for name, lengths in shapes.items():
        t = sum(lengths)
        qkv = torch.randn(t, 3 * heads * d, device="cuda", dtype=torch.bfloat16)
        q, k, v = (z.view(t, heads, d) for z in qkv.split(heads * d, dim=1))
        cu = torch.tensor([0] + lengths, device="cuda").cumsum(0).to(torch.int32)
        m = max(lengths)
        scale = d ** -0.5
        ref = varlen_attn(q, k, v, cu, cu, m, m, scale=scale)
        bound_us = 4 * t * heads * d * 2 / bw * 1e6
        row = {"sequences": len(lengths), "tokens": t, "bandwidth_bound_us": round(bound_us, 1),
               "flash_us": round(timed_us(lambda: varlen_attn(q, k, v, cu, cu, m, m, scale=scale), a.repeats), 1),
               "default_tile": list(tile_for(m, d))}
        out = torch.empty_like(q)
        for block in (16, 32, 64, 128):
            if block < 16 or (block == 16 and m > 64):
                continue
            for warps in (2, 4, 8):
                def call(block=block, warps=warps):
                    kernel.launch(q, k, v, out, cu, m, scale, block, warps)

                us = timed_us(call, a.repeats)
                row[f"short_b{block}_w{warps}_us"] = round(us, 1)
                row[f"short_b{block}_w{warps}_max_diff"] = float((out - ref).abs().max())
        results[name] = row
        del qkv, q, k, v, out, ref
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
