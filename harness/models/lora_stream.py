"""``harness blend`` of a LoRA adapter with bounded memory: the adapted side of :func:`stream_blend` computed
tensor by tensor from the base checkpoint's memory maps and the adapter's small factors.

For LoRA and rsLoRA the fine-tune's weight is ``W + s B A`` (``s = lora_alpha / r``, or ``/ sqrt(r)`` with
``use_rslora``; ``r`` and ``lora_alpha`` per module from ``rank_pattern``/``alpha_pattern`` as peft resolves them,
:func:`peft.utils.other.get_pattern_key`); GPT-2 ``Conv1D`` targets (``fan_in_fan_out``) store ``(B A)^T``, and
embedding LoRA (``lora_embedding_A``/``_B``) ``(B A)^T`` as peft's ``Embedding.get_delta_weight``. The other tensors
the adapter trained (``modules_to_save`` copies, saved biases) replace the base's. :class:`LoraCheckpoint` serves
those adapted tensors through the :class:`~harness.models.blend_stream.Checkpoint` interface (``meta``, ``where``,
``read(name, rows)``), so :func:`~harness.models.blend_stream.stream_blend` writes ``lerp(W, W + s B A, alpha)``
row chunk by row chunk in fp32 (the values of the in-memory merged path up to fp32 rounding) and peak memory stays
about one output shard, as for two full checkpoints.

Adapters this path cannot serve exactly (DoRA, trainable token rows, LoRA biases, parameter targets, convolution
targets, tied LoRA targets) are refused by :func:`stream_blocker` and take the in-memory path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error
from harness.models.blend_stream import Checkpoint
from harness.models.lora_scale import PREFIX, _base_key, lora_scale_blocker

__all__ = ["LoraCheckpoint", "stream_blocker"]


def stream_blocker(cfg: dict[str, Any]) -> str | None:
    """Why an adapter config cannot be streamed (``None`` when it can): :func:`lora_scale_blocker`'s reasons,
    plus tied LoRA targets (``target_modules_to_tie``)."""
    why = lora_scale_blocker(cfg)
    if why is None and cfg.get("target_modules_to_tie"):
        why = "tied LoRA targets"
    return why


class LoraCheckpoint:
    """The adapted side of a streamed LoRA blend: ``base`` plus the adapter's update, one tensor at a time.

    Parameters
    ----------
    base : Checkpoint
        The base checkpoint (:func:`~harness.models.blend_stream.open_checkpoint`); its config, shard map and
        tensor metadata are shared (the adapter changes values, never names, shapes or dtypes).
    path : Path
        The adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``; pickled adapters are not
        read here).

    :func:`stream_blocker` must return ``None`` for its ``adapter_config.json`` (read here with peft's
    ``LoraConfig``).

    Raises
    ------
    ModelError
        If an adapter tensor names no base tensor, a factor pair is incomplete or not a matrix, or its shape does
        not fit the base tensor.
    """

    def __init__(self, base: Checkpoint, path: Path) -> None:
        from peft.utils.other import get_pattern_key
        from safetensors.torch import load_file

        from harness.models.load import weight_files

        self.base, self.path, self.config = base, Path(path), base.config
        self.where, self.meta = base.where, base.meta
        tensors: dict[str, torch.Tensor] = {}
        for f in weight_files(self.path, allow_pickle=False):
            tensors.update(load_file(str(f)))
        self.others: dict[str, torch.Tensor] = {}
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            short = k.removeprefix(PREFIX)
            for marker, part in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora_embedding_A", "eA"),
                                 (".lora_embedding_B", "eB")):
                if marker in short:
                    pairs.setdefault(short.split(marker)[0], {})[part] = v
                    break
            else:
                self.others[self._known(_base_key(k), k)] = v
        lc = _lora_config(self.path)
        fan_in_fan_out, r0, a0 = bool(lc.fan_in_fan_out), lc.r, lc.lora_alpha
        ranks, alphas = dict(lc.rank_pattern or {}), dict(lc.alpha_pattern or {})
        self.deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]] = {}
        for module, parts in pairs.items():
            name = self._known(module + ".weight", module)
            emb = "eA" in parts or "eB" in parts
            a, b = (parts.get("eA"), parts.get("eB")) if emb else (parts.get("A"), parts.get("B"))
            if a is None or b is None or a.dim() != 2 or b.dim() != 2:
                raise ModelError(format_error("an adapter factor pair is incomplete or not a matrix", where=str(path),
                                              got=module, fix="re-save the adapter with save_pretrained"))
            r = ranks.get(get_pattern_key(ranks.keys(), module), r0)
            lora_alpha = alphas.get(get_pattern_key(alphas.keys(), module), a0)
            try:
                scale = float(lora_alpha) / (math.sqrt(r) if lc.use_rslora else float(r))
            except (TypeError, ValueError, ZeroDivisionError) as e:
                raise ModelError(format_error("adapter_config.json has an unusable r or lora_alpha", where=str(path),
                                              got=f"r={r!r}, lora_alpha={lora_alpha!r}",
                                              fix="re-save the adapter with save_pretrained")) from e
            transposed = emb or fan_in_fan_out
            shape = (b.shape[0], a.shape[1])[::-1] if transposed else (b.shape[0], a.shape[1])
            if tuple(self.meta[name].shape) != shape:
                raise ModelError(format_error("adapter factors do not fit the base tensor", where=f"{path}: {module}",
                                              expected=tuple(self.meta[name].shape), got=shape,
                                              fix="check that --base is the model this adapter was trained on"))
            self.deltas[name] = (a.float(), b.float(), float(scale), transposed)

    def _known(self, name: str, source: str) -> str:
        if name not in self.meta:
            raise ModelError(format_error("adapter tensors match no tensor of the base checkpoint", where=str(self.path),
                                          got=f"{source!r} (as {name!r})",
                                          fix="check that --base is the model this adapter was trained on"))
        return name

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """The adapted tensor ``name`` (or rows ``rows`` of it): fp32 ``W + s B A`` for a LoRA target (``W`` the
        adapter's saved copy when it saved one, as peft's ``save_embedding_layers``, else the base's), the adapter's
        copy for another tensor it saved whole, else the base tensor unchanged."""
        if name in self.others:  # a tensor the adapter saved whole (its own copy of an adapted embedding included)
            t = self.others[name]
            w = t if rows is None or not t.dim() else t[rows]
        else:
            w = self.base.read(name, rows)
        if name not in self.deltas:
            return w
        a, b, scale, transposed = self.deltas[name]
        rows = rows if rows is not None else slice(0, w.shape[0])
        delta = (b @ a[:, rows]).T if transposed else b[rows] @ a
        return w.float() + scale * delta

    def close(self) -> None:
        self.base.close()


def _lora_config(path: Path) -> Any:
    """peft's own parse of the adapter's config (``LoraConfig.from_pretrained``), errors as :class:`ModelError`."""
    from peft import LoraConfig

    try:
        return LoraConfig.from_pretrained(str(path))
    except Exception as e:  # peft raises TypeError/ValueError for bad fields
        raise ModelError(format_error("adapter_config.json is not a valid LoRA config", where=str(path),
                                      got=str(e)[:300], fix="re-save the adapter with save_pretrained")) from e
