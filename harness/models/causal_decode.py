"""Greedy decoding with transformers' ``StaticCache`` and a compiled step, with no host sync per token (issue 20).

transformers' ``generate`` reads one flag from the GPU at every step (``unfinished_sequences.max() == 0``) and
runs its logits processors and input preparation on the host, about 1.2 ms per token on an H200, which leaves a
1.1B model at 17% of the memory-bandwidth bound at batch 1 (benchmarks/gen_ceiling.py). This loop keeps the tokens
on the GPU, feeds each step's argmax to the next step, and looks at the tokens on the host every
:data:`CHECK_EVERY` steps through an asynchronous copy it reads one check later, so the GPU is never left waiting
for the host. The model, its attention and its cache are transformers', the compiler torch's; the harness adds the
greedy step around the model's forward and the loop (the recipe of transformers' "static cache and torch.compile"
documentation, with the argmax inside the compiled graph and the stop checks moved off the critical path).

Measured (``python benchmarks/lm_gpu.py --sections peak gen``: H200, torch 2.11, transformers 5.17, 1.1B llama
in bf16, 128 new tokens after 100-token prompts): 539 tokens/s at batch 1 with the step compiled as
``reduce-overhead`` (the setting of transformers' own compiled call) and 636 with ``max-autotune`` and
coordinate-descent tuning, against 349 for ``generate`` with its static cache (benchmarks/gen_ceiling.py);
15,900 tokens/s at batch 64, 4.0x plain ``generate``. The step (:func:`greedy_step`) holds the forward, the
argmax and the EOS bookkeeping, so one CUDA graph replays all of it.

For the models it applies to (:func:`graph_loop_unavailable`: among others, no logits processing in the
``generation_config``), outputs equal ``generate``'s (``do_sample=False``) token for token where the step computes
the same logits (on a GPU in bf16 the compiled kernels may round differently, as ``generate``'s own do): a row
that emits an EOS id is padded with ``pad_id`` afterwards, as ``generate`` pads finished rows; rows that reach a stop
sequence keep decoding until every row is done (their text is cut at the stop sequence afterwards, so the text is
the same).
"""

from __future__ import annotations

import inspect
import logging
from typing import Callable

import torch

from harness.models.placement import input_device

__all__ = ["CHECK_EVERY", "CACHE_BUCKET", "graph_loop_unavailable", "greedy_step", "compiled_step", "decode_static",
           "cache_length", "mark_failed"]

logger = logging.getLogger(__name__)

CHECK_EVERY = 8  # decoding steps between two looks at the tokens on the host
CACHE_BUCKET = 256  # the static cache's length is rounded up to a multiple of this (fewer compiled shapes)
# per model, as attributes of the model itself (the compiled call holds the model, so a global dict keyed weakly
# by the model would keep it alive): {tuned: compiled call} and {(rows, length): StaticCache}
_STEPS_ATTR, _CACHES_ATTR = "_harness_decode_steps", "_harness_static_caches"
_FAILED_ATTR = "_harness_decode_failed"  # why the compiled step failed on this model (not tried again)
_MAX_CACHES = 1  # static caches kept per model between calls (as generate keeps one): the memory of one batch
# generation_config fields whose non-neutral values make generate(do_sample=False) process the logits before its
# argmax; the loop takes the plain argmax, so such a model keeps generate
_PROCESSORS = {"repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
               "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
               "min_new_tokens": (None, 0), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
               "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "sequence_bias": (None,),
               "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0),
               "watermarking_config": (None,)}


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
    return None


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
        return nxt, unfinished & ~torch.isin(nxt, eos)
    return step


def compiled_step(model, tuned: bool = False) -> Callable:
    """:func:`greedy_step` of ``model`` compiled (built once per model; compiles lazily, at its first call).

    ``tuned=False``: ``torch.compile(..., mode="reduce-overhead", fullgraph=True, dynamic=False)`` (Inductor with
    CUDA graphs, cuBLAS for the projections: the setting of transformers' own compiled call, ``CompileConfig``; a
    first call of 25 s at batch 1 and 18 s at batch 64 for a 1.1B llama on an H200). ``tuned=True``: ``mode=
    "max-autotune"`` (Inductor's kernels timed against cuBLAS, CUDA graphs) with coordinate-descent tuning (the
    gpt-fast setting): on an H200 more tokens/s at batch 1 and fewer at batch 64, with a first call of 57 s
    (batch 1) and 144 s (batch 64); README "Performance" has the numbers.
    """
    steps = _per_model(model, _STEPS_ATTR)
    if tuned not in steps:
        # torch.compile takes a mode or options, not both: these are the modes' options (torch's list_mode_options)
        options = ({"max_autotune": True, "triton.cudagraphs": True, "coordinate_descent_tuning": True} if tuned
                   else {"triton.cudagraphs": True})  # max-autotune + coordinate descent; reduce-overhead
        steps[tuned] = torch.compile(greedy_step(model), fullgraph=True, dynamic=False, options=options)
    return steps[tuned]


def _per_model(model, attr: str) -> dict:
    """The dict stored on ``model`` under ``attr`` (created empty); it lives and dies with the model."""
    if attr not in model.__dict__:
        model.__dict__[attr] = {}
    return model.__dict__[attr]


def mark_failed(model, reason: str) -> None:
    """Record that the compiled step failed on ``model``: :func:`graph_loop_unavailable` then says so and the
    caller keeps ``generate`` (a step is not compiled again and again)."""
    model.__dict__[_FAILED_ATTR] = reason


def cache_length(longest_prompt: int, max_new_tokens: int) -> int:
    """The static cache's length for prompts up to ``longest_prompt`` tokens: the tokens needed rounded up to a
    multiple of :data:`CACHE_BUCKET` (fewer distinct shapes, so fewer compilations)."""
    return -(-(longest_prompt + max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET


def _static_cache(model, rows: int, length: int):
    """A ``StaticCache`` for ``rows`` x ``length`` tokens, reused (reset) across calls so the compiled step's CUDA
    graphs see the same addresses; at most :data:`_MAX_CACHES` kept per model (an older one is dropped)."""
    from transformers import StaticCache

    caches = _per_model(model, _CACHES_ATTR)
    cache = caches.pop((rows, length), None)
    if cache is None:
        while len(caches) >= _MAX_CACHES:
            caches.pop(next(iter(caches)))
        cache = StaticCache(config=model.config, max_cache_len=length)
    else:
        cache.reset()
    caches[(rows, length)] = cache  # most recently used last
    return cache


def _cache_kwarg(model) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values``, whichever the forward takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def decode_static(model, ids: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int, eos_ids: list[int],
                  pad_id: int, step: Callable | None = None, length: int | None = None,
                  finished: Callable[[list[list[int]]], list[bool]] | None = None) -> list[list[int]]:
    """Greedy new tokens for a left-padded batch, decoded with a ``StaticCache`` and no host sync per step.

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
    length : int, default=None
        The static cache's length (>= width + max_new_tokens; one value for every batch of a pass keeps one
        compiled shape); ``None``: :func:`cache_length` of this batch.
    finished : callable, default=None
        Given each row's new tokens so far (host lists), which rows are done (a stop sequence appeared); called
        every :data:`CHECK_EVERY` steps on tokens one check old. Decoding ends when every row is done by EOS or by
        ``finished``.

    Returns
    -------
    list of list of int
        Each row's new tokens, ``max_new_tokens`` of them or fewer when decoding ended early (a row finished
        early may carry up to ``2 * CHECK_EVERY`` tokens past its stop sequence).
    """
    rows, width = ids.shape
    dev = ids.device
    length = length or cache_length(width, max_new_tokens)
    if length < width + max_new_tokens:
        raise ValueError(f"cache length {length} < prompt width {width} + max_new_tokens {max_new_tokens}")
    cache = _static_cache(model, rows, length)
    full = torch.ones(rows, length, dtype=mask.dtype, device=dev)  # later slots are hidden by causality
    full[:, :width] = mask
    pos = mask.long().cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    cps = torch.arange(length, device=dev)
    toks = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    unfinished = torch.ones(rows, dtype=torch.bool, device=dev)
    eos = torch.tensor(list(eos_ids) or [-1], dtype=torch.long, device=dev)  # -1: no id matches
    first_pos = pos[:, -1:] + 1
    cur = torch.empty(rows, 1, dtype=torch.long, device=dev)  # the step's inputs: buffers of fixed addresses
    pending = None  # (event, tokens, unfinished) copied at the last check, read at the next
    n = max_new_tokens
    prefill = greedy_step(model)
    step = step or prefill
    for i in range(max_new_tokens):
        if i:
            nxt, still = step(cache=cache, input_ids=cur, attention_mask=full, position_ids=first_pos + (i - 1),
                              cache_position=cps[width + i - 1:width + i], unfinished=unfinished, eos=eos,
                              pad_id=pad_id)
        else:  # the prompt, eager (one shape per batch width; the compiled step has one shape per pass)
            nxt, still = prefill(cache=cache, input_ids=ids, attention_mask=full, position_ids=pos,
                                 cache_position=cps[:width], unfinished=unfinished, eos=eos, pad_id=pad_id)
        toks[:, i] = nxt
        cur.copy_(nxt[:, None])
        unfinished.copy_(still)
        if (i + 1) % CHECK_EVERY == 0 and i + 1 < max_new_tokens:
            if pending is not None and _all_done(pending, finished):
                n = i + 1
                break
            pending = _snapshot(toks[:, :i + 1], unfinished)
    return toks[:, :n].tolist()


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
