"""Greedy decoding through :func:`harness.models.causal_decode.decode_static`, one CUDA graph per step against one
per chunk of steps (issue 20). One process, one JSON.

Variants (``--variants``), each on transformers' model and ``StaticCache``:

* ``trees``/``trees_tuned``: the step compiled with torch's own CUDA graphs, one graph replayed per token
  (``compiled_step(model, tuned, cudagraphs=True)``, ``graph=False``; the harness's loop until 2026-12-01; the
  prompt's forward eager);
* ``graph``/``graph_tuned``: the step compiled without CUDA graphs and a chunk of ``CHECK_EVERY`` steps recorded as
  one CUDA graph by the loop (``cudagraphs=False``, ``graph=True``; the prompt's forward padded to a multiple of 32
  tokens and recorded as one CUDA graph too): the harness's loop now. ``graph_tuned`` is the harness's tuned step,
  which also takes programmatic dependent launch and, at batch 1, eager attention;
* suffixes, each a fresh compilation of the step outside the harness's settings: ``_eagerattn`` sets the model's
  attention to transformers' eager attention (plain matmul/softmax ops, which Inductor fuses) instead of SDPA, for
  the prompt's forward too; ``_pdl`` adds Inductor's programmatic dependent launch (``triton.enable_pdl``);
  ``_fused`` moves the step's input-buffer updates into the compiled step; ``_eagerprompt`` keeps the prompt's
  forward eager and unpadded (as the loop ran it before the runs of 2026-12-01c); ``_r2`` widens coordinate
  descent's search to two steps per field (``coordinate_descent_search_radius=2``) and ``_all`` makes it try every
  combination of the fields' neighbours (``coordinate_descent_check_all_directions``), otherwise as the harness's
  tuned step (``graph_tuned_r2``: its programmatic dependent launch and one-row eager attention kept);
  ``graph_tuned_nopdl`` is the harness's tuned step without programmatic dependent launch; ``_dobench`` has the
  launch-time autotuner of Triton kernels time them with Triton's ``do_bench`` instead of the harness's kernel
  time for the whole process (:func:`use_timer`; ``graph_tuned_dobench`` is the harness's tuned step of
  2026-12-01g). The harness's tuned step times that tuner by GPU kernel time since 2026-12-01h
  (``causal_decode.KernelTimer``), and so do the ``_r2``/``_all``/``_nopdl`` variants, "as the harness's tuned
  step"; every result records its ``autotune_timer``.

For each batch size (``--batch``): tokens/s over 128 new tokens after 100-token prompts (median of ``--repeats``
calls after two warm-up calls, whose time is the compilation and recording), the prompt's forward alone (a replay of
its recording where the variant records it, else eager; wall time, device synchronised; the rest is the decoding
steps), the share of the bandwidth bound (weights read plus KV bytes per step over the measured copy bandwidth, as
benchmarks/lm_gpu.py) for the whole call and for the decoding steps, and whether the tokens equal the first
variant's (bf16: kernels may round differently; reported, not asserted), and the CUDA graphs recorded over all calls
(a chunk length or a prompt width records once). ``--profile`` adds one call's CUDA time per kernel.

    python benchmarks/gen_b1.py --shape llama32 --out /tmp/gen_b1.json [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
from lm_gpu import (DEVICE, build, decode_batches, peak, random_ids, set_shape, sync, timed,  # noqa: E402
                    weight_bytes_read)

from harness.models import causal_decode  # noqa: E402


def fused_step(model):
    """:func:`~harness.models.causal_decode.greedy_step` that also updates the step's input buffers in place (the
    token fed next, the EOS flags, the position and cache position), so Inductor fuses those updates into its own
    kernels instead of four separate ones per step; returns the token."""
    inner = causal_decode.greedy_step(model)

    def step(*, cache, input_ids, attention_mask, position_ids, cache_position, unfinished, eos, pad_id):
        nxt, still = inner(cache=cache, input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids, cache_position=cache_position, unfinished=unfinished, eos=eos,
                           pad_id=pad_id)
        input_ids.copy_(nxt[:, None])
        unfinished.copy_(still)
        position_ids.add_(1)
        cache_position.add_(1)
        return nxt
    return step


def fused_chunk(self, step, pad_id: int, n: int) -> None:
    """:meth:`_Decoding.chunk` for :func:`fused_step` (only the token's copy into ``out`` stays outside)."""
    for j in range(n):
        self.out[:, j] = step(cache=self.cache, input_ids=self.cur, attention_mask=self.full, position_ids=self.pos,
                              cache_position=self.cp, unfinished=self.unfinished, eos=self.eos, pad_id=pad_id)


PLAIN_CHUNK = causal_decode._Decoding.chunk
RECORDINGS: list = []  # one entry per CUDA graph recorded (all variants: cleared before each)
_capture = causal_decode._Decoding._capture


def _counted_capture(self, work):
    RECORDINGS.append(1)
    return _capture(self, work)


causal_decode._Decoding._capture = _counted_capture
PROMPT_GRAPH_TOKENS = causal_decode.PROMPT_GRAPH_TOKENS
# suffixes that widen coordinate descent's search (Inductor options); with ``_tuned`` the rest is the harness's tuned
# step (programmatic dependent launch, eager attention for one-row batches)
SEARCH = {"_r2": ("coordinate_descent_search_radius", 2), "_all": ("coordinate_descent_check_all_directions", True)}


def use_timer(kind: str) -> str:
    """Set the timer of Inductor's launch-time autotuning (Triton kernels' configurations and coordinate descent)
    for the whole process: ``"kernel_time"``, the harness's tuned step's (:class:`causal_decode.KernelTimer`: GPU
    kernel time from the profiler); ``"do_bench"``, Triton's ``do_bench`` (a 256 MB flush before each timing, the
    median of CUDA-event timings; the harness's tuned step's on 2026-12-01g); ``"default"``, the timer this torch
    chose at import (by default its own ``InductorBenchmarker``: an L2-sized flush, the minimum). Returns the
    timer's class name. The tuner reads the module-level ``benchmarker`` of
    ``torch._inductor.runtime.triton_heuristics`` at every timing, so the swap takes effect for kernels tuned after
    it (their first launch)."""
    from torch._inductor.runtime import benchmarking, triton_heuristics

    default = benchmarking.benchmarker
    triton_heuristics.benchmarker = {"kernel_time": causal_decode.KernelTimer(default),
                                     "do_bench": benchmarking.TritonBenchmarker(), "default": default}[kind]
    return timer_name()


def timer_name() -> str:
    """The class name of the timer Inductor's autotuning uses now (:func:`use_timer`)."""
    from torch._inductor.runtime import triton_heuristics

    return type(triton_heuristics.benchmarker).__name__


def variant(model, name: str):
    """The step and ``graph`` flag of variant ``name`` (a fresh compilation)."""
    torch._dynamo.reset()
    model.__dict__.pop(causal_decode._STEPS_ATTR, None)
    model.__dict__.pop(causal_decode._CACHES_ATTR, None)
    model.set_attn_implementation("eager" if "_eagerattn" in name else "sdpa")
    tuned = "_tuned" in name
    # _eagerprompt: the prompt's forward eager and unpadded, as before 2026-12-01c (no batch is small enough to record)
    causal_decode.PROMPT_GRAPH_TOKENS = 0 if "_eagerprompt" in name else PROMPT_GRAPH_TOKENS
    fused = "_fused" in name
    causal_decode._Decoding.chunk = fused_chunk if fused else PLAIN_CHUNK
    trees = name.startswith("trees") and DEVICE == "cuda"
    options, eager_attention = step_options(name, trees)
    # eager_attention: a variant "as the harness's tuned step", which times its tuning by kernel time
    use_timer("do_bench" if "_dobench" in name else "kernel_time" if eager_attention else "default")
    if options is None:
        return causal_decode.compiled_step(model, tuned, cudagraphs=trees), DEVICE == "cuda" and not trees
    fn = fused_step(model) if fused else causal_decode.greedy_step(model)
    step = torch.compile(fn, fullgraph=True, dynamic=False, options=options)
    if eager_attention:  # as the harness's tuned step: eager attention for one-row batches
        step.attn_implementation = "eager"
    return step, DEVICE == "cuda" and not trees


def step_options(name: str, trees: bool = False) -> tuple[dict | None, bool]:
    """Variant ``name``'s Inductor options and whether its step takes eager attention at one row; ``(None,
    False)`` for a variant that is the harness's own step (``causal_decode.compiled_step``)."""
    tuned = "_tuned" in name
    search = {k: v for suffix, (k, v) in SEARCH.items() if suffix in name}
    like_harness = tuned and bool(search or "_nopdl" in name or "_dobench" in name)  # the harness's, but for these
    if "_fused" not in name and "_pdl" not in name and not like_harness:
        return None, False
    options = {"max_autotune": True, "coordinate_descent_tuning": True} if tuned else {}
    options["triton.cudagraphs"] = trees
    if "_pdl" in name or (like_harness and "_nopdl" not in name):
        options["triton.enable_pdl"] = True  # programmatic dependent launch for Inductor's Triton kernels
    options.update(search)
    return options, like_harness


def prefill_ms(model, ids, mask, n_new: int, step=None) -> float:
    """Median milliseconds of the prompt's forward into a static cache (eager unless ``step`` is given; wall time,
    device synchronised)."""
    state = causal_decode._decoding(model, ids.shape[0], causal_decode.cache_length(ids.shape[1], n_new), ids.device)
    step = step or causal_decode.greedy_step(model)
    pos = mask.cumsum(-1) - 1
    times = []
    for _ in range(7):
        state.reset([])
        sync()
        t0 = time.perf_counter()
        step(cache=state.cache, input_ids=ids, attention_mask=state.full, position_ids=pos,
             cache_position=torch.arange(ids.shape[1], device=ids.device), unfinished=state.unfinished,
             eos=state.eos, pad_id=0)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times[2:])[len(times[2:]) // 2]


def recorded_prompt_ms(model, ids, n_new: int) -> float | None:
    """Median milliseconds of a replay of the prompt's forward recorded by ``decode_static(graph=True)`` for this
    batch (wall time, device synchronised); ``None`` when none was recorded."""
    rows, width = ids.shape
    length = causal_decode.cache_length(width, n_new)
    state = causal_decode._decoding(model, rows, length, ids.device)
    graph = state.graphs.get(("prompt", causal_decode.prompt_width(rows, width, length - n_new)))
    if graph is None:
        return None
    times = []
    for _ in range(7):
        state.reset(state.eos_ids)  # the cache's own position counter back to 0 (transformers >= 5: on the device)
        sync()
        t0 = time.perf_counter()
        graph.replay()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times[2:])[len(times[2:]) // 2]


def kernel_table(call) -> dict:
    """One call of ``call`` under torch.profiler: ``{kernel name: [CUDA µs in total, launches]}`` for the GPU
    kernels (those replayed from CUDA graphs included), the largest first; without a GPU the same for the CPU's
    operators (self time), so that the CPU smoke run goes through this path."""
    from torch.profiler import ProfilerActivity, profile

    cuda = DEVICE == "cuda"
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        call()
        sync()
    rows = {}
    for e in prof.key_averages():
        us = (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)) if cuda \
            else e.self_cpu_time_total
        if us:
            rows[e.key] = [round(us, 1), e.count]
    return dict(sorted(rows.items(), key=lambda kv: -kv[1][0]))


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default="trees_tuned,graph_tuned,graph,graph_tuned_eagerattn")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", choices=["tinyllama", "llama32"], default="llama32")
    ap.add_argument("--profile", action="store_true",
                    help="also record one call's GPU kernels (torch.profiler): CUDA microseconds and launches per "
                         "kernel name, to compare compilations kernel by kernel")
    ap.add_argument("--compiled-prefill", action="store_true",
                    help="also time the prompt's forward compiled with dynamic shapes (one compilation for every "
                         "prompt width), at two widths")
    a = ap.parse_args()
    set_shape(a.shape)
    import transformers

    from torch._inductor.runtime import benchmarking

    res: dict = {"peak": peak(a.tiny), "torch": torch.__version__, "transformers": transformers.__version__,
                 "shape": a.shape, "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                 # the autotuner's timer (TORCHINDUCTOR_USE_EXPERIMENTAL_BENCHMARKER=0: Triton's do_bench)
                 "inductor_benchmarker": type(benchmarking.benchmarker).__name__}
    model, _ = build(a.tiny)
    n_new, p = (16, 10) if a.tiny else (128, 100)
    res["weight_bytes_read"] = weight_bytes_read(model)
    if a.compiled_prefill:
        torch._dynamo.reset()
        model.set_attn_implementation("sdpa")
        pre = torch.compile(causal_decode.greedy_step(model), dynamic=True)
        out = res["compiled_prefill"] = {}
        for width in (p, p + 37):
            ids = random_ids(model, 1, width, seed=2)
            t0 = time.perf_counter()
            comp = prefill_ms(model, ids, torch.ones_like(ids), n_new, step=pre)
            out[f"width_{width}"] = {"eager_ms": prefill_ms(model, ids, torch.ones_like(ids), n_new),
                                     "compiled_ms": comp, "first_calls_s": time.perf_counter() - t0}
        print("compiled_prefill", json.dumps(out), flush=True)
    for bs, ids, mask, bound, rec in decode_batches(model, res, a.batch, p, n_new):
        ref = None
        for name in a.variants.split(","):
            try:
                step, graph = variant(model, name)

                def call():
                    return causal_decode.decode_static(model, ids, mask, max_new_tokens=n_new, eos_ids=[], pad_id=0,
                                                       step=step, graph=graph)
                t0 = time.perf_counter()
                RECORDINGS.clear()
                t, toks = timed(call, a.repeats, warmup=2)
                pre = recorded_prompt_ms(model, ids, n_new) if graph else None
                pre = pre if pre is not None else prefill_ms(model, ids, mask, n_new)
                dec = (t * 1e3 - pre) / (n_new - 1)
                r = rec[name] = {"tok_s": bs * n_new / t, "of_bound": bs * n_new / t / bound, "call_ms": t * 1e3,
                                 "first_two_calls_s": time.perf_counter() - t0 - a.repeats * t, "prefill_ms": pre,
                                 "decode_ms_per_step": dec, "decode_of_bound": 1e3 / dec * bs / bound,
                                 "recordings": len(RECORDINGS),
                                 "autotune_timer": getattr(step, "autotune_timer", timer_name())}
                if a.profile:
                    r["kernels"] = kernel_table(call)
                toks = torch.tensor(toks)
                ref = toks if ref is None else ref
                r["same_tokens_as_first"] = float((toks == ref).all(-1).float().mean())
            except Exception as e:  # noqa: BLE001 - report and go on
                rec[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-2000:]}
            print(bs, name, json.dumps(rec[name], default=float)[:600], flush=True)
            if a.out:
                a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
