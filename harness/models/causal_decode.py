"""Greedy decoding with transformers' ``StaticCache`` and a compiled step, with no host sync per token (issue 20).

transformers' ``generate`` reads one flag from the GPU at every step (``unfinished_sequences.max() == 0``) and
runs its logits processors and input preparation on the host, about 1.2 ms per token on an H200, which leaves a
1.1B model at 17% of the memory-bandwidth bound at batch 1 (benchmarks/gen_ceiling.py). This loop keeps the tokens
on the GPU: each step feeds its argmax to the next, and :data:`CHECK_EVERY` steps make a chunk, recorded once as
one CUDA graph and replayed (one launch per chunk, no Python per step); at small batches the prompt's forward is
recorded too (padded to a multiple of 32 tokens). After each chunk the host copies the
tokens back asynchronously and looks at the previous chunk's copy, so the GPU always has a chunk queued. The
model, its attention and its cache are transformers', the compiler torch's; the harness adds the greedy step
around the model's forward and the loop (the recipe of transformers' "static cache and torch.compile"
documentation, with the argmax inside the compiled graph and the stop checks moved off the critical path).

Measured (``python benchmarks/lm_gpu.py --sections peak gen``: H200, torch 2.11, transformers 5.17, bf16, 128 new
tokens after 100-token prompts): at batch 1, 493 tokens/s (untuned) and 769 (tuned) for a 1.1B TinyLlama-shaped model
(2026-12-01, before the prompt's forward was recorded); for a 1.24B Llama-3.2-1B-shaped one, with the prompt
recorded, 643-652 tokens/s untuned (38-39% of its bandwidth bound, three leases) and 609-847 tuned (36-50%, the
tuner on Inductor's default timer; in six fresh processes that compiled it alone, 61.7-64.1%, since its autotuning
is timed by GPU kernel time: :class:`KernelTimer`, :func:`compiled_step`), against 56-92 for plain ``generate``;
15,740 tokens/s at batch 64, 3.8x plain ``generate``. The step (:func:`greedy_step`) holds the forward, the
argmax and the EOS bookkeeping.

For the models it applies to (:func:`graph_loop_unavailable`: among others, no logits processing in the
``generation_config``), outputs equal ``generate``'s (``do_sample=False``) token for token where the step computes
the same logits (on a GPU in bf16 the compiled kernels may round differently, as ``generate``'s own do): a row
that emits an EOS id is padded with ``pad_id`` afterwards, as ``generate`` pads finished rows; rows that reach a stop
sequence keep decoding until every row is done (their text is cut at the stop sequence afterwards, so the text is
the same).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import Callable

import torch

from harness.models.placement import input_device

__all__ = ["CHECK_EVERY", "CACHE_BUCKET", "PROMPT_BUCKET", "PROMPT_GRAPH_TOKENS", "GraphRecordingError",
           "graph_loop_unavailable", "greedy_step", "compiled_step", "decode_static", "cache_length", "prompt_width",
           "mark_failed"]

logger = logging.getLogger(__name__)

CHECK_EVERY = 8  # decoding steps between two looks at the tokens on the host
CACHE_BUCKET = 256  # the static cache's length is rounded up to a multiple of this (fewer compiled shapes)
# a recorded prompt forward (decode_static with graph=True) pads the prompt on the left to a multiple of this many
# tokens (fewer recordings), for batches of at most PROMPT_GRAPH_TOKENS padded tokens; larger ones run eager and
# unpadded. H200, 1.24B llama shape, 100-token prompts: at batch 1 (128 padded tokens) a replay took 3.2 ms against
# 16-27 ms eager (the eager forward is launch-bound); at batch 64 (8192 padded tokens) 48 ms against 44 ms (compute-
# bound: the padding costs more than the launches); benchmarks/results/2026-12-01c-*
PROMPT_BUCKET, PROMPT_GRAPH_TOKENS = 32, 2048
_MAX_PROMPTS = 16  # recorded prompt widths kept per static cache (the least recently used one goes)
# per model, as attributes of the model itself (the compiled call holds the model, so a global dict keyed weakly
# by the model would keep it alive): {tuned: compiled call} and {(rows, length): StaticCache}
_STEPS_ATTR, _CACHES_ATTR = "_harness_decode_steps", "_harness_static_caches"
_FAILED_ATTR = "_harness_decode_failed"  # why the compiled step failed on this model (not tried again)
_PROMPT_FAILED_ATTR = "_harness_prompt_graph_failed"  # why recording its prompt's forward failed (then eager)
_MAX_CACHES = 1  # static caches kept per model between calls (as generate keeps one): the memory of one batch
# generation_config fields whose non-neutral values make generate(do_sample=False) process the logits before its
# argmax; the loop takes the plain argmax, so such a model keeps generate
_PROCESSORS = {"repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
               "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
               "min_new_tokens": (None, 0), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
               "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "sequence_bias": (None,),
               "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0),
               "watermarking_config": (None,)}


class GraphRecordingError(RuntimeError):
    """Recording a chunk of decoding steps as a CUDA graph failed (the step did something a recording cannot hold,
    such as a host sync); the caller falls back to ``generate``, as for a compiler error. (A prompt's forward that
    cannot be recorded runs eager instead: :func:`decode_static`.)"""


def graph_loop_unavailable(model) -> str | None:
    """Why :func:`decode_static` does not apply to ``model`` (``None`` when it does).

    It applies to a model on one CUDA device whose class transformers declares compilable as a whole
    (``_can_compile_fullgraph``), not quantized, without peft adapter layers (a LoRA blend's alpha is a Python
    float in peft's layers, so every alpha would compile the step again), whose ``generation_config`` asks for no
    logits processing under greedy decoding (``repetition_penalty``, ``no_repeat_ngram_size``, ``bad_words_ids``,
    ``min_new_tokens``, ... : ``generate`` applies them, the loop takes the plain argmax), and whose compiled step
    has not failed before in this process.
    """
    if input_device(model).type != "cuda":
        return "the model is not on a CUDA device"
    if model.__dict__.get(_FAILED_ATTR):
        return f"its compiled step failed earlier in this process ({model.__dict__[_FAILED_ATTR]})"
    config = getattr(model, "generation_config", None)
    active = sorted(k for k, neutral in _PROCESSORS.items()
                    if config is not None and getattr(config, k, None) not in neutral
                    and getattr(config, k, None) != [] and getattr(config, k, None) != {})
    if active:
        return f"its generation_config processes logits under greedy decoding ({', '.join(active)})"
    if not getattr(model, "_can_compile_fullgraph", False):
        return f"transformers does not declare {type(model).__name__} compilable as a whole"
    if getattr(model, "hf_quantizer", None) is not None:
        return "the model is quantized"
    if len(set((getattr(model, "hf_device_map", None) or {}).values())) > 1:
        return "the model is spread over several devices"
    if any(type(m).__module__.startswith("peft.") for m in model.modules()):
        return "the model has peft adapter layers (each alpha would compile the step again)"
    if _sliding_window(model):
        return ("its static cache has sliding-window layers (they keep host-side counters that a recorded CUDA graph "
                "would freeze)")
    return None


def _sliding_window(model) -> bool:
    """Whether transformers' ``StaticCache`` for ``model`` has sliding-window layers (its tensors are allocated
    lazily, so building one to look costs nothing)."""
    from transformers import StaticCache

    try:
        cache = StaticCache(config=model.config, max_cache_len=8)
    except Exception:  # noqa: BLE001 - a config StaticCache cannot take: the compiled step would fail and fall back
        return False
    return any(getattr(layer, "is_sliding", False) for layer in cache.layers)


def greedy_step(model) -> Callable:
    """One greedy decoding step of ``model`` as a function of tensors: the forward, the argmax and the EOS
    bookkeeping, so that a compiled step (:func:`compiled_step`) runs all of it in one CUDA graph.

    The returned ``step(*, cache, input_ids, attention_mask, position_ids, cache_position, unfinished, eos, pad_id)``
    takes ``input_ids``/``position_ids`` ``(rows, n)`` int64, the cache's ``attention_mask`` ``(rows, length)``,
    ``cache_position`` ``(n,)``, ``unfinished`` ``(rows,)`` bool, ``eos`` ``(k,)`` int64 (k >= 1) and the int
    ``pad_id``, and returns ``(next_tokens, unfinished)``: ``(rows,)`` int64 (the last position's argmax, ``pad_id``
    for finished rows, as ``generate`` pads them) and ``(rows,)`` bool (cleared for rows that just emitted an EOS id).
    """
    kw = _cache_kwarg(model)

    def step(*, cache, input_ids, attention_mask, position_ids, cache_position, unfinished, eos, pad_id):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       cache_position=cache_position, logits_to_keep=1, use_cache=True, **{kw: cache}).logits
        nxt = torch.where(unfinished, logits[:, -1].argmax(-1), pad_id)
        # a broadcast compare, not torch.isin (whose CUDA kernel may take a sort-based path inside a recorded graph)
        return nxt, unfinished & ~(nxt[:, None] == eos).any(-1)
    return step


def compiled_step(model, tuned: bool = False, cudagraphs: bool = False) -> Callable:
    """:func:`greedy_step` of ``model`` compiled (built once per model and setting; compiles lazily, at its first
    call), ``fullgraph=True, dynamic=False``.

    ``tuned=False``: Inductor's default kernels (cuBLAS for the projections, as transformers' own compiled call,
    ``CompileConfig``). ``tuned=True``: ``max-autotune`` (Inductor's kernels timed against cuBLAS) with
    coordinate-descent tuning (the gpt-fast setting) and programmatic dependent launch for Inductor's Triton
    kernels on Hopper and later GPUs (``triton.enable_pdl``, where this torch has it); for one-row batches also
    transformers' eager attention in the step (``attn_implementation = "eager"`` on the returned callable:
    :func:`decode_static` switches the model to it while the step runs, and back; Inductor then fuses plain
    matmul/softmax ops instead of calling SDPA's kernel, which at one query is mostly launch latency). The tuner
    times kernels by their GPU time while the step runs (:class:`KernelTimer`, :func:`_timed_by_kernel_time`). Its
    speed is set by its compilation: coordinate descent picks each Triton kernel's block sizes and warps by timing
    candidates. Timed by CUDA events around each launch (Inductor's default timer, or ``do_bench``), a few picks
    differed between compilations by up to 36x for that kernel in the step (benchmarks/tuning_draws.py compares
    draws kernel by kernel); the tuner's logs, kept for ``do_bench`` only, show timings dominated by the host's
    launch (benchmarks/tuner_log.py). On an H200, a Llama-3.2-1B-shaped model at
    batch 1, six compilations alone in their process with an empty Inductor cache gave 61.7-64.1% of the bandwidth
    bound with kernel time (median 62.75%), against 44.1-60.6% (median 54.4%, eleven) with ``do_bench`` and
    39.8-58.3% (median 50.3%, fourteen) with Inductor's default timer; the untuned step held 38-39% on every lease.
    The picks are kept in the Inductor cache and reused by later processes (a cache from before the timer change
    keeps its picks). At batch 64 the tuned step (``do_bench`` timer) was slower than the untuned one (15,169
    against 19,449 tokens/s, one compilation each), so it is for small batches. Its first call is longer (19-161 s
    measured against 10-23 s untuned; with kernel time the 1.24B shape's first two calls took 94-106 s); README
    "Performance" has the numbers.

    ``cudagraphs=False``: what :func:`decode_static` takes with ``graph=True``, which records whole chunks of steps
    as one CUDA graph. ``cudagraphs=True``: torch's own CUDA graphs, one per step (the ``reduce-overhead`` and
    ``max-autotune`` modes; kept for benchmarks/gen_b1.py, which compares the two).
    """
    steps = _per_model(model, _STEPS_ATTR)
    if (tuned, cudagraphs) not in steps:
        import torch._inductor.config as inductor_config

        # torch.compile takes a mode or options, not both: these are the modes' options (torch's list_mode_options)
        options = {"max_autotune": True, "coordinate_descent_tuning": True} if tuned else {}
        if tuned and hasattr(inductor_config.triton, "enable_pdl"):
            options["triton.enable_pdl"] = True
        options["triton.cudagraphs"] = cudagraphs
        step = torch.compile(greedy_step(model), fullgraph=True, dynamic=False, options=options)
        step = _timed_by_kernel_time(step) if tuned else step
        step.attn_implementation = "eager" if tuned else None
        steps[tuned, cudagraphs] = step
    return steps[tuned, cudagraphs]


class KernelTimer:
    """Inductor's autotuning timer for the tuned step: a kernel's time is its GPU time from the profiler
    (``torch._inductor.utils.do_bench_using_profiling``: the device time of the GPU work inside each timed call,
    which also counts Inductor's clones of mutated arguments, the same for every configuration; L2 flushed before
    each call; averaged), not the wall time between two CUDA events around the call.

    Why: Inductor times a candidate configuration by launching it from Python, so for a kernel of a few
    microseconds the events can also time the host's launch while the GPU waits for it. On an H200 (Llama-3.2-1B
    shape, batch 1, 2026-12-01h, Triton's ``do_bench`` as the timer, the tuner's debug log written to a file) the
    first RMSNorm kernel's starting configuration measured 5.0 µs and each of the four neighbours coordinate
    descent then tried 46-108 µs; coordinate descent improved 0-2 of 28 kernels in each of four draws. With this
    timer (one logged draw) that kernel's starting configuration measured 1.9 µs and its neighbours 1.8-2.0 µs,
    coordinate descent improved 25 of 28 kernels, and six compilations ran at 0.925-0.942 ms per decoding step,
    61.7-64.1% of the bandwidth bound (README "Performance"). Torch names the same remedy for its bandwidth profiler
    (``profile_bandwidth_with_do_bench_using_profiling``) and, in later releases, offers a profiler-based
    autotuning timer for the whole process (``TORCHINDUCTOR_USE_TORCH_PROFILER_BENCHMARKER``).

    Duck-types ``torch._inductor.runtime.benchmarking.Benchmarker`` for the launch-time tuner's calls:
    :meth:`benchmark` (``bench`` calls it with ``fn=``, ``device=``, ``rep=`` and ``is_vetted_benchmarking=``) and
    :meth:`benchmark_gpu` (what older torch's ``bench`` calls). A callable on another device, or no device given,
    goes to ``fallback`` (the process's timer), as does every other attribute. So does a timing inside a running
    profiler (profilers do not nest; a warning, once, says so: those picks are kept in the Inductor cache) or after
    the profiler failed to record GPU events (a warning, once; the tuning goes on with ``fallback``).
    ``warmup``/``rep`` are milliseconds as Inductor passes them (``rep=40`` for Triton kernels); at most
    ``rep_ms`` of them are profiled, since kernel time does not carry the host's jitter. Returns milliseconds per
    call; ``inf`` for a configuration the GPU rejects ("invalid configuration", as Inductor's timers); other errors
    propagate.
    """

    def __init__(self, fallback, rep_ms: float = 10.0) -> None:
        self.fallback = fallback
        self.rep_ms = rep_ms
        self.off: str | None = None  # why the profiler path is off for the rest of this timer's life
        self._warned: set[str] = set()

    def benchmark(self, fn, fn_args=None, fn_kwargs=None, device=None, **kwargs) -> float:
        """Milliseconds per call of ``fn(*fn_args, **fn_kwargs)`` (see the class)."""
        if device is None or torch.device(device).type != "cuda":
            return self.fallback.benchmark(fn, fn_args, fn_kwargs, device=device, **kwargs)
        args, kw = fn_args or (), fn_kwargs or {}
        timed = self._profiled(lambda: fn(*args, **kw), kwargs)
        return self.fallback.benchmark(fn, fn_args, fn_kwargs, device=device, **kwargs) if timed is None else timed

    def benchmark_gpu(self, _callable, **kwargs) -> float:
        """Milliseconds per call of the GPU callable ``_callable`` (see the class)."""
        timed = self._profiled(_callable, kwargs)
        return self.fallback.benchmark_gpu(_callable, **kwargs) if timed is None else timed

    def _profiled(self, call: Callable, kwargs: dict) -> float | None:
        """The profiler's milliseconds per call, ``inf`` for a rejected configuration, ``None`` to fall back."""
        from torch.autograd import profiler

        if profiler._is_profiler_enabled:
            self._warn_once("profiler", "a profiler is running (profilers do not nest); the kernels tuned now keep "
                                        "those picks in the Inductor cache")
            return None
        if self.off is not None:
            return None
        from torch._inductor.utils import do_bench_using_profiling

        timing = {"warmup": min(kwargs.get("warmup", 25), self.rep_ms), "rep": min(kwargs.get("rep", 100), self.rep_ms)}
        if "is_vetted_benchmarking" in inspect.signature(do_bench_using_profiling).parameters:
            timing["is_vetted_benchmarking"] = bool(kwargs.get("is_vetted_benchmarking", False))
        try:
            return do_bench_using_profiling(call, **timing)
        except Exception as e:  # noqa: BLE001 - Inductor's timers skip a configuration the GPU rejects, so do we
            text = str(e).lower()
            if "invalid configuration" in text:
                return float("inf")
            if isinstance(e, RuntimeError) and ("profiling events" in text or "device events" in text):
                self.off = f"the profiler recorded no GPU events ({e})"
                self._warn_once("off", self.off)
                return None
            raise

    def _warn_once(self, key: str, why: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("the tuned step's autotuning times kernels with the process's timer, not GPU kernel "
                           "time: %s", why)

    def __getattr__(self, name: str):
        if name == "fallback" or name.startswith("__"):  # no recursion while copying or unpickling
            raise AttributeError(name)
        return getattr(self.fallback, name)


def _timed_by_kernel_time(step: Callable) -> Callable:
    """``step`` whose calls run with the launch-time autotuning of Inductor's Triton kernels (their configurations
    and coordinate descent) timing kernels by :class:`KernelTimer` instead of the process's timer. That tuner reads
    ``torch._inductor.runtime.triton_heuristics.benchmarker`` at each timing and tunes a kernel at its first
    launch, inside the step's first call; the previous timer is restored after every call (also on an error).
    Max-autotune's compile-time choices keep their timer. The swap is a process-global attribute: two threads
    calling tuned steps at once could leave it set (the harness calls them from one thread). Where this torch has
    no such module, ``step`` is returned as is. ``autotune_timer`` on the returned callable names the timer set.
    Measured on benchmarks/gen_b1.py: README "Performance" (issue 20)."""
    try:
        from torch._inductor.runtime import triton_heuristics

        triton_heuristics.benchmarker  # noqa: B018 - present in this torch
    except (ImportError, AttributeError):
        return step

    timer = KernelTimer(None)  # one per step: a profiler that failed once is not tried at every call

    def timed_step(**kwargs):
        old = triton_heuristics.benchmarker
        if old is not timer:  # a nested call keeps the outer call's fallback
            timer.fallback = old
        triton_heuristics.benchmarker = timer
        try:
            return step(**kwargs)
        finally:
            triton_heuristics.benchmarker = old

    timed_step.autotune_timer = KernelTimer.__name__
    return timed_step


@contextlib.contextmanager
def _attention(model, name: str | None):
    """Within the block, ``model`` runs transformers' attention implementation ``name`` (unchanged when ``None``
    or already so); the previous one is restored after, also on an error."""
    old = getattr(model.config, "_attn_implementation", None)
    if name is None or name == old or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


def _per_model(model, attr: str) -> dict:
    """The dict stored on ``model`` under ``attr`` (created empty); it lives and dies with the model."""
    if attr not in model.__dict__:
        model.__dict__[attr] = {}
    return model.__dict__[attr]


def mark_failed(model, reason: str) -> None:
    """Record that the compiled step failed on ``model``: :func:`graph_loop_unavailable` then says so and the
    caller keeps ``generate`` (a step is not compiled again and again)."""
    model.__dict__[_FAILED_ATTR] = reason
    model.__dict__.pop(_CACHES_ATTR, None)  # the static cache and recorded graphs: their memory is freed


def prompt_width(rows: int, width: int, most: int) -> int | None:
    """The width a recorded prompt forward pads a ``(rows, width)`` batch to: ``width`` rounded up to a multiple
    of :data:`PROMPT_BUCKET` (fewer widths, so fewer recordings), at most ``most`` (the cache's room for the
    prompt) and never below ``width``; ``None`` (the prompt runs eager, unpadded) when the padded batch would
    exceed :data:`PROMPT_GRAPH_TOKENS` tokens."""
    padded = max(width, min(-(-width // PROMPT_BUCKET) * PROMPT_BUCKET, most))
    return padded if padded * rows <= PROMPT_GRAPH_TOKENS else None


def cache_length(longest_prompt: int, max_new_tokens: int) -> int:
    """The static cache's length for prompts up to ``longest_prompt`` tokens: the tokens needed rounded up to a
    multiple of :data:`CACHE_BUCKET` (fewer distinct shapes, so fewer compilations)."""
    return -(-(longest_prompt + max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET


class _Decoding:
    """The fixed-address state of one batch shape: the ``StaticCache`` and the step's input buffers, which a
    chunk of steps updates in place (so one CUDA graph can replay a whole chunk), and that graph."""

    def __init__(self, model, rows: int, length: int, device: torch.device) -> None:
        from transformers import StaticCache

        self.cache = StaticCache(config=model.config, max_cache_len=length)
        self.full = torch.ones(rows, length, dtype=torch.long, device=device)  # attention mask over the cache
        self.cur = torch.zeros(rows, 1, dtype=torch.long, device=device)  # the token fed to the next step
        self.pos = torch.zeros(rows, 1, dtype=torch.long, device=device)  # its position id
        self.cp = torch.zeros(1, dtype=torch.long, device=device)  # its cache position
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        self.out = torch.zeros(rows, CHECK_EVERY, dtype=torch.long, device=device)  # one chunk's tokens
        self.eos, self.eos_ids = torch.tensor([-1], dtype=torch.long, device=device), [-1]
        self.graphs: dict = {}  # steps per chunk, or ("prompt", width) -> its recording (torch.cuda.CUDAGraph), all
        # from one memory pool
        self.graph_key: tuple | None = None  # what they were recorded with
        self.pool = None
        self.prompts: dict = {}  # padded prompt width -> (ids, position ids, cache positions): a recording's inputs

    def reset(self, eos_ids: list[int]) -> None:
        """Zero the cache for a new batch and take its EOS ids (new ids: a new buffer, so the graphs go)."""
        self.cache.reset()
        eos = list(eos_ids) or [-1]  # -1: no id matches
        if eos != self.eos_ids:  # a new buffer: a recorded chunk read the old one
            self.eos, self.eos_ids = torch.tensor(eos, dtype=torch.long, device=self.eos.device), eos
            self.drop_graphs()

    def drop_graphs(self) -> None:
        """Forget the recorded chunks and their memory pool (a pool is not reused once its graphs are gone)."""
        self.graphs.clear()
        self.pool = None

    def chunk(self, step: Callable, pad_id: int, n: int) -> None:
        """``n`` (<= :data:`CHECK_EVERY`) greedy steps, each feeding its token to the next, their tokens into
        ``out[:, :n]``."""
        for j in range(n):
            nxt, still = step(cache=self.cache, input_ids=self.cur, attention_mask=self.full, position_ids=self.pos,
                              cache_position=self.cp, unfinished=self.unfinished, eos=self.eos, pad_id=pad_id)
            self.out[:, j] = nxt
            self.cur.copy_(nxt[:, None])
            self.unfinished.copy_(still)
            self.pos.add_(1)
            self.cp.add_(1)

    def prompt(self, step: Callable, pad_id: int, ids: torch.Tensor, pos: torch.Tensor, cp: torch.Tensor) -> None:
        """The prompt's forward (``ids``/``pos`` ``(rows, width)``, cache positions ``cp`` ``(width,)``) into the
        cache with ``step``, its greedy token into ``cur`` and the next step's inputs set."""
        nxt, still = step(cache=self.cache, input_ids=ids, attention_mask=self.full, position_ids=pos,
                          cache_position=cp, unfinished=self.unfinished, eos=self.eos, pad_id=pad_id)
        self.cur.copy_(nxt[:, None])
        self.unfinished.copy_(still)
        self.pos.copy_(pos[:, -1:] + 1)
        self.cp.fill_(ids.shape[1])

    def keyed(self, key: tuple) -> None:
        """Drop the recordings when ``key`` (what they read besides their buffers) differs from theirs."""
        if self.graph_key != key:
            self.drop_graphs()
            self.graph_key = key

    def recorded_prompt(self, step: Callable, pad_id: int, ids: torch.Tensor, pos: torch.Tensor,
                        key: tuple) -> str | None:
        """:meth:`prompt` replayed from a CUDA graph (one per prompt width, at most :data:`_MAX_PROMPTS` kept),
        recorded first when none matches ``key`` (as :meth:`recorded_chunk`; ``key`` also holds the decoding step,
        so a new step records the prompt again): the eager forward is launch-bound at small batches (16-27 ms for a
        1.24B model at batch 1 on an H200, against a 3.2 ms replay). The first call at a width runs the forward for
        real on a side stream, then records it; on a fresh cache (its tensors not yet allocated) the forward runs
        eager on the current stream and records at the next call. Returns why the recording failed (for lack of
        memory too: the forward had already run, so its result stands; the recordings of this state are dropped),
        else ``None``."""
        self.keyed(key)
        width = ids.shape[1]
        bufs = self.prompts.pop(width, None)
        if bufs is None:
            bufs = (torch.empty_like(ids), torch.empty_like(pos), torch.arange(width, device=ids.device))
        self.prompts[width] = bufs  # most recently used last
        while len(self.prompts) > _MAX_PROMPTS:
            old = next(iter(self.prompts))
            self.prompts.pop(old)
            self.graphs.pop(("prompt", old), None)
        bufs[0].copy_(ids)
        bufs[1].copy_(pos)
        if ("prompt", width) in self.graphs:
            self.graphs["prompt", width].replay()
            return None
        if not all(getattr(layer, "is_initialized", True) for layer in getattr(self.cache, "layers", ())):
            self.prompt(step, pad_id, *bufs)  # allocates the cache's tensors on this stream, not a side stream
            return None
        work = functools.partial(self.prompt, step, pad_id, *bufs)
        self._warm(work)
        try:
            self.graphs["prompt", width] = self._capture(work)
        except (GraphRecordingError, torch.cuda.OutOfMemoryError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    def recorded_chunk(self, step: Callable, pad_id: int, n: int, key: tuple) -> None:
        """:meth:`chunk` replayed from a CUDA graph (one per ``n``), recorded first when none matches ``key``
        (``step``, ``pad_id`` and what else the graph reads in place: the addresses of the model's parameters and
        buffers, ...). A recording is preceded by the same chunk run for real on a side stream, which compiles the
        step and warms its kernels (a recording runs nothing, and must not compile)."""
        self.keyed(key)
        if n in self.graphs:
            self.graphs[n].replay()
            return
        work = functools.partial(self.chunk, step, pad_id, n)
        self._warm(work)
        try:
            graph = self._capture(work)
        except GraphRecordingError as e:
            raise GraphRecordingError(f"recording {n} decoding steps as a CUDA graph failed ({e}); generation falls "
                                      "back to transformers' generate (--generation-cache dynamic skips the "
                                      "attempt)") from e
        self.graphs[n] = graph

    @staticmethod
    def _warm(work: Callable[[], None]) -> None:
        """``work`` run for real on a side stream, before it is recorded: this call's work, which also compiles
        and warms the kernels (a recording runs nothing, and must not compile)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            work()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, work: Callable[[], None]):
        """``work`` recorded as a CUDA graph in the shared pool (running nothing), for the next calls. Raises
        :class:`GraphRecordingError` when the recording fails, or ``torch.cuda.OutOfMemoryError``; either way the
        recordings of this state are dropped."""
        # recordings run one after another and none leaves a live tensor in the pool: they share one
        self.pool = self.pool or torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            # records, running nothing; other threads' CUDA calls do not disturb the recording
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                work()
        except torch.cuda.OutOfMemoryError:
            self.drop_graphs()
            raise
        except RuntimeError as e:
            self.drop_graphs()
            raise GraphRecordingError(str(e)) from e
        return graph


def _decoding(model, rows: int, length: int, device: torch.device) -> _Decoding:
    """The :class:`_Decoding` of this shape, reused across calls (its cache reset) so recorded graphs see the same
    addresses; at most :data:`_MAX_CACHES` kept per model (an older one is dropped, with its graph)."""
    states = _per_model(model, _CACHES_ATTR)
    key = (rows, length, str(device), model.dtype)  # a model moved or cast gets a new cache
    state = states.pop(key, None)
    if state is None:
        while len(states) >= _MAX_CACHES:
            states.pop(next(iter(states)))
        state = _Decoding(model, rows, length, device)
    states[key] = state  # most recently used last
    return state


def _cache_kwarg(model) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values``, whichever the forward takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def decode_static(model, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, eos_ids: list[int],
                  pad_id: int, step: Callable | None = None, graph: bool = False, length: int | None = None,
                  finished: Callable[[list[list[int]]], list[bool]] | None = None) -> list[list[int]]:
    """Greedy new tokens for a left-padded batch, decoded with a ``StaticCache`` and no host sync per step.

    The prompt's forward gives the first new token; the rest come in chunks of :data:`CHECK_EVERY` steps, each
    step feeding its token to the next on the device. After each chunk the host copies the tokens back
    asynchronously and looks at the previous chunk's copy, so the device always has a chunk queued.

    Parameters
    ----------
    model
        A transformers causal LM (its forward takes ``cache_position``, ``position_ids``, ``logits_to_keep``).
    ids, mask : torch.Tensor
        ``(rows, width)`` int64 token ids and attention mask (1 = token, 0 = left padding) on the model's device.
    max_new_tokens : int
        New tokens per row (>= 1).
    eos_ids : list of int
        A row is finished after emitting one of these; it emits ``pad_id`` afterwards (as ``generate``).
    pad_id : int
    step : callable, default=None
        The step used for every new token after the first (:func:`compiled_step`, or any callable with
        :func:`greedy_step`'s signature); ``None``: :func:`greedy_step` of the model, eager (e.g. on a CPU).
    graph : bool, default=False
        CUDA only: record a chunk of steps as one CUDA graph (at the first call for this shape, step and weights,
        and one more for a last, shorter chunk; ``step`` must not record graphs itself: :func:`compiled_step` with
        ``cudagraphs=False``) and replay it for every chunk: one launch per :data:`CHECK_EVERY` tokens. For
        batches of at most :data:`PROMPT_GRAPH_TOKENS` tokens the prompt's forward is recorded too (eager kernels,
        one graph per width), the batch first left-padded to a multiple of :data:`PROMPT_BUCKET` tokens
        (:func:`prompt_width`; the padding is masked, as a batch's shorter rows are; in bf16 the kernels for the
        wider batch may round differently). The graphs read the weights where they are: writing them in place (a
        blend) is seen; moving or casting them, a new step, pad id, EOS list, attention implementation or
        train/eval mode records again.
    length : int, default=None
        The static cache's length (>= width + max_new_tokens; one value for every batch of a pass keeps one
        compiled shape); ``None``: :func:`cache_length` of this batch.
    finished : callable, default=None
        Given each row's new tokens so far (host lists), which rows are done (a stop sequence appeared); called
        after every chunk on tokens one chunk old. Decoding ends when every row is done by EOS or by ``finished``.

    Returns
    -------
    list of list of int
        Each row's new tokens, ``max_new_tokens`` of them or fewer when decoding ended early (a row finished
        early may carry up to ``2 * CHECK_EVERY`` tokens past its stop sequence).

    Raises
    ------
    ValueError
        If ``length < width + max_new_tokens``, or ``graph`` is asked for off CUDA.
    GraphRecordingError
        If recording a chunk as a CUDA graph fails (errors of torch's compiler, raised at the step's first call,
        pass through as they are).
    """
    rows, width = ids.shape
    dev = ids.device
    length = length or cache_length(width, max_new_tokens)
    if length < width + max_new_tokens:
        raise ValueError(f"cache length {length} < prompt width {width} + max_new_tokens {max_new_tokens}")
    if graph and dev.type != "cuda":
        raise ValueError(f"graph=True records CUDA graphs; the batch is on {dev}")
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():  # streams, graphs, events
        return _decode(model, ids, mask, max_new_tokens, eos_ids, pad_id, step, graph, length, finished)


def _decode(model, ids, mask, max_new_tokens, eos_ids, pad_id, step, graph, length, finished) -> list[list[int]]:
    """:func:`decode_static`'s loop, arguments checked, on the batch's CUDA device if any."""
    rows, width = ids.shape
    dev = ids.device
    state = _decoding(model, rows, length, dev)
    state.reset(eos_ids)
    # the prompt's forward recorded as a CUDA graph at this padded width, or None: eager, unpadded
    padded = (prompt_width(rows, width, length - max_new_tokens)
              if graph and not model.__dict__.get(_PROMPT_FAILED_ATTR) else None)
    record, padded = padded is not None, padded or width
    if padded > width:  # more left padding, hidden by the mask as a batch's shorter rows are
        ids = torch.cat([ids.new_full((rows, padded - width), pad_id), ids], 1)
        mask = torch.cat([mask.new_zeros((rows, padded - width)), mask], 1)
    state.full.fill_(1)  # later slots are hidden by causality
    state.full[:, :padded] = mask
    pos = mask.long().cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    prefill = greedy_step(model)  # the prompt's forward, eager (recorded as one CUDA graph per width with graph=True)
    step = step or prefill
    state.unfinished.fill_(True)
    attn = getattr(step, "attn_implementation", None) if rows == 1 else None
    # what a recording depends on (a replay checks no guard of the compiled step)
    key = ((step, pad_id, model.training, attn, getattr(model.config, "_attn_implementation", None))
           + tuple((t.data_ptr(), t.dtype) for t in model.parameters())
           + tuple((t.data_ptr(), t.dtype) for t in model.buffers()) if graph else ())
    if record:
        failed = state.recorded_prompt(prefill, pad_id, ids, pos, key)
        if failed:  # logged once per model; its prompts run eager from now on
            model.__dict__[_PROMPT_FAILED_ATTR] = failed
            logger.warning("recording the prompt's forward as a CUDA graph failed (%s); it runs eager", failed)
    else:
        state.prompt(prefill, pad_id, ids, pos, torch.arange(padded, device=dev))
    toks = torch.empty(rows, max_new_tokens, dtype=torch.long, device=dev)
    toks[:, 0] = state.cur[:, 0]
    done = 1  # tokens in toks
    pending = None  # (event, tokens, unfinished) copied after the last chunk, looked at after the next
    # the tuned step's eager attention was measured faster at batch 1 only (slower at 64 untuned: README)
    with _attention(model, attn):
        while done < max_new_tokens:
            n = min(CHECK_EVERY, max_new_tokens - done)
            if graph:
                state.recorded_chunk(step, pad_id, n, key)
            else:
                state.chunk(step, pad_id, n)
            toks[:, done:done + n] = state.out[:, :n]
            done += n
            if done == max_new_tokens or (pending is not None and _all_done(pending, finished)):
                break
            pending = _snapshot(toks[:, :done], state.unfinished)
    return toks[:, :done].tolist()


def _snapshot(toks: torch.Tensor, unfinished: torch.Tensor):
    """Asynchronous host copies of the tokens and the EOS flags, with the event that marks them complete."""
    # copy=True: on a CPU .to("cpu") would return the live tensors, not a snapshot of this step
    host_toks = toks.to("cpu", non_blocking=True, copy=True)
    host_unfinished = unfinished.to("cpu", non_blocking=True, copy=True)
    event = None
    if toks.is_cuda:
        event = torch.cuda.Event()
        event.record()
    return event, host_toks, host_unfinished


def _all_done(pending, finished) -> bool:
    """Whether every row of a snapshot is done (EOS on the device, or a stop sequence by ``finished``)."""
    event, host_toks, host_unfinished = pending
    if event is not None:
        event.synchronize()
    open_rows = host_unfinished.tolist()
    if not any(open_rows):
        return True
    if finished is None:
        return False
    by_stop = finished(host_toks.tolist())
    return all(not o or f for o, f in zip(open_rows, by_stop))
