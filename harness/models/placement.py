"""Where a model's weights live: models split over several GPUs with a device map, and memory per device.

A model larger than one GPU is loaded with ``from_pretrained(..., device_map="auto")`` (accelerate places whole
layers on the visible GPUs and moves activations between them). The blend engine then keeps each tensor's base
and adapted references on that tensor's own device (:class:`harness.models.blend.BlendEngine` groups by device),
so blending stays in place and never crosses the bus. Offloading (weights kept on the CPU or disk and copied in
for each forward) is refused: an offloaded weight is not resident, so it cannot be blended in place.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.errors import ModelError, format_error

__all__ = ["DEVICE_MAPS", "check_placement", "input_device", "memory_by_device"]

#: the device-map strategies of accelerate that ``--device-map`` accepts
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_placement(model: torch.nn.Module, where: str) -> dict[str, str]:
    """The module -> device map of a model loaded with a device map, after checking every weight is resident.

    Returns
    -------
    dict of str to str
        ``model.hf_device_map`` with devices as text (``{"model.layers.0": "0", ...}``); ``{}`` without one.

    Raises
    ------
    ModelError
        If accelerate offloaded part of the model (to ``disk``, or to ``cpu`` beside GPUs) or left a weight on the
        ``meta`` device: the model does not fit the GPUs' memory.
    """
    placed = {str(k): str(v) for k, v in (getattr(model, "hf_device_map", None) or {}).items()}
    devices = set(placed.values())
    on_gpu = {d for d in devices if d not in ("cpu", "disk")}
    offloaded = sorted(k for k, d in placed.items() if d == "disk" or (d == "cpu" and on_gpu))
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded or meta:
        raise ModelError(format_error("the model does not fit the GPUs: part of it was offloaded", where=where,
                                      expected="every weight resident on a GPU (blending writes weights in place)",
                                      got=f"offloaded modules {offloaded[:3]} ({len(offloaded)}), weights on the "
                                          f"meta device {meta[:3]} ({len(meta)})",
                                      fix="use more GPUs (CUDA_VISIBLE_DEVICES), a smaller dtype (--dtype bf16), "
                                          "or a smaller model"))
    return placed


def input_device(model: torch.nn.Module) -> torch.device:
    """The device of the input embeddings (where token ids go), else of the first parameter."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    return weight.device if weight is not None else next(model.parameters()).device


def memory_by_device(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Per device the model uses: its weights (GiB) and, on CUDA, the memory allocated now and at peak (GiB,
    ``torch.cuda.memory_allocated`` / ``max_memory_allocated``: every tensor of this process on the device,
    e.g. the blend references and activations too).

    Returns
    -------
    dict
        ``{"cuda:0": {"weights_gib": ..., "allocated_gib": ..., "peak_gib": ...}, "cpu": {"weights_gib": ...}}``.
    """
    weights: dict[torch.device, int] = {}
    for p in model.parameters():
        weights[p.device] = weights.get(p.device, 0) + p.numel() * p.element_size()
    out: dict[str, dict[str, Any]] = {}
    for dev, n in sorted(weights.items(), key=lambda kv: str(kv[0])):
        entry: dict[str, Any] = {"weights_gib": round(n / 2**30, 4)}
        if dev.type == "cuda":
            entry["allocated_gib"] = round(torch.cuda.memory_allocated(dev) / 2**30, 4)
            entry["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 4)
        out[str(dev)] = entry
    return out
