"""Stage 4d: the Scorer contract (padded batches in, logits out), a Hugging Face implementation and a seeded
fake for tests."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from harness.errors import ModelError, format_error
from harness.models.packed import PackedEncoder, Packing, encoder_parts, packing_unavailable_reason
from harness.models.prepack import prepacked_linears
from harness.settings import Settings

__all__ = ["Batch", "Scorer", "DummyScorer", "HFScorer", "compile_layers", "pools_last_token", "last_token_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Padded model inputs: ``input_ids``, ``attention_mask`` (and optional ``token_type_ids``), each an int64
    array of shape (batch, padded_length); ``index`` holds the rows' positions in the split; ``position_ids``
    (same shape) is set only where a model needs them explicitly (:func:`last_token_inputs`)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    index: np.ndarray
    position_ids: np.ndarray | None = None


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

    ``packed`` runs the encoder layers on real tokens only (:class:`~harness.models.packed.PackedEncoder`: no FLOPs
    on padding, flash attention): ``None`` (default) packs whenever the model qualifies (BERT-family encoder in
    bf16/fp16 on CUDA) and falls back to padded batches with a warning if the first packed batch shows that the
    model does not take the packed path; ``True`` requires it (:class:`~harness.errors.ModelError` if the model
    cannot); ``False`` never packs.

    ``attention`` picks the packed attention kernels (:class:`~harness.models.packed.PackedEncoder`: ``"auto"`` or
    ``"flash"``).

    ``compile`` compiles each encoder layer in place (:func:`compile_layers`).

    With ``prepack`` (default) on a CPU with native bf16, a bf16 model's linear layers run with weights reordered
    once per scoring pass (:func:`~harness.models.prepack.prepacked_linears`; bit-identical logits, about 10%
    faster); not with ``compile``.

    ``threads`` sets torch's intra-op CPU threads for the process (``torch.set_num_threads``); ``None`` leaves
    them as they are.

    :meth:`from_settings` takes every one of these switches from :class:`harness.settings.Settings`.

    A decoder classifier (:func:`pools_last_token`: GPT-2, Llama, Qwen2, ...) gets each batch through
    :func:`last_token_inputs`, so it pools every row's last real token under left or right padding and whatever
    id the padding was written with.
    """

    def __init__(self, model: torch.nn.Module, n_classes: int | None = None,
                 autocast_dtype: torch.dtype | None = None, packed: bool | None = None,
                 compile: bool = False, *, attention: str = "auto", prepack: bool = True,
                 threads: int | None = None) -> None:
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.n_classes = int(n_classes or getattr(model.config, "num_labels", 2))
        self.autocast_dtype = autocast_dtype
        self._pin = self.device.type == "cuda"
        self._packer: PackedEncoder | None = None
        self._packed_required = packed is True
        self._compiled = compile
        self._prepack = prepack and not compile
        self._last_token = pools_last_token(model)
        if packed or (packed is None and autocast_dtype is None and packing_unavailable_reason(model) is None):
            self._packer = PackedEncoder.for_model(model, attention=attention)
        if compile:
            compile_layers(model)

    @classmethod
    def from_settings(cls, model: torch.nn.Module, settings: Settings) -> HFScorer:
        """A scorer with the speed switches of ``settings``: ``packed`` (auto/on/off), ``attention``, ``prepack``,
        ``compile`` and ``threads`` (resolved: :attr:`~harness.settings.Settings.effective_threads`)."""
        packed = {"auto": None, "on": True, "off": False}[settings.packed]
        return cls(model, packed=packed, compile=settings.compile, attention=settings.attention,
                   prepack=settings.prepack, threads=settings.effective_threads)

    @property
    def packed(self) -> bool:
        """Whether batches run packed (padding-free)."""
        return self._packer is not None

    @property
    def packer(self) -> PackedEncoder | None:
        """The :class:`PackedEncoder` of packed scoring (its ``attention`` picks the kernels), else ``None``."""
        return self._packer

    @property
    def packing_mode(self) -> str | None:
        """``None`` for padded batches, else the packed attention kernels (:attr:`PackedEncoder.mode`)."""
        return None if self._packer is None else self._packer.mode

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self._pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _forward(self, batch: Batch) -> torch.Tensor:
        if self._last_token:
            batch = last_token_inputs(batch, self.model.config.pad_token_id)
        inputs = {"input_ids": self._tensor(batch.input_ids), "attention_mask": self._tensor(batch.attention_mask)}
        if batch.position_ids is not None:
            inputs["position_ids"] = self._tensor(batch.position_ids)
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = self._tensor(batch.token_type_ids)
        if self._packer is not None:
            try:
                return self._run(inputs, self._packer.packing(Packing.from_mask(batch.attention_mask, self.device,
                                                                                pin=self._pin)))
            except ModelError:
                if self._packed_required or self._packer.checked:  # only the first batch's layer check falls back
                    raise
                log.warning("packed scoring is not available for this model (not every attention layer took the "
                            "packed path); scoring padded batches", exc_info=True)
                self._packer.close()
                self._packer = None
        return self._run(inputs, torch.autocast(self.device.type, dtype=self.autocast_dtype)
                         if self.autocast_dtype is not None else contextlib.nullcontext())

    def _run(self, inputs: dict[str, torch.Tensor], ctx) -> torch.Tensor:
        with ctx:
            out = self.model(**inputs)
        return (out.logits if hasattr(out, "logits") else out[0]).float()

    @torch.inference_mode()
    def predict_logits(self, batch: Batch) -> np.ndarray:
        return self._forward(batch).cpu().numpy()

    @torch.inference_mode()
    def predict_batches(self, batches: Iterable[Batch]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """On CUDA, launch every batch without waiting (inputs go through pinned memory, non-blocking) and copy
        the logits back once at the end, so the GPU never idles while the host pads the next batch. On the CPU,
        bf16 linear weights are prepacked for the pass (see the class docstring)."""
        if self.device.type != "cuda":
            with prepacked_linears(self.model) if self._prepack else contextlib.nullcontext():
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


def pools_last_token(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a decoder sequence classifier that pools its last real token.

    transformers' decoder classifiers (GPT-2, Llama, Qwen2, Gemma, Mistral, OPT, ...) name their head ``score``
    and pool the rightmost position whose input id is not ``config.pad_token_id``; encoders (``classifier``) and
    encoder-decoders (``classification_head``) pool otherwise.
    """
    cfg = getattr(model, "config", None)
    return (isinstance(getattr(model, "score", None), torch.nn.Linear) and cfg is not None
            and not getattr(cfg, "is_encoder_decoder", False) and getattr(cfg, "pad_token_id", None) is not None)


def last_token_inputs(batch: Batch, pad_token_id: int) -> Batch:
    """The batch as a last-token-pooling classifier must see it to score every row as it would score it alone.

    Two things make padding visible to such a model (:func:`pools_last_token`): it finds the last real token by
    comparing ids with ``config.pad_token_id``, so padding written with another id (a tokenizer whose pad token
    differs from the config's) is pooled instead of the last real token; and with left padding, absolute position
    embeddings (GPT-2) would start at the first pad. So masked positions get ``pad_token_id``, and a batch with any
    left padding gets ``position_ids = max(cumsum(mask) - 1, 0)`` (positions count real tokens only, as in
    ``generate``). Right-padded batches keep the model's own positions.

    Parameters
    ----------
    batch : Batch
        Padded on either side; ``attention_mask`` is 1 on real tokens.
    pad_token_id : int
        The model's ``config.pad_token_id``.

    Returns
    -------
    Batch
        A new batch (the input is not changed); the same object when nothing needs changing.
    """
    mask = batch.attention_mask
    ids = batch.input_ids
    if bool((ids[mask == 0] != pad_token_id).any()):
        ids = np.where(mask == 0, np.int64(pad_token_id), ids)
    positions = batch.position_ids
    if positions is None and mask.shape[1] and bool((mask[:, 0] == 0).any()):
        positions = np.maximum(mask.cumsum(axis=1) - 1, 0).astype(np.int64)
    if ids is batch.input_ids and positions is batch.position_ids:
        return batch
    return Batch(ids, mask, batch.token_type_ids, batch.index, positions)


def compile_layers(model: torch.nn.Module) -> int:
    """Compile each layer of the model's encoder stack (or a causal LM's decoder blocks) in place with
    ``torch.compile(dynamic=True)`` ("regional compilation": the layers share one compiled graph, so warm-up is
    that of one layer). Fuses the residual add into LayerNorm and the bias into GELU; with packed batches only the
    token count varies, so nothing recompiles.

    Decoder (benchmarks/lm_gpu.py --compile-mc, 1.1B llama, bf16, H200, 4,000 multiple-choice rows at 32,768
    tokens per batch): a 14 s first pass, then 2.46 s vs 3.34 s per pass, 56.4% vs 41.5% model FLOP utilisation
    (log-likelihoods within bf16 rounding of the eager ones).

    Measured (benchmarks/bench_gpu.py --compile, BERT-large, bf16, H200, packed with the short-sequence attention
    kernel): 4-12 s warm-up, then 15,440 vs 14,863 examples/s (66.5% vs 64.0% model FLOP utilisation against that
    lease's 703 TFLOP/s matmul rate). It pays off for long runs, not for a quick CPU sweep.

    Returns
    -------
    int
        Number of layers compiled.

    Raises
    ------
    ModelError
        If the model has no encoder layer stack (``base_model.encoder.layer``).
    """
    layers = getattr(encoder_parts(model)[1], "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        from harness.models.reft import find_layers  # decoder blocks (llama model.layers, gpt2 transformer.h, ...)

        try:
            layers = find_layers(model)
        except ModelError:
            layers = None
    if not isinstance(layers, torch.nn.ModuleList):
        raise ModelError(format_error("--compile found no transformer layers to compile",
                                      expected="a transformers encoder (base_model.encoder.layer) or decoder "
                                               "(model.layers, transformer.h)",
                                      got=type(model).__name__, fix="run without --compile"))
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
