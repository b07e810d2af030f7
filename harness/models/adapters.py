"""Stage 4c: turn an adapted checkpoint of any common kind into a state dict aligned with the base model.

* A full fine-tuned checkpoint (HF folder, sharded or not): loaded like any model; its state dict is used.
* A PEFT adapter folder (it holds ``adapter_config.json``): applied to a *copy* of the base model (the base is
  never changed), checked strictly (every adapter tensor must land on a module), then merged. For plain LoRA the
  merged weight is ``W + (lora_alpha / r) * B A`` (``lora_alpha / sqrt(r)`` with rsLoRA), so interpolating merged
  weights at blend weight alpha equals scaling the LoRA update by alpha, while everything else the adapter
  carries (``modules_to_save`` heads, trained biases, token rows) is interpolated as weights. For adapters whose
  merged weight is not linear in the scale (DoRA) merging first and interpolating the merged weights is the only
  well-defined blend; that is what this module does for every adapter type.

Keep the blend's ``alpha`` apart from PEFT's ``lora_alpha``: they are unrelated numbers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error
from harness.models.checks import adapter_stored_keys, check_adapter_head
from harness.models.load import (LoadedModel, check_safetensors, is_adapter_dir, load_model, model_fingerprint,
                                 weight_files)

__all__ = ["AdaptedWeights", "load_adapted"]

log = logging.getLogger(__name__)


@dataclass
class AdaptedWeights:
    """The adapted model as a state dict on CPU in the base model's key space and storage dtype.

    ``kind`` is ``full`` or the PEFT type in lower case (``lora``, ``dora``, ...); ``id2label`` the adapted head's
    labels; ``fingerprint`` identifies the adapted model: the sha256 of its files for a full checkpoint, and for an
    adapter (which means nothing without its base) a sha256 of (base fingerprint, adapter files' sha256), the
    latter also kept as ``info["adapter_fingerprint"]``.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    fingerprint: str
    id2label: dict[int, str]
    source: str
    tokenizer: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def _state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _adapter_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "adapter_config.json").read_text())
    except ValueError as e:
        raise ModelError(format_error("adapter_config.json is not valid JSON", where=str(path))) from e


def _check_all_applied(peft_model: Any, path: Path) -> None:
    """Every tensor in the adapter file must correspond to a tensor peft expects (strict load)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    files = weight_files(path, allow_pickle=False)
    stored: set[str] = set()
    for f in files:
        check_safetensors(f)
        with safe_open(str(f), framework="pt") as fh:
            stored |= set(fh.keys())
    expected = set(get_peft_model_state_dict(peft_model).keys())

    def norm(k: str) -> str:
        return k.replace(".default", "")

    unmatched = sorted({norm(k) for k in stored} - {norm(k) for k in expected})
    missing = sorted({norm(k) for k in expected} - {norm(k) for k in stored})
    if unmatched:
        raise ModelError(format_error("adapter tensors match no module of the base model", where=str(path),
                                      got=f"{len(unmatched)} unmatched, e.g. {unmatched[:3]}",
                                      fix="check that --base is the model this adapter was trained on"))
    if missing:
        raise ModelError(format_error("adapter file lacks tensors its config promises", where=str(path),
                                      got=f"{len(missing)} missing, e.g. {missing[:3]}",
                                      fix="re-save the adapter with save_pretrained"))


def _load_peft(base: LoadedModel, path: Path) -> AdaptedWeights:
    try:
        from peft import PeftModel
    except ImportError as e:  # pragma: no cover - peft is a dependency
        raise ModelError("loading an adapter needs the 'peft' package: pip install peft") from e
    cfg = _adapter_info(path)
    files = weight_files(path, allow_pickle=False)  # refuses pickle-only adapters
    random_left = _check_head_tensors(base, cfg, files, path)
    work = copy.deepcopy(base.model)  # the base model is never touched
    try:
        peft_model = PeftModel.from_pretrained(work, str(path), is_trainable=False)
    except Exception as e:
        raise ModelError(format_error("cannot apply the adapter to the base model", where=str(path),
                                      got=str(e)[:400], fix="check that --base is the model the adapter was "
                                      "trained on")) from e
    _check_all_applied(peft_model, path)
    merged = peft_model.merge_and_unload()
    sd = _state_dict_cpu(merged)
    del peft_model, merged, work
    kind = str(cfg.get("peft_type", "adapter")).lower()
    if cfg.get("use_dora"):
        kind = "dora"
    adapter_fp = model_fingerprint(path)
    # the adapted model is base + adapter: the same adapter on another base must not share results-store entries
    fingerprint = hashlib.sha256(f"peft|{base.fingerprint}|{adapter_fp}".encode()).hexdigest()
    return AdaptedWeights(state_dict=sd, kind=kind, fingerprint=fingerprint, id2label=base.id2label,
                          source=str(path), tokenizer=base.tokenizer,
                          info={"adapter_fingerprint": adapter_fp, "peft_type": cfg.get("peft_type"), "r": cfg.get("r"),
                                "lora_alpha": cfg.get("lora_alpha"), "use_rslora": cfg.get("use_rslora"),
                                "use_dora": cfg.get("use_dora"), "modules_to_save": cfg.get("modules_to_save"),
                                "random_weights": random_left})


def _check_head_tensors(base: LoadedModel, cfg: dict[str, Any], files: list[Path], path: Path) -> list[str]:
    """Issue 17: refuse an adapter whose file lacks the head its config lists (blamed on the adapter), and
    return the base's random head tensors the adapter does not replace (:mod:`harness.models.checks`)."""
    stored = adapter_stored_keys(files)
    check_adapter_head(base.model, cfg, stored, path)
    return [k for k in base.info.get("random_weights") or () if k not in stored]


def load_adapted(base: LoadedModel, adapted: str | Path, *, allow_pickle: bool = False,
                 trust_remote_code: bool = False, revision: str | None = None) -> AdaptedWeights:
    """Load the adapted side of a blend as a state dict in the base model's key space.

    Parameters
    ----------
    base : LoadedModel
        The loaded base model (unchanged by this call: adapters are applied to a deep copy).
    adapted : str or Path
        A full checkpoint folder (or hub id) or a PEFT adapter folder.
    allow_pickle, trust_remote_code, revision
        As in :func:`harness.models.load.load_model`.

    Raises
    ------
    ModelError
        If the checkpoint cannot be loaded, or adapter tensors do not all apply to the base.
    """
    p = Path(adapted).expanduser()
    if p.is_dir() and is_adapter_dir(p):
        return _load_peft(base, p.resolve())
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[base.dtype]
    other = load_model(adapted, dtype=dtype, device="cpu", allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code, revision=revision)
    sd = _state_dict_cpu(other.model)
    out = AdaptedWeights(state_dict=sd, kind="full", fingerprint=other.fingerprint, id2label=other.id2label,
                         source=str(adapted), tokenizer=other.tokenizer,
                         info={"random_weights": other.info.get("random_weights", [])})
    del other
    return out
