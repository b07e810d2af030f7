"""Stage 5: the runners, one per request kind (:data:`harness.tasks.base.REQUEST_KINDS`), which own a loaded model
and turn a task's prepared requests into raw outputs; and :func:`predict`, which runs a :class:`Scorer` over a
:class:`~harness.records.TokenizedSplit` and returns :class:`~harness.records.Predictions` in the split's row order.

Batches are formed by length under a token budget (``batch_tokens`` = rows x padded length), longest first, with
dynamic padding, so padding waste stays small and memory use is bounded. Results do not depend on the batch
size beyond float tolerance (tests check this).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.models.scorer import Batch, Scorer
from harness.progress import progress_bar
from harness.records import Predictions, TokenizedSplit

__all__ = ["default_batch_tokens", "make_batches", "pad_batch", "predict", "ClassifierRunner", "LMRunner"]

log = logging.getLogger(__name__)


def default_batch_tokens(device_type: str) -> int:
    """Token budget per batch when none is given: small on CPU, where activations that stay in cache matter more
    than launch overhead (MiniLM, 2 cores: 1,024 tokens ran 2.5x faster than 16,384), large on accelerators
    (BERT-large on an H200: 32,768 was best of 16k/32k/64k)."""
    return 1024 if device_type == "cpu" else 32768


def make_batches(lengths: np.ndarray, batch_tokens: int, max_batch_size: int = 1024) -> list[np.ndarray]:
    """Group rows into batches of similar length under a token budget.

    Parameters
    ----------
    lengths : ndarray of int, shape (n,)
        Token count of each row.
    batch_tokens : int
        Budget of rows x padded length per batch (a single row longer than the budget gets its own batch).
    max_batch_size : int, default=1024
        Upper bound on rows per batch.

    Returns
    -------
    list of ndarray of int64
        Row indices per batch, longest rows first; every row appears exactly once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch_size, batch_tokens // longest, n - start))
        batches.append(order[start:start + size].astype(np.int64))
        start += size
    return batches


def pad_batch(tok: TokenizedSplit, index: np.ndarray, pad_id: int) -> Batch:
    """Pad the rows ``index`` of ``tok`` to their longest length (right padding)."""
    width = int(tok.lengths[index].max())
    ids = np.full((len(index), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    types = np.zeros((len(index), width), dtype=np.int64) if tok.token_type_ids is not None else None
    for r, i in enumerate(index):
        L = int(tok.lengths[i])
        ids[r, :L] = tok.input_ids[i]
        mask[r, :L] = 1
        if types is not None:
            types[r, :L] = tok.token_type_ids[i]
    return Batch(ids, mask, types, index)


def _batches(tok: TokenizedSplit, batch_tokens: int, pad_id: int) -> Iterator[Batch]:
    for index in make_batches(tok.lengths, batch_tokens):
        yield pad_batch(tok, index, pad_id)


def predict(scorer: Scorer, tok: TokenizedSplit, *, point: str, alpha: float | None = None,
            batch_tokens: int | None = None, pad_id: int = 0, progress: bool = False,
            columns: np.ndarray | None = None) -> Predictions:
    """Score every row of a tokenized split.

    Parameters
    ----------
    scorer : Scorer
        The model.
    tok : TokenizedSplit
        Inputs.
    point : str
        Point id recorded in the result (``base``, ``adapted``, ``alpha=0.3``).
    alpha : float, default=None
        Blend weight recorded in the result.
    batch_tokens : int, default=None
        Token budget per batch (rows x padded length); default :func:`default_batch_tokens` of the scorer's
        device.
    pad_id : int, default=0
        The tokenizer's pad token id.
    progress : bool, default=False
        Show a tqdm progress bar (on a terminal: :func:`harness.progress.progress_bar`).
    columns : ndarray of int, default=None
        Logit column per suite class (from :func:`harness.models.load.align_labels`); default identity.

    Returns
    -------
    Predictions
        Logits float32 of shape (n_examples, n_classes) in the split's row order.
    """
    out: np.ndarray | None = None
    if batch_tokens is None:
        device = getattr(scorer, "device", None)
        batch_tokens = default_batch_tokens(getattr(device, "type", "cpu"))
    it = _batches(tok, batch_tokens, pad_id)
    with progress_bar(total=len(tok), desc=f"{point} {tok.ref.key}", unit="ex", show=progress) as bar:
        for index, logits in scorer.predict_batches(it):
            logits = np.asarray(logits, dtype=np.float32)
            if out is None:
                out = np.empty((len(tok), logits.shape[1]), dtype=np.float32)
            out[index] = logits
            bar.update(len(index))
    assert out is not None  # tokenize_split refuses empty splits
    if columns is not None:
        out = np.ascontiguousarray(out[:, columns])
    return Predictions(ref=tok.ref, point=point, alpha=alpha, example_ids=tok.example_ids,
                       source_ids=tok.source_ids, labels=tok.labels, outputs={"logits": out})


@dataclass(frozen=True)
class ClassifierRunner:
    """Serves ``classify`` requests: class logits of a sequence classifier, columns ordered as the suite's classes.

    Attributes
    ----------
    scorer : Scorer
        The model.
    pad_id : int
        The tokenizer's pad token id.
    batch_tokens : int or None
        Token budget per batch (default :func:`default_batch_tokens` of the scorer's device).
    columns : ndarray of int or None
        Logit column of each suite class (:func:`harness.models.load.align_labels`); ``None``: identity.
    progress : bool
        Show a progress bar per split.
    trunk : harness.models.trunk.TrunkCache or None
        Replays the frozen leading layers' stored states (bit-identical logits) when a sweep found some.
    compiled : bool
        Whether the scorer's layers were compiled (recorded in store keys).
    """

    scorer: Scorer
    pad_id: int = 0
    batch_tokens: int | None = None
    columns: np.ndarray | None = None
    progress: bool = False
    trunk: Any = None
    compiled: bool = False
    kind: ClassVar[str] = "classify"

    def run(self, prepared: Any, *, point: str, alpha: float | None = None) -> dict[str, np.ndarray]:
        """``{"logits": float32 (n, n_classes)}`` for a prepared split whose requests are a
        :class:`~harness.records.TokenizedSplit`."""
        with self.trunk.scoring(prepared.cache_key) if self.trunk is not None else nullcontext():
            pred = predict(self.scorer, prepared.requests, point=point, alpha=alpha, batch_tokens=self.batch_tokens,
                           pad_id=self.pad_id, progress=self.progress, columns=self.columns)
        return {"logits": pred.logits}

    def row_batches(self, prepared: Any) -> list[np.ndarray]:
        """The rows of each batch :meth:`run` forms for ``prepared`` (:func:`make_batches` with this runner's
        token budget); a data-parallel run deals them whole to its ranks."""
        budget = self.batch_tokens
        if budget is None:
            budget = default_batch_tokens(getattr(getattr(self.scorer, "device", None), "type", "cpu"))
        return make_batches(prepared.requests.lengths, budget)

    def store_extra(self) -> dict[str, Any]:
        """What besides the model and the split can change the outputs (part of the results-store key); read
        after scoring, since a first-batch fallback to padded batches changes it."""
        return {"columns": None if self.columns is None else self.columns.tolist(),
                "packed": getattr(self.scorer, "packing_mode", None) or False, "compiled": self.compiled}


@dataclass(frozen=True)
class LMRunner:
    """Serves the language-model request kinds with a :class:`harness.models.causal.CausalLMScorer` (lm-eval
    0.4.13 ``HFLM`` semantics: context/continuation split, rolling windows, greedy generation with stop
    sequences).

    ``run`` returns, per request kind: ``loglikelihood`` -> ``loglik`` float64 and ``is_greedy`` float64, one per
    (context, continuation) request; ``loglikelihood_rolling`` -> ``loglik`` and ``tokens`` float64, one per
    document; ``generate_until`` -> ``output`` str, one per prompt.
    """

    scorer: Any
    progress: bool = False
    compiled: bool = False

    def run(self, prepared: Any, *, point: str, alpha: float | None = None) -> dict[str, np.ndarray]:
        """Outputs for one prepared split (see the class docstring)."""
        kind, reqs = prepared.kind, prepared.requests
        log.info("%s %s: %d %s requests", point, prepared.ref.key, len(reqs), kind)
        desc = f"{point} {prepared.ref.key}" if self.progress else None  # a bar counting the requests scored
        if kind == "loglikelihood":
            res = self.scorer.loglikelihood(reqs, desc=desc)
            return {"loglik": np.asarray(res.loglik, np.float64), "is_greedy": np.asarray(res.is_greedy, np.float64)}
        if kind == "loglikelihood_rolling":
            ll, tokens = self.scorer.loglikelihood_rolling(reqs, max_length=prepared.info.get("max_length"),
                                                           stride=prepared.info.get("stride"), desc=desc)
            return {"loglik": np.asarray(ll, np.float64), "tokens": np.asarray(tokens, np.float64)}
        if kind == "generate_until":
            texts = self.scorer.generate_until(reqs, stop=list(prepared.info["stop"]),
                                               max_new_tokens=int(prepared.info["max_new_tokens"]), desc=desc)
            return {"output": np.array(texts, dtype=str)}
        raise ValueError(f"LMRunner cannot serve requests of kind {kind!r}")

    def store_extra(self) -> dict[str, Any]:
        """What besides the model and the requests can change the outputs: the model input length, compiled
        layers, and the generation cache and tuning (the static cache's compiled loop rounds differently from
        ``generate`` in bf16, and greedy text follows the first flipped near tie)."""
        return {"runner": "lm", "max_length": int(self.scorer.max_length), "compiled": self.compiled,
                "generation_cache": getattr(self.scorer, "generation_cache", None),
                "generation_tuned": bool(getattr(self.scorer, "generation_tuned", False))}
