"""Batched log-likelihood scoring of token requests, with the context of a multiple-choice example run once.

A *row* is one sequence the model reads: a prefix (the context tokens) followed by one branch per request, each
branch holding that request's continuation minus its last token (:func:`build_rows`). Requests with identical
context tokens (the choices of one example) share one row; the others get a row of their own, which is exactly
HFLM's model input ``(context + continuation)[-(max_length + 1):][:-1]`` (left truncation included). In a row
with several branches the tokens of branch ``i`` sit at positions ``len(prefix), len(prefix) + 1, ...`` (the
positions they have in an unshared forward) and attend to the prefix and to the earlier tokens of their own
branch only, through a 4D attention mask (:func:`tree_mask`): each logit equals the unshared forward's up to float
rounding (fp32: ~1e-6 per token), so the log-likelihoods equal HFLM's within the 1e-4 the tests check. The first
continuation token of every branch is predicted from the prefix's last position, the others from the branch.

Rows are sorted by length, longest first, and cut into batches of at most ``batch_tokens`` padded tokens and
``batch_size`` rows (right padding). Per batch, only the logits from the first scored position onward are
computed (``logits_to_keep``); the scored positions are gathered on the device, log-softmaxed in fp32 and summed
per request in fp64 there; results stay on the device until every batch has run (no host sync per request or
per batch).

A row with one branch is a plain causal sequence (2D padding mask); rows with several branches need a model whose
attention takes a custom 4D mask (``eager``/``sdpa``, no sliding window shorter than the row:
:func:`tree_unavailable_reason`); otherwise every request gets its own row.

Cost (ARC-like rows: a 25-token context, 4 choices of ~5 tokens): a shared row is ~41 tokens against ~116 for
four unshared forwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.models.causal_windows import model_input
from harness.models.placement import input_device
from harness.models.reft import prompt_lengths
from harness.progress import progress_bar

__all__ = ["Row", "build_rows", "tree_mask", "tree_unavailable_reason", "score_rows_batched", "plan_batches"]


@dataclass(frozen=True)
class Row:
    """One model input: ``prefix`` then ``branches`` (each a continuation without its last token).

    ``requests[i]`` is the request index scored by branch ``i``, ``targets[i]`` its continuation tokens."""

    prefix: tuple[int, ...]
    branches: tuple[tuple[int, ...], ...]
    targets: tuple[tuple[int, ...], ...]
    requests: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prefix) + sum(len(b) for b in self.branches)


def build_rows(pairs: list[tuple[list[int], list[int]]], max_length: int, share: bool) -> list[Row]:
    """Rows for token-level ``(context, continuation)`` pairs (module docstring), in first-appearance order.

    With ``share``, requests with identical context tokens that need no left truncation
    (``len(context) + len(continuation) <= max_length + 1``) share a row; every other request gets its own.

    Raises
    ------
    ModelError
        As :func:`~harness.models.causal_windows.model_input` (empty side, continuation longer than the model).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    rows: list[Row | list[int]] = []
    for i, (ctx, cont) in enumerate(pairs):
        inp = model_input(ctx, cont, max_length)  # validates; left-truncates
        if share and len(ctx) + len(cont) <= max_length + 1:
            key = tuple(ctx)
            if key not in groups:
                groups[key] = []
                rows.append(groups[key])
            groups[key].append(i)
        else:
            cut = len(inp) - (len(cont) - 1)
            rows.append(Row(tuple(inp[:cut]), (tuple(inp[cut:]),), (tuple(cont),), (i,)))
    out = []
    for r in rows:
        if isinstance(r, Row):
            out.append(r)
        else:
            out.append(Row(tuple(pairs[r[0]][0]), tuple(tuple(pairs[i][1][:-1]) for i in r),
                           tuple(tuple(pairs[i][1]) for i in r), tuple(r)))
    return out


def tree_unavailable_reason(model, longest_row: int) -> str | None:
    """Why rows with several branches cannot run on ``model`` (``None`` when they can): the attention
    implementation must apply a custom 4D mask, and a sliding window must not be shorter than the row."""
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        return f"attention implementation {impl!r} does not take a custom 4D mask"
    window = getattr(getattr(cfg, "text_config", None) or cfg, "sliding_window", None)
    if window is not None and window < longest_row:
        return f"sliding window {window} is shorter than a {longest_row}-token row"
    return None


def plan_batches(rows: list[Row], batch_tokens: int, batch_size: int) -> list[list[int]]:
    """Row indices sorted by length (longest first, ties by index), cut at ``batch_tokens`` padded tokens
    (rows x longest) and ``batch_size`` rows; a row longer than ``batch_tokens`` is a batch of its own."""
    order = sorted(range(len(rows)), key=lambda i: (-rows[i].length, i))
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        if cur and len(cur) < batch_size and (len(cur) + 1) * rows[cur[0]].length <= batch_tokens:
            cur.append(i)
        else:
            batches.append([i])
    return batches


def tree_mask(segments: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask of shape (rows, 1, width, width) in ``dtype``: 0 where query ``q`` may attend key
    ``k`` (``k <= q``, ``k`` a real token, in the prefix (segment 0) or in ``q``'s own branch), the dtype's minimum
    elsewhere; a padding query attends to itself only (its output is never read).

    Parameters
    ----------
    segments : LongTensor of shape (rows, width)
        0 for prefix tokens, ``i + 1`` for branch ``i``.
    valid : BoolTensor of shape (rows, width)
        Real (non-padding) tokens.
    """
    width = segments.shape[1]
    idx = torch.arange(width, device=segments.device)
    causal = idx[None, :] <= idx[:, None]  # (q, k)
    same = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])  # (rows, q, k)
    allowed = causal[None] & same & valid[:, None, :]
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)[None] & ~valid[:, :, None]
    out = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


def _layout(rows: list[Row], pad_id: int):
    """Padded ids, positions, segments, validity of a batch, and per scored token (row, position, target,
    request), as int64 numpy arrays."""
    width = max(r.length for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    seg = np.zeros((len(rows), width), dtype=np.int64)
    valid = np.zeros((len(rows), width), dtype=bool)
    tok_row, tok_pos, tok_tgt, tok_req = [], [], [], []
    for r, row in enumerate(rows):
        p = len(row.prefix)
        ids[r, :p], pos[r, :p], valid[r, :p] = row.prefix, np.arange(p), True
        at = p
        for b, (branch, target, req) in enumerate(zip(row.branches, row.targets, row.requests)):
            n = len(branch)
            ids[r, at:at + n], pos[r, at:at + n], seg[r, at:at + n], valid[r, at:at + n] = \
                branch, np.arange(p, p + n), b + 1, True
            tok_pos += [p - 1, *range(at, at + n)]
            tok_row += [r] * (n + 1)
            tok_tgt += target
            tok_req += [req] * (n + 1)
            at += n
    scored = tuple(np.asarray(x, dtype=np.int64) for x in (tok_row, tok_pos, tok_tgt, tok_req))
    return ids, pos, seg, valid, scored


@torch.inference_mode()
def score_rows_batched(model, rows: list[Row], batches: list[list[int]], n_requests: int,
                       pad_id: int, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(loglik float64 (n_requests,), is_greedy bool (n_requests,))`` of every request in ``rows``.

    Each batch is one forward; log-likelihoods accumulate on the model's input device and come to the host once.
    Each row's prompt is its prefix (the context), named for representation interventions
    (:func:`harness.models.reft.prompt_lengths`). ``desc`` draws a tqdm bar (none when ``None``) that counts
    requests (unit ``req``), advanced by each batch's requests: a split of a few large batches still moves."""
    device = input_device(model)  # where inputs go (the embedding's GPU under a device map)
    dtype = next(model.parameters()).dtype
    ll = torch.zeros(n_requests, dtype=torch.float64, device=device)
    misses = torch.zeros(n_requests, dtype=torch.int64, device=device)
    with progress_bar(total=n_requests, desc=desc, unit="req", show=desc is not None) as bar:
        for batch in batches:
            chunk = [rows[i] for i in batch]
            ids, pos, seg, valid, (t_row, t_pos, t_tgt, t_req) = _layout(chunk, pad_id)
            first = int(t_pos.min())
            keep = ids.shape[1] - first
            kw = {}
            if any(len(row.branches) > 1 for row in chunk):  # several branches in a row: positions, tree mask
                kw["position_ids"] = torch.from_numpy(pos).to(device)
                kw["attention_mask"] = tree_mask(torch.from_numpy(seg).to(device),
                                                 torch.from_numpy(valid).to(device), dtype)
            else:
                kw["attention_mask"] = torch.from_numpy(valid.astype(np.int64)).to(device)
            with prompt_lengths([len(row.prefix) for row in chunk]):
                logits = model(input_ids=torch.from_numpy(ids).to(device), logits_to_keep=keep, use_cache=False,
                               **kw).logits
            out = logits.device  # the last GPU under a device map
            r, p, tgt, req = (torch.from_numpy(x).to(out) for x in (t_row, t_pos - first, t_tgt, t_req))
            h = logits[r, p].float()  # (scored tokens, vocab)
            tok_ll = h.gather(1, tgt[:, None])[:, 0] - torch.logsumexp(h, dim=-1)
            ll.index_add_(0, req.to(device), tok_ll.double().to(device))
            misses.index_add_(0, req.to(device), (h.argmax(-1) != tgt).long().to(device))
            bar.update(sum(len(row.requests) for row in chunk))  # requests, not batches: the bar moves
    return ll.cpu().numpy(), (misses == 0).cpu().numpy()
