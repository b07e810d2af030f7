"""Stage 4d: the Scorer contract (padded batches in, logits out), a Hugging Face implementation and a seeded
fake for tests."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Batch", "Scorer", "DummyScorer", "HFScorer"]


@dataclass(frozen=True)
class Batch:
    """Padded model inputs: ``input_ids``, ``attention_mask`` (and optional ``token_type_ids``), each an int64
    array of shape (batch, padded_length); ``index`` holds the rows' positions in the split."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    index: np.ndarray


class Scorer(ABC):
    """Something that turns padded token batches into class logits.

    Contract: :meth:`predict_logits` returns a float32 array of shape (batch, n_classes) of raw logits, row ``i``
    for input row ``i``; deterministic for the same weights and inputs; padding positions (mask 0) never change a
    row's logits beyond float tolerance.
    """

    n_classes: int

    @abstractmethod
    def predict_logits(self, batch: Batch) -> np.ndarray:
        """Logits of shape (batch, n_classes), float32, in the batch's row order."""

    def predict_batches(self, batches: Iterable[Batch]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(index, logits)`` for each batch, in order. Scorers on asynchronous devices override this to keep
        the device busy while the host prepares the next batch."""
        for batch in batches:
            yield batch.index, self.predict_logits(batch)


class DummyScorer(Scorer):
    """A seeded fake scorer for tests: logits are a fixed function of the tokens (sum of seeded per-token vectors,
    averaged over real tokens), so it is deterministic, order-independent and padding-invariant."""

    def __init__(self, n_classes: int = 2, seed: int = 0, vocab_size: int = 50_000) -> None:
        self.n_classes = n_classes
        self._table = np.random.default_rng(seed).normal(size=(vocab_size, n_classes)).astype(np.float32)

    def predict_logits(self, batch: Batch) -> np.ndarray:
        emb = self._table[batch.input_ids % len(self._table)] * batch.attention_mask[..., None]
        return (emb.sum(1) / np.maximum(batch.attention_mask.sum(1, keepdims=True), 1)).astype(np.float32)


class HFScorer(Scorer):
    """Scores with a transformers sequence-classification model (or any module returning ``.logits``).

    Runs in ``eval()`` under ``torch.inference_mode()`` on the model's device; with ``autocast_dtype`` set
    (``torch.bfloat16``) the forward runs under autocast on that device (the weights stay as stored).
    """

    def __init__(self, model: torch.nn.Module, n_classes: int | None = None,
                 autocast_dtype: torch.dtype | None = None) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.n_classes = int(n_classes or getattr(model.config, "num_labels", 2))
        self.autocast_dtype = autocast_dtype
        self._pin = self.device.type == "cuda"

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self._pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _forward(self, batch: Batch) -> torch.Tensor:
        inputs = {"input_ids": self._tensor(batch.input_ids), "attention_mask": self._tensor(batch.attention_mask)}
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = self._tensor(batch.token_type_ids)
        ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            out = self.model(**inputs)
        return (out.logits if hasattr(out, "logits") else out[0]).float()

    @torch.inference_mode()
    def predict_logits(self, batch: Batch) -> np.ndarray:
        return self._forward(batch).cpu().numpy()

    @torch.inference_mode()
    def predict_batches(self, batches: Iterable[Batch]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """On CUDA, launch every batch without waiting (inputs go through pinned memory, non-blocking) and copy
        the logits back once at the end, so the GPU never idles while the host pads the next batch."""
        if self.device.type != "cuda":
            yield from super().predict_batches(batches)
            return
        pending = [(batch.index, self._forward(batch)) for batch in batches]
        if not pending:
            return
        host = torch.cat([logits for _, logits in pending]).cpu().numpy()
        start = 0
        for index, logits in pending:
            yield index, host[start:start + len(index)]
            start += len(index)
