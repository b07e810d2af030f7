"""Batched greedy generation with left padding and a KV cache, as lm-eval 0.4.13's ``HFLM.generate_until``.

Source: ``lm_eval/models/huggingface.py`` (``generate_until``, ``tok_batch_encode``, ``_model_generate``) and
``lm_eval/models/utils.py`` (``handle_stop_sequences``, ``postprocess_generated_text``).
"""

from __future__ import annotations

import logging

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from harness.errors import ModelError
from harness.models.causal_decode import (GraphRecordingError, cache_length, compiled_step, decode_static,
                                          graph_loop_unavailable, mark_failed)
from harness.models.placement import input_device
from harness.progress import progress_bar

__all__ = ["generate_greedy", "cut_at_stop", "has_stop", "StopEvery"]

logger = logging.getLogger(__name__)

STOP_CHECK_EVERY = 8  # new tokens between two stop-sequence checks (one host copy of the new tokens per check)


class StopEvery(StoppingCriteria):
    """A ``transformers`` stopping criterion: a row is finished once its decoded new text contains a stop
    sequence, checked every ``every`` new tokens (and at the first), so decoding runs ``every - 1`` steps with no
    stop-sequence work at all.

    transformers' ``StopStringCriteria`` runs several device ops per token to match stop strings in token space;
    on an H200 (1.1B llama, bf16, static cache, batch 1) that cost 2.2 ms of a 5.1 ms step
    (benchmarks/gen_probe.py). A row may run up to ``every - 1`` tokens past its stop sequence; the text is cut at
    the first stop sequence afterwards (:func:`cut_at_stop`), so outputs are the same.

    Parameters
    ----------
    tokenizer
        Decodes the new tokens (``skip_special_tokens=True``, as the output is decoded).
    stop : list of str
        Non-empty stop sequences.
    prompt_width : int
        Width of the (left-padded) prompt batch: new tokens start there.
    every : int, default=STOP_CHECK_EVERY
    """

    def __init__(self, tokenizer, stop: list[str], prompt_width: int, every: int = STOP_CHECK_EVERY) -> None:
        self.tokenizer, self.stop, self.start, self.every = tokenizer, [s for s in stop if s], prompt_width, every
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        n_new = input_ids.shape[1] - self.start
        if self._done is not None and n_new % self.every:
            return self._done
        done = self._done.tolist() if self._done is not None else [False] * input_ids.shape[0]
        rows = input_ids[:, self.start:].tolist()  # the one host copy of this check
        for i, row in enumerate(rows):
            if not done[i]:
                done[i] = has_stop(self.tokenizer, row, self.stop)
        self._done = torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        return self._done


def has_stop(tokenizer, row: list[int], stop: list[str]) -> bool:
    """Whether the decoded new tokens ``row`` (``skip_special_tokens=True``, as the output is decoded) contain
    any of the non-empty stop sequences ``stop``."""
    text = tokenizer.decode(row, skip_special_tokens=True)
    return any(s in text for s in stop if s)


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to the first occurrence of any non-empty stop sequence (lm-eval
    ``postprocess_generated_text``).

    >>> cut_at_stop("42\\n\\nQuestion: next", ["Question:", "\\n\\n"])
    '42'
    """
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
    return ids, mask


def _new_tokens(model, tokenizer, ids, mask, stop: list[str], max_new_tokens: int, cache_implementation: str | None,
                loop, rows: int, length: int) -> tuple[list[list[int]], object]:
    """One batch's new tokens: the sync-free loop over the compiled step ``loop`` when given (the batch padded to
    ``rows`` rows with copies of its last row, a cache of ``length`` tokens: one compiled shape per pass), else
    ``generate``. A failure of torch's compiler or of the CUDA-graph recording (:class:`GraphRecordingError`) falls
    back to ``generate`` for this and later batches and is recorded on the model (the returned ``loop`` is then
    ``None``); any other error is raised."""
    if loop is not None:
        n = ids.shape[0]
        if n < rows:
            ids = torch.cat([ids, ids[-1:].expand(rows - n, -1)])
            mask = torch.cat([mask, mask[-1:].expand(rows - n, -1)])
        try:
            return decode_static(model, ids, mask, max_new_tokens=max_new_tokens, eos_ids=_eos_ids(model, tokenizer),
                                 pad_id=tokenizer.pad_token_id, step=loop, graph=ids.is_cuda, length=length,
                                 finished=_stop_found(tokenizer, stop) if any(stop) else None)[:n], loop
        except Exception as e:  # noqa: BLE001 - only torch's compiler errors fall back (re-raised otherwise)
            if not (type(e).__module__.startswith(("torch._dynamo", "torch._inductor"))
                    or isinstance(e, GraphRecordingError)):
                raise
            reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            mark_failed(model, reason)
            logger.warning("the compiled decoding step failed (%s); generating with transformers' generate instead",
                           reason)
            ids, mask = ids[:n], mask[:n]
    return _generate(model, tokenizer, ids, mask, stop, max_new_tokens, cache_implementation), None


def _generate(model, tokenizer, ids, mask, stop: list[str], max_new_tokens: int,
              cache_implementation: str | None) -> list[list[int]]:
    """New tokens per row from transformers' ``generate`` (greedy; :class:`StopEvery` when there are stops)."""
    kwargs = ({"stopping_criteria": StoppingCriteriaList([StopEvery(tokenizer, stop, ids.shape[1])])}
              if any(stop) else {})
    gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=_eos_ids(model, tokenizer), use_cache=True,
                         cache_implementation=cache_implementation, **kwargs)
    return gen[:, ids.shape[1]:].tolist()


def _stop_found(tokenizer, stop: list[str]):
    """For :func:`~harness.models.causal_decode.decode_static`: which rows' decoded new text contains a stop
    sequence (decoded as :class:`StopEvery` decodes)."""
    done: set[int] = set()  # rows found finished stay finished: they are not decoded again

    def finished(rows: list[list[int]]) -> list[bool]:
        for i, r in enumerate(rows):
            if i not in done and has_stop(tokenizer, r, stop):
                done.add(i)
        return [i in done for i in range(len(rows))]
    return finished


def _eos_ids(model, tokenizer) -> list[int]:
    """The model's generation-config EOS ids plus the tokenizer's EOS id (lm-eval stops at both)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate_greedy(model, tokenizer, prompts: list[str], *, stop: list[str], max_new_tokens: int,
                    max_length: int, batch_size: int, cache_implementation: str | None = None,
                    tuned: bool = False, desc: str | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (lm-eval ``generate_until`` with ``do_sample=False``).

    Rules, as lm-eval: prompts are encoded with the tokenizer's default special tokens, none when the prompt
    starts with the tokenizer's BOS text (checked per prompt; lm-eval checks the batch's first prompt only);
    each prompt is left-truncated to ``max_length - max_new_tokens`` tokens; batches are left-padded (attention
    mask, positions from the mask) and decoded with ``model.generate`` (KV cache, ``do_sample=False``,
    ``max_new_tokens``), stopping a row at an EOS id or once a stop sequence appears in its decoded new text
    (:class:`StopEvery`: checked every 8 new tokens, no stop-sequence work on the other steps); the new tokens are
    decoded with ``skip_special_tokens=True`` and cut at the first stop sequence or the EOS text. The harness
    adds no host sync per token (transformers' own loop reads one flag per step).

    Parameters
    ----------
    model, tokenizer
        A loaded causal LM and its tokenizer (with a pad token).
    prompts : list of str
    stop : list of str
        Stop sequences (may be empty).
    max_new_tokens : int
        Most tokens generated per prompt (>= 1).
    max_length : int
        The model's input length in tokens.
    batch_size : int
        Prompts per ``generate`` call, longest first.
    cache_implementation : str, default=None
        ``None``: ``generate`` with transformers' default dynamic cache. ``"static"``: a preallocated
        ``StaticCache``; where :func:`~harness.models.causal_decode.graph_loop_unavailable` allows (one CUDA
        device, a compilable model class, no peft layers, no logits processing in its ``generation_config``) the
        harness's sync-free loop
        (:func:`~harness.models.causal_decode.decode_static`) drives the compiled step, else ``generate`` with
        ``cache_implementation="static"`` (on CUDA transformers compiles its step). Outputs are the same.
    tuned : bool, default=False
        For the sync-free loop: compile the step with ``max-autotune`` and coordinate-descent tuning (longer
        warm-up, faster steps; :func:`~harness.models.causal_decode.compiled_step`).
    desc : str, default=None
        Draws a tqdm bar (none when ``None``) counting prompts (unit ``req``), advanced after each batch.

    Returns
    -------
    list of str
        In prompt order.

    Raises
    ------
    ModelError
        If ``max_new_tokens < 1`` or ``max_new_tokens >= max_length``.
    """
    if not 1 <= max_new_tokens < max_length:
        raise ModelError(f"max_new_tokens must be in [1, {max_length - 1}] (below the model's {max_length} "
                         f"positions); got {max_new_tokens}")
    bos = tokenizer.bos_token
    encoded = [tokenizer.encode(p, **({"add_special_tokens": False} if bos and p.startswith(bos) else {}))
               for p in prompts]
    budget = max_length - max_new_tokens
    if any(len(e) > budget for e in encoded):
        logger.warning("prompts longer than %d tokens are left-truncated (model length %d - max_new_tokens %d)",
                       budget, max_length, max_new_tokens)
    encoded = [e[-budget:] for e in encoded]
    eos_text = tokenizer.decode(tokenizer.eos_token_id, skip_special_tokens=False) \
        if tokenizer.eos_token_id is not None else None
    until = list(stop) + ([eos_text] if eos_text and eos_text not in stop else [])
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
    device = input_device(model)
    out: list[str | None] = [None] * len(prompts)
    loop = None
    rows = min(batch_size, len(prompts))  # every batch of the loop has this many rows (the last one padded)
    length = cache_length(max((len(e) for e in encoded), default=1), max_new_tokens)
    if cache_implementation == "static":
        why = graph_loop_unavailable(model)
        if why is None:
            loop = compiled_step(model, tuned)
        else:
            logger.info("static-cache generation uses transformers' generate: %s", why)
    with progress_bar(total=len(prompts), desc=desc, unit="req", show=desc is not None) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, mask = _left_pad([encoded[i] for i in batch], tokenizer.pad_token_id)
            new, loop = _new_tokens(model, tokenizer, ids.to(device), mask.to(device), stop, max_new_tokens,
                                    cache_implementation, loop, rows, length)
            for i, row in zip(batch, new):
                out[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), until)
            bar.update(len(batch))
    return out  # type: ignore[return-value]
