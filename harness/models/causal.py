"""Causal-LM scoring with lm-eval 0.4.13's HFLM semantics: log-likelihood of continuations, rolling
log-likelihood of documents, greedy generation.

:class:`CausalLMScorer` wraps an already loaded ``transformers`` causal LM and its tokenizer. What matches HFLM
(``lm_eval/api/model.py`` ``TemplateLM._encode_pair``/``loglikelihood``, ``lm_eval/models/huggingface.py``):

* tokenization: trailing whitespace of the context moves to the continuation; ``whole = tok(context +
  continuation)``, ``context = tok(context)``, ``continuation = whole[len(context):]``; the tokenizer's default
  ``add_special_tokens`` (so BOS is added when the tokenizer adds it), switched off when the text already starts
  with the prefix token's text; an empty context is replaced by the prefix token (BOS, else EOS);
* the model input is ``(context + continuation)[-(max_length + 1):][:-1]`` (left truncation), and the
  continuation is scored from the logits at its positions (log-softmax in float32, summed in float64);
* ``max_length``: the config's ``n_positions`` / ``max_position_embeddings`` / ``n_ctx`` (``text_config``
  first), else the tokenizer's ``model_max_length``, else 2048.

Batching (:mod:`harness.models.causal_shared`): each example's context runs once, its choices as branches of
one row that attend to the context and to themselves only (a 4D mask; equal to the full forward up to float
rounding); rows are sorted by length (longest first) and cut into batches of at most ``batch_tokens`` padded
tokens (right padding, so positions of real tokens are those of an unpadded forward). Only the logits from the
first scored position on are computed (``logits_to_keep``), scored on the device, and brought to the host once.
With ``share_context=False`` every request is its own row, HFLM's input exactly.

Representation interventions (:mod:`harness.models.reft`): every forward names each row's prompt, which is the
request's context (:func:`~harness.models.reft.prompt_lengths`); while an intervention engine is attached, every
request is its own row (the tree mask would hide the per-row prompt the intervention needs; results are equal up
to float rounding); generation edits the prompt forward only. For rolling windows the prompt is the window's
context (the prefix token, or the tokens before the window's predictions; pyreft caps the counts at half the
prompt, so a one-token context is not edited).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from harness.errors import ModelError
from harness.models.causal_generate import generate_greedy
from harness.models.causal_shared import build_rows, plan_batches, score_rows_batched, tree_unavailable_reason
from harness.models.causal_windows import rolling_windows
from harness.models.placement import input_device
from harness.models.reft import has_interventions

__all__ = ["LoglikelihoodResult", "CausalLMScorer", "resolve_max_length", "ensure_pad_token"]

logger = logging.getLogger(__name__)

_TOKENIZER_INFINITY = 1000000000000000019884624838656
_DEFAULT_MAX_LENGTH = 2048
#: Padded tokens per log-likelihood forward by default (the CPU's: see ``batch_tokens`` of :class:`CausalLMScorer`).
DEFAULT_BATCH_TOKENS = 512


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Per-request results of :meth:`CausalLMScorer.loglikelihood`, in request order.

    Attributes
    ----------
    loglik : ndarray of shape (n,), float64
        Summed natural-log probability of the continuation's tokens given the context.
    is_greedy : ndarray of shape (n,), bool
        Whether every continuation token is the argmax of its position's logits.
    n_tokens : ndarray of shape (n,), int64
        Number of continuation tokens scored.
    """

    loglik: np.ndarray
    is_greedy: np.ndarray
    n_tokens: np.ndarray


def resolve_max_length(model, tokenizer) -> int:
    """The model's context length as lm-eval resolves it (``lm_eval.models.utils.resolve_max_length``)."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return _DEFAULT_MAX_LENGTH


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token the EOS token as pad (logged). Padding never changes scores here
    (padded positions are masked and never read), so the choice only affects what fills finished rows.

    Raises
    ------
    ModelError
        If the tokenizer has neither a pad nor an EOS token.
    """
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no pad token and no EOS token to pad with; set tokenizer.pad_token")
    logger.info("tokenizer has no pad token: padding with the EOS token %r (id %d)", tokenizer.eos_token,
                tokenizer.eos_token_id)
    tokenizer.pad_token = tokenizer.eos_token


class CausalLMScorer:
    """Scores text with a loaded causal LM the way lm-eval's HFLM does (module docstring).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM (``AutoModelForCausalLM``); put in ``eval()`` mode here; runs on its own device and dtype.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer. A missing pad token is set to EOS (:func:`ensure_pad_token`).
    max_length : int, default=None
        Model input length in tokens; ``None``: :func:`resolve_max_length`.
    batch_tokens : int, default=512
        Padded tokens per log-likelihood forward (rows x longest input). 512 rather than 4,096 so that the
        progress bar's count moves every few seconds on a CPU (a 4,096-token batch of BoolQ rows took 20-40 s on a
        shared 2-core CPU, and 1,024-token batches still 10-15 s, issue 19), and it is the cheapest budget measured:
        SmolLM2-135M-Instruct, fp32, 1 thread, 2-core CPU SHARED with other jobs (wall times noisy; process CPU
        seconds steadier), ``benchmarks/lm_mc_cpu.py --compare-budgets`` (runs interleaved, medians of 3): 16
        BoolQ rows (up to 282 tokens), 10.2 CPU-s at 512, 11.7 at 1,024, 14.6 at 2,048; 64 ARC-Easy rows, 13.9 at
        512, 15.1 at 1,024, 14.5 at 256 (earlier: 16.6 at 4,096); log-likelihoods equal within 3e-5, accuracy
        identical. Shorter batches pad less (rows are sorted by length). Accelerators
        get 32,768 (:func:`harness.pipeline.runners.causal_scorer_defaults`).
    batch_size : int, default=32
        Most rows per forward (log-likelihood) and prompts per ``generate`` call.
    share_context : bool, default=True
        Score requests with identical context tokens in one row, the context once
        (:mod:`harness.models.causal_shared`); ``False``: one row per request, HFLM's input.
    generation_cache : str, default=None
        ``None`` (transformers' dynamic cache) or ``"static"`` (pays on CUDA: the harness's sync-free loop over a
        compiled step where the model allows; :func:`generate_greedy`).
    generation_batch_size : int, default=None
        Prompts per ``generate`` call; ``None``: ``batch_size``.
    generation_tuned : bool, default=False
        With ``"static"``: compile the decoding step with ``max-autotune``, coordinate-descent tuning and
        programmatic dependent launch, and give it transformers' eager attention at batch 1
        (:func:`~harness.models.causal_decode.compiled_step`, its autotuning timed by GPU kernel time): on an H200
        at batch 1, 61.7-64.1% of the bandwidth bound (median 62.75%) over six compilations alone in their process,
        against 38-39% untuned; a longer first call; slower than untuned at batch 64 (one compilation, with the
        earlier timer). The speed is set by the autotuner's kernel picks, which Inductor keeps in its cache
        (``TORCHINDUCTOR_CACHE_DIR``) for later processes (two that reused one compilation's cache ran within 1.6%
        of it), so keeping that folder between runs (a CI cache) keeps the first run's picks and skips the
        tuning.
    """

    def __init__(self, model, tokenizer, *, max_length: int | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 batch_size: int = 32, share_context: bool = True, generation_cache: str | None = None,
                 generation_batch_size: int | None = None, generation_tuned: bool = False) -> None:
        if batch_tokens < 1 or batch_size < 1 or (generation_batch_size is not None and generation_batch_size < 1):
            raise ModelError(f"batch_tokens, batch_size and generation_batch_size must be >= 1; got {batch_tokens}, "
                             f"{batch_size}, {generation_batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        ensure_pad_token(tokenizer)
        self.max_length = int(max_length) if max_length is not None else resolve_max_length(model, tokenizer)
        self.batch_tokens = batch_tokens
        self.batch_size = batch_size
        self.share_context = share_context
        self.generation_cache = generation_cache
        self.generation_batch_size = generation_batch_size or batch_size
        self.generation_tuned = generation_tuned
        bos = tokenizer.bos_token_id
        self.prefix_token_id: int = bos if bos is not None else tokenizer.eos_token_id
        self._prefix_text = tokenizer.decode(self.prefix_token_id)

    @property
    def device(self) -> torch.device:
        """Where token ids go: the input embeddings' device (the first GPU of a model split by a device map)."""
        return input_device(self.model)

    # ---- tokenization (HFLM.tok_encode / TemplateLM._encode_pair) ----
    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """HFLM ``tok_encode``: the tokenizer's default special tokens, none if ``text`` starts with the prefix
        token's text (or ``add_special_tokens`` says so)."""
        kwargs = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self._prefix_text and text.startswith(self._prefix_text):
            kwargs["add_special_tokens"] = False
        return self.tokenizer.encode(text, **kwargs)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """``(context tokens, continuation tokens)`` as lm-eval splits them (module docstring)."""
        if context == "":
            cont = self.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    # ---- scoring ----
    def loglikelihood(self, requests: Sequence[tuple[str, str]], *, desc: str | None = None) -> LoglikelihoodResult:
        """Log-likelihood of each ``continuation`` given its ``context`` (``desc``: a tqdm bar counting requests).

        Parameters
        ----------
        requests : sequence of (context, continuation)
            Strings; for multiple choice, ``(prompt, target_delimiter + choice)``.

        Returns
        -------
        LoglikelihoodResult
            Arrays of shape (len(requests),), in request order.

        Raises
        ------
        ModelError
            If a continuation encodes to no tokens or to more than ``max_length`` tokens.
        """
        pairs = [self.encode_pair(c, x) for c, x in requests]
        for (c, x), (_, cont) in zip(requests, pairs):
            if not cont:
                raise ModelError(f"continuation {x!r} of context ending {c[-40:]!r} encodes to no tokens")
        ll, greedy = self.score_tokens(pairs, desc=desc)
        return LoglikelihoodResult(ll, greedy, np.array([len(p[1]) for p in pairs], dtype=np.int64))

    def loglikelihood_rolling(self, texts: Sequence[str], max_length: int | None = None,
                              stride: int | None = None, *, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood of whole documents over rolling windows (lm-eval ``loglikelihood_rolling``; ``desc``: a
        tqdm bar counting its window requests).

        Parameters
        ----------
        texts : sequence of str
            Documents; each is encoded with ``encode`` (the tokenizer's default special tokens) and every token
            is predicted, the first one from the prefix token (BOS, else EOS).
        max_length : int, default=None
            Window length in tokens; ``None``: the scorer's ``max_length`` (lm-eval). Must not exceed it.
        stride : int, default=None
            Tokens predicted per later window (:func:`~harness.models.causal_windows.rolling_windows`); ``None``
            reproduces lm-eval (disjoint windows).

        Returns
        -------
        loglik : ndarray of shape (n,), float64
            Summed natural-log likelihood of each document.
        n_tokens : ndarray of shape (n,), int64
            Tokens predicted per document.

        Raises
        ------
        ModelError
            If ``max_length`` exceeds the model's length, or ``stride`` is outside ``[1, max_length]``.
        """
        window = self.max_length if max_length is None else int(max_length)
        if window > self.max_length:
            raise ModelError(f"window max_length={window} exceeds the model's {self.max_length} positions")
        owner, pairs, n_tokens = [], [], []
        for i, text in enumerate(texts):
            tokens = self.encode(text)
            windows = rolling_windows(tokens, self.prefix_token_id, window, stride)
            owner += [i] * len(windows)
            pairs += windows
            n_tokens.append(len(tokens))
        ll, _ = self.score_tokens(pairs, max_length=window, desc=desc)
        total = np.zeros(len(texts), dtype=np.float64)
        np.add.at(total, np.asarray(owner, dtype=np.int64), ll)
        return total, np.asarray(n_tokens, dtype=np.int64)

    def score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]],
                     max_length: int | None = None, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(loglik float64 (n,), is_greedy bool (n,))`` of token-level ``(context, continuation)`` pairs
        (:mod:`harness.models.causal_shared`: requests sharing a context share one row when ``share_context``)."""
        max_length = self.max_length if max_length is None else max_length
        pairs = list(pairs)
        # an attached intervention edits each row's own prompt: one request per row (see the module docstring)
        share = self.share_context and not has_interventions(self.model)
        rows = build_rows(pairs, max_length, share=share)
        if share and any(len(r.branches) > 1 for r in rows):
            why = tree_unavailable_reason(self.model, max(r.length for r in rows))
            if why is not None:
                logger.info("choices do not share their context's forward: %s", why)
                rows = build_rows(pairs, max_length, share=False)
        batches = plan_batches(rows, self.batch_tokens, self.batch_size)
        return score_rows_batched(self.model, rows, batches, len(pairs), self.tokenizer.pad_token_id, desc=desc)

    # ---- generation ----
    def generate_until(self, prompts: Sequence[str], *, stop: list[str], max_new_tokens: int,
                       desc: str | None = None) -> list[str]:
        """Greedy continuations of ``prompts``, cut at the first stop sequence (lm-eval ``generate_until``).

        See :func:`~harness.models.causal_generate.generate_greedy` for the exact rules; batches of
        ``generation_batch_size`` prompts, longest first (``desc``: a tqdm bar counting prompts).

        Returns
        -------
        list of str
            One output per prompt, in prompt order, without the prompt and without the stop sequence.
        """
        return generate_greedy(self.model, self.tokenizer, list(prompts), stop=list(stop),
                               max_new_tokens=max_new_tokens, max_length=self.max_length,
                               batch_size=self.generation_batch_size, cache_implementation=self.generation_cache,
                               tuned=self.generation_tuned,
                               desc=desc)
