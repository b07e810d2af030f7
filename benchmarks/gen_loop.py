"""Batch-1 greedy decoding with no host sync per token (issue 20): transformers' model and StaticCache, driven by a
short loop that keeps every token on the GPU and reads them back every ``--check-every`` steps, with the step
compiled three ways. One process, one JSON.

Variants of the compiled decoding step (the prompt is run once, eager, into the same StaticCache):

* ``ro``: transformers' own compiled call (``model.get_compiled_call(CompileConfig(fullgraph=True,
  mode="reduce-overhead"))``: Inductor with CUDA graphs, cuBLAS for the projections);
* ``ma``: ``torch.compile(model.forward, mode="max-autotune", fullgraph=True)`` with coordinate-descent tuning
  (Inductor also times its own Triton matrix-vector kernels against cuBLAS; CUDA graphs);
* ``ma_nocg``: as ``ma`` without CUDA graphs (every kernel launched from the host);
* ``ma_eagerattn``: as ``ma`` with transformers' eager attention (plain matmul/softmax ops, which Inductor fuses
  into its own kernels) instead of SDPA;
* a ``_frz`` in the name (``ma_frz``, ``ro_frz``, ...): Inductor's ``freezing`` (weights as graph constants; Inductor
  then concatenates the linears that share an input, q/k/v and gate/up); ``_flex``: transformers' FlexAttention;
  any name starting ``ro``/``ma_nocg`` takes that variant's compile mode.

Unlike the harness's step (:func:`harness.models.causal_decode.greedy_step`), the argmax runs eagerly after the
compiled forward here. ``--profile A,B`` prints the CUDA time per kernel of the timed decoding (``--batch``'s first
size, 128 new tokens) of those variants (torch.profiler). ``--shape llama32``: Llama-3.2-1B's shape.

For each: tokens/s over 128 new tokens after a 100-token prompt (median of 5), the first two calls' time
(compilation), the share of the bandwidth bound (every weight but the input embedding table plus the KV bytes, over
the measured copy bandwidth), and whether the tokens equal the eager loop's (bf16; different kernels may round
differently, so a difference is reported, not asserted).

    python benchmarks/gen_loop.py --out /tmp/gen_loop.json [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_gpu import (DEVICE, build, decode_batches, peak, set_shape, sync, timed,  # noqa: E402
                    weight_bytes_read)


CACHES: dict = {}


@torch.inference_mode()
def loop(model, step, ids, mask, n_new: int, check_every: int = 8, times: list | None = None) -> torch.Tensor:
    """Greedy tokens ``(batch, n_new)``; ``step`` is the (compiled) forward used for every new token. One
    StaticCache per shape, reset between calls (as ``generate`` reuses its own), so CUDA graphs see fixed
    addresses. ``times`` gets the decoding steps' milliseconds (CUDA events; prompt excluded)."""
    from transformers import StaticCache

    b, p = ids.shape
    dev = ids.device
    cache = CACHES.get((b, p + n_new))
    if cache is None:
        cache = CACHES[(b, p + n_new)] = StaticCache(config=model.config, max_cache_len=p + n_new)
    else:
        cache.reset()
    full = torch.ones(b, p + n_new, dtype=mask.dtype, device=dev)
    full[:, :p] = mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cps = torch.arange(p + n_new, device=dev)
    logits = model(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=cache,
                   cache_position=cps[:p], logits_to_keep=1, use_cache=True).logits
    toks = torch.empty(b, n_new, dtype=torch.long, device=dev)
    toks[:, 0] = logits[:, -1].argmax(-1)
    nxt = pos[:, -1:] + 1
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if DEVICE == "cuda" else None
    if ev:
        ev[0].record()
    for i in range(1, n_new):
        out = step(input_ids=toks[:, i - 1:i], attention_mask=full, position_ids=nxt + (i - 1),
                   past_key_values=cache, cache_position=cps[p + i - 1:p + i], logits_to_keep=1,
                   use_cache=True).logits
        toks[:, i] = out[:, -1].argmax(-1)
        if i % check_every == 0:
            toks[:, i - check_every:i].to("cpu", non_blocking=True)  # stands in for the stop check's copy
    if ev:
        ev[1].record()
        if times is not None:
            ev[1].synchronize()
            times.append(ev[0].elapsed_time(ev[1]) / (n_new - 1))
    return toks


def variant(model, name: str):
    import torch._inductor.config as ic
    from transformers import CompileConfig

    torch._dynamo.reset()
    CACHES.clear()
    attn = "eager" if "_eagerattn" in name else "flex_attention" if "_flex" in name else "sdpa"
    model.set_attn_implementation(attn)
    ic.coordinate_descent_tuning = not name.startswith("ro")
    ic.freezing = "_frz" in name  # weights as constants: Inductor concatenates linears sharing an input
    if name == "eager":
        return model.forward
    if name.startswith("ro"):
        return model.get_compiled_call(CompileConfig(fullgraph=True, mode="reduce-overhead"))
    mode = "max-autotune-no-cudagraphs" if name.startswith("ma_nocg") else "max-autotune"
    return torch.compile(model.forward, mode=mode, fullgraph=True)


def profile(model, step, ids, mask, n_new: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with prof(activities=acts) as p:
        loop(model, step, ids, mask, n_new)  # the timed shape: no recompilation inside the profile
        sync()
    key = "cuda_time_total" if DEVICE == "cuda" else "cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=90), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default="eager,ro,ma,ma_nocg")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--profile", default=None, help="variants (comma-separated) whose decoding steps to profile")
    ap.add_argument("--shape", choices=["tinyllama", "llama32"], default="tinyllama",
                    help="TinyLlama-1.1B's shape (lm_gpu.FULL) or Llama-3.2-1B's (lm_gpu.LLAMA32)")
    a = ap.parse_args()
    set_shape(a.shape)
    res: dict = {"peak": peak(a.tiny), "torch": torch.__version__, "shape": a.shape}
    import transformers

    res["transformers"] = transformers.__version__
    model, _ = build(a.tiny)
    n_new, p = (8, 10) if a.tiny else (128, 100)
    res["weight_bytes_read"] = weight_bytes_read(model)
    for bs, ids, mask, bound, rec in decode_batches(model, res, a.batch, p, n_new):
        ref = None
        for name in a.variants.split(","):
            try:
                step = variant(model, name)
                t0 = time.perf_counter()
                steps: list = []
                t, toks = timed(lambda: loop(model, step, ids, mask, n_new, times=steps), 5, warmup=2)
                r = rec[name] = {"tok_s": bs * n_new / t, "of_bound": bs * n_new / t / bound,
                                 "ms_per_step": t / n_new * 1e3, "first_calls_s": time.perf_counter() - t0 - 5 * t,
                                 "decode_ms_per_step": sorted(steps[2:])[len(steps[2:]) // 2] if steps else None}
                if r["decode_ms_per_step"]:
                    r["decode_of_bound"] = 1e3 / r["decode_ms_per_step"] / bound
                if ref is None:
                    ref = toks
                r["same_tokens_as_first"] = float((toks == ref).all(-1).float().mean())
                r["first_diff_at"] = int((toks != ref).any(0).float().argmax()) if (toks != ref).any() else None
            except Exception as e:  # noqa: BLE001 - report and go on
                rec[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
            print(bs, name, json.dumps(rec[name], default=float)[:400], flush=True)
            if name in (a.profile or "").split(",") and "error" not in rec[name]:
                profile(model, step, ids, mask, n_new)
            if a.out:
                a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    sync()
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
