"""The LoRA-scale path of a blend: ``theta(alpha) = theta_base + alpha * delta_LoRA`` without a merged copy.

For LoRA and rsLoRA the merged weight is ``W + s * B A`` with ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)``),
linear in ``s``; the WiSE-FT blend ``lerp(W, W + s B A, alpha)`` is therefore ``W + (alpha s) B A``, the adapter
at scale ``alpha``. :class:`LoraDelta` holds the adapter's low-rank factors, injects peft's LoRA layers into the
live model (:func:`peft.inject_adapter_in_model`) and sets their scale per alpha (``LoraLayer.set_scale``), so a
sweep holds one model plus the factors; the rest the adapter trained (``modules_to_save`` copies, biases) is
returned separately and interpolated as weights by :class:`harness.models.blend.BlendEngine`. :meth:`merge_into`
writes ``W + alpha s B A`` into the weights in place and removes the LoRA layers (``harness blend``).

The unmerged forward ``W x + alpha s B (A x)`` equals the forward of the lerped weights up to fp32 rounding:
tests allow ``atol=2e-5`` on the logits of the tiny models (relative ``1e-5``); alpha 0 gives the base logits
exactly (the LoRA term is multiplied by zero).

Adapters whose merged weight is not linear in the scale (DoRA), or that carry pieces this path does not handle
(trainable token rows, LoRA biases, parameter targets), take the merged path (:func:`lora_scale_blocker` says why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error

__all__ = ["LoraDelta", "lora_scale_blocker", "load_lora_delta", "blend_in_place", "PREFIX"]

log = logging.getLogger(__name__)
PREFIX = "base_model.model."
_FACTOR_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B")


def lora_scale_blocker(cfg: dict[str, Any]) -> str | None:
    """Why an adapter config cannot take the LoRA-scale path (``None`` when it can)."""
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        return f"peft_type {cfg.get('peft_type')!r} is not LORA"
    for key, why in (("use_dora", "DoRA's merged weight is not linear in the scale"),
                     ("trainable_token_indices", "trainable token rows"), ("lora_bias", "LoRA biases"),
                     ("target_parameters", "parameter targets"), ("use_qalora", "QA-LoRA")):
        if cfg.get(key):
            return why
    return None


@dataclass
class LoraDelta:
    """An adapter's LoRA factors and how to scale them in a live model.

    ``config`` is the peft ``LoraConfig`` without ``modules_to_save`` (those are interpolated as weights);
    ``factors`` the adapter's ``lora_A``/``lora_B`` tensors keyed as in the adapter file without the
    ``base_model.model.`` prefix; ``target_names`` the base weights the update changes (``...q_proj.weight``).
    """

    config: Any
    factors: dict[str, torch.Tensor]
    target_names: list[str]
    source: str = ""
    _layers: list = field(default_factory=list, repr=False)

    @property
    def is_zero(self) -> bool:
        """Whether the update is exactly zero (every ``lora_B`` is zero, as in a freshly initialised adapter), so
        the adapted weights equal the base's."""
        return all(not bool(t.any()) for k, t in self.factors.items() if "lora_B" in k)

    @property
    def n_bytes(self) -> int:
        """Bytes held by the factors."""
        return sum(t.numel() * t.element_size() for t in self.factors.values())

    def attach(self, model: torch.nn.Module) -> None:
        """Inject LoRA layers into ``model`` in place and load the factors (scale 0 until :meth:`set_alpha`).

        Raises
        ------
        ModelError
            If a factor lands on no module of the model.
        """
        from peft import inject_adapter_in_model
        from peft.tuners.lora import LoraLayer
        from peft.utils import set_peft_model_state_dict

        p = next(model.parameters())
        factors = {k: v.to(p.device, p.dtype) for k, v in self.factors.items()}
        try:
            inject_adapter_in_model(self.config, model, adapter_name="default")
            res = set_peft_model_state_dict(model, factors, adapter_name="default")
        except Exception as e:  # a config peft cannot apply (bad fields, shapes of another base)
            raise ModelError(format_error("cannot apply the adapter to the base model", where=self.source,
                                          got=str(e)[:400], fix="check adapter_config.json and that --base is the "
                                          "model the adapter was trained on")) from e
        bad = [k for k in res.unexpected_keys if "lora_" in k]
        lacking = [k for k in getattr(res, "missing_keys", ()) if "lora_" in k]
        if lacking:
            raise ModelError(format_error("adapter file lacks tensors its config promises", where=self.source,
                                          got=f"{len(lacking)} missing, e.g. {lacking[:3]}",
                                          fix="re-save the adapter with save_pretrained"))
        if bad:
            raise ModelError(format_error("adapter tensors match no module of the base model", where=self.source,
                                          got=f"{len(bad)} unmatched, e.g. {bad[:3]}",
                                          fix="check that --base is the model this adapter was trained on"))
        self._layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        for m in self._layers:
            for prm in m.parameters():
                prm.requires_grad_(False)
        model.eval()
        self.set_alpha(0.0)

    def set_alpha(self, alpha: float) -> None:
        """Scale every LoRA layer to ``alpha`` times its own scale (``lora_alpha / r`` or ``/ sqrt(r)``)."""
        for m in self._layers:
            m.set_scale("default", alpha)

    @torch.no_grad()
    def merge_into(self, model: torch.nn.Module, alpha: float) -> None:
        """Write ``W + alpha * s * B A`` into the weights in place and replace each LoRA layer by its base layer."""
        self.set_alpha(alpha)
        names = {id(m): n for n, m in model.named_modules()}
        for m in self._layers:
            m.merge(safe_merge=True, adapter_names=["default"])
            parent_name, _, child = names[id(m)].rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, m.get_base_layer())
        self._layers = []
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            model.__dict__.pop(attr, None)  # what inject_adapter_in_model set on the instance


@torch.no_grad()
def blend_in_place(model: torch.nn.Module, delta: LoraDelta, others: dict[str, torch.Tensor], alpha: float) -> None:
    """Make ``model`` (holding the base weights) the blend at ``alpha`` with no second copy: the other trained
    tensors are interpolated (``lerp`` in fp32, as :func:`harness.models.blend.interpolate`) and the LoRA update is
    merged at scale ``alpha`` (:meth:`LoraDelta.merge_into`).

    Raises
    ------
    BlendError
        If the other tensors do not fit the model (validated with :func:`harness.models.checks.validate_pair`).
    """
    from harness.models.checks import validate_pair

    live = model.state_dict()
    validate_pair({k: live[k] for k in others}, others)
    for name, a in others.items():
        t = live[name]
        t.copy_(torch.lerp(t.float(), a.to(t.device).float(), alpha).to(t.dtype))
    delta.attach(model)
    delta.merge_into(model, alpha)


def _base_key(adapter_key: str) -> str:
    """The base model's name for a non-factor adapter tensor (``q.base_layer.bias`` -> ``q.bias``)."""
    return adapter_key.removeprefix(PREFIX).replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


def load_lora_delta(path: Path, cfg: dict[str, Any], base_sd: dict[str, torch.Tensor]
                    ) -> tuple[LoraDelta, dict[str, torch.Tensor]]:
    """Split an adapter file into LoRA factors and the other tensors it trained, in the base key space.

    Parameters
    ----------
    path : Path
        The adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
    cfg : dict
        Its parsed ``adapter_config.json`` (:func:`lora_scale_blocker` must have returned ``None``).
    base_sd : dict
        The base model's state dict (names, shapes and dtypes only are used).

    Returns
    -------
    (LoraDelta, dict[str, torch.Tensor])
        The factors, and the other tensors (``modules_to_save`` heads, biases, saved embedding copies) in the base
        model's key space and dtype.

    Raises
    ------
    ModelError
        If a non-factor tensor names no base tensor, or a factor targets a module the base lacks.
    """
    from peft import LoraConfig
    from safetensors.torch import load_file

    from harness.models.load import weight_files

    try:
        config = LoraConfig.from_pretrained(str(path))
    except Exception as e:  # peft raises TypeError/ValueError for bad fields
        raise ModelError(format_error("adapter_config.json is not a valid LoRA config", where=str(path),
                                      got=str(e)[:300], fix="re-save the adapter with save_pretrained")) from e
    config.modules_to_save = None
    config.inference_mode = True
    factors, others = {}, {}
    for f in weight_files(path, allow_pickle=False):
        for k, v in load_file(str(f)).items():
            if any(m in k for m in _FACTOR_MARKERS):
                factors[k.removeprefix(PREFIX)] = v
                continue
            name = _base_key(k)
            if name not in base_sd:
                raise ModelError(format_error("adapter tensors match no module of the base model", where=str(path),
                                              got=f"{k!r} (as {name!r})",
                                              fix="check that --base is the model this adapter was trained on"))
            others[name] = v.to(base_sd[name].dtype)
    targets = sorted({k.split(".lora_")[0] + ".weight" for k in factors})
    missing = [t for t in targets if t not in base_sd]
    if missing:
        raise ModelError(format_error("adapter tensors match no module of the base model", where=str(path),
                                      got=f"{len(missing)} unmatched, e.g. {missing[:3]}",
                                      fix="check that --base is the model this adapter was trained on"))
    return LoraDelta(config=config, factors=factors, target_names=targets, source=str(path)), others
