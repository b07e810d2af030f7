"""Shared-context scoring: run a context once, then all its continuations from the context's KV cache.

For requests whose token context is identical (the choices of one multiple-choice example), the context is one
forward with ``use_cache=True``; its cache is repeated once per continuation (``DynamicCache
.batch_repeat_interleave``) and the continuations (all but their last token, right-padded, positions
``len(context) + 0, 1, ...``) are one more forward. The first continuation token is scored from the context's
last logits, the others from the continuation forward. The logits are those of the full forward up to float
rounding (fp32: ~1e-6 per token), so results equal HFLM's to the tolerance the tests check (1e-4).

Only groups that need no left truncation (``len(context) + len(continuation) <= max_length + 1`` for every
member) take this path; the caller scores the rest with full forwards.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.models.placement import input_device

__all__ = ["shared_groups", "score_shared", "score_rows"]


def score_rows(logp: torch.Tensor, cont: list[int]) -> tuple[float, bool]:
    """``(sum of log-probs of cont, every token is the argmax)`` from ``logp`` of shape (len(cont), vocab)."""
    target = torch.tensor(cont, device=logp.device)
    return logp.gather(1, target[:, None]).double().sum().item(), bool((logp.argmax(-1) == target).all())


def shared_groups(pairs: list[tuple[list[int], list[int]]], max_length: int) -> list[list[int]]:
    """Indices of requests grouped by identical context tokens, groups of two or more that fit without
    truncation, in first-appearance order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx), []).append(i)
    return [g for g in groups.values()
            if len(g) > 1 and all(len(pairs[i][0]) + len(pairs[i][1]) <= max_length + 1 for i in g)]


@torch.inference_mode()
def score_shared(model, context: list[int], conts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(loglik float64 (n,), is_greedy bool (n,))`` of ``conts`` after one shared ``context`` forward."""
    device = input_device(model)
    ctx = torch.tensor([context], device=device)
    out = model(input_ids=ctx, attention_mask=torch.ones_like(ctx), use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
    width = max(len(c) for c in conts) - 1
    rest = None
    if width > 0:
        # transformers renamed ``past_key_values`` to ``cache`` (output field and forward keyword) after 5.17
        name = "cache" if hasattr(out, "cache") else "past_key_values"
        cache = getattr(out, name)
        cache.batch_repeat_interleave(len(conts))
        ids = torch.full((len(conts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(conts), len(context) + width), dtype=torch.long)
        mask[:, :len(context)] = 1
        for r, c in enumerate(conts):
            ids[r, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            mask[r, len(context):len(context) + len(c) - 1] = 1
        positions = torch.arange(len(context), len(context) + width).expand(len(conts), -1)
        rest = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                     use_cache=True, **{name: cache}).logits
        rest = torch.log_softmax(rest.float(), dim=-1)
    ll = np.empty(len(conts), dtype=np.float64)
    greedy = np.empty(len(conts), dtype=bool)
    for r, c in enumerate(conts):
        rows = first[None] if len(c) == 1 else torch.cat([first[None], rest[r, :len(c) - 1]])
        ll[r], greedy[r] = score_rows(rows, c)
    return ll, greedy
