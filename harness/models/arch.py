"""Which model class a checkpoint is, for writing blends: its architecture from ``config.json``, an empty
(meta-device) instance to read tied weights and embedding names from, and loading a base of any architecture
(causal LM, sequence classifier, encoder-decoder) for the in-memory adapter blend.

Sequence classifiers and the harness's own model classes go through :func:`harness.models.load.load_model`
unchanged; other architectures load with their own transformers class (safetensors only, no remote code unless
asked).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error

__all__ = ["model_class", "meta_model", "load_any"]

log = logging.getLogger(__name__)


def model_class(config: Any) -> type | None:
    """The transformers class named by ``config.architectures`` (``None`` when absent or not in transformers)."""
    import transformers

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, str(name), None)
        if isinstance(cls, type):
            return cls
    return None


def meta_model(config: Any, trust_remote_code: bool = False) -> torch.nn.Module:
    """An instance of the checkpoint's architecture on the meta device (no memory, no weights): its parameter
    names, tied groups and embedding modules are those of the real model.

    Raises
    ------
    ModelError
        If the architecture cannot be built from the config.
    """
    from transformers import AutoModelForSequenceClassification

    from harness.models.pooling import register

    register()
    cls = model_class(config)
    try:
        with torch.device("meta"):
            if cls is not None:
                return cls(config)
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(format_error("cannot build the model architecture from config.json",
                                      where=str(getattr(config, "_name_or_path", "config")), got=str(e)[:300],
                                      fix="check config.json (architectures, model_type)")) from e


def load_any(path: str | Path, *, dtype: str = "fp32", allow_pickle: bool = False, trust_remote_code: bool = False):
    """Load a checkpoint of any architecture on CPU as a :class:`harness.models.load.LoadedModel`.

    Sequence classifiers (and unknown architectures) use :func:`harness.models.load.load_model`; other
    transformers architectures (``LlamaForCausalLM``, ``BartForConditionalGeneration``, ...) load with their own
    class, safetensors first.

    Raises
    ------
    ModelError
        As :func:`harness.models.load.load_model`, or when weights would be initialised at random.
    """
    from transformers import AutoConfig

    from harness.models.load import (DTYPES, LoadedModel, check_safetensors, load_model, load_tokenizer,
                                     model_fingerprint, resolve_model_dir, weight_files)

    p = resolve_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except (ValueError, OSError):
        config = None
    cls = model_class(config) if config is not None else None
    if cls is None or cls.__name__.endswith("ForSequenceClassification"):
        return load_model(path, dtype=dtype, device="cpu", allow_pickle=allow_pickle,
                          trust_remote_code=trust_remote_code)
    files = weight_files(p, allow_pickle=allow_pickle)
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    try:
        model, info = cls.from_pretrained(str(p), dtype=DTYPES[dtype], output_loading_info=True,
                                          use_safetensors=any(f.suffix == ".safetensors" for f in files))
    except Exception as e:
        raise ModelError(format_error("cannot load the model weights", where=str(p), got=str(e)[:400],
                                      fix="check that the folder is a complete checkpoint")) from e
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(format_error("checkpoint does not hold the model's weights (transformers would "
                                      "initialise them at random)", where=str(p), got=f"missing {missing[:3]}",
                                      fix="check that config.json and the weights belong to the same model"))
    return LoadedModel(model=model.eval(), tokenizer=load_tokenizer(p, trust_remote_code), source=str(path), path=p,
                       fingerprint=model_fingerprint(p, allow_pickle), id2label={}, device=torch.device("cpu"),
                       dtype=DTYPES[dtype])
