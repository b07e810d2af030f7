"""Shared by the benchmark scripts: what the CPU supports, and medians of repeated timings."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cpu_info() -> str:
    """Threads, the CPU features that decide fp32/bf16 speed, and the kernel level PyTorch dispatches to."""
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    feats = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags]
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    bf16 = "native bf16 (avx512_bf16/amx)" if {"avx512_bf16", "amx_bf16"} & set(feats) else "no native bf16"
    return (f"{torch.get_num_threads()} threads; CPU features: {', '.join(feats) or 'unknown'}; "
            f"PyTorch CPU capability {capability}; {bf16}")


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[float, Any]:
    """Median wall time in seconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls), and the last
    result."""
    out = None
    for _ in range(warmup):
        out = fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out
