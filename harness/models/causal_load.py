"""Load a causal language model (``AutoModelForCausalLM``) for language-model suites, or refuse clearly.

The same rules as :func:`harness.models.load.load_model` (safetensors only unless ``allow_pickle``;
``trust_remote_code`` off by default; the weight files checked and fingerprinted are the ones loaded), plus:

* a sequence-classification checkpoint (``architectures: [...ForSequenceClassification]``) or a config whose
  ``model_type`` has no causal-LM class is refused (a language-model suite needs a language-model head);
* any weight transformers would initialise at random (a missing key, or one of another shape) is refused; a
  tied output embedding (``tie_word_embeddings``) is not missing;
* a tokenizer without a pad token pads with EOS (:func:`harness.models.causal.ensure_pad_token`, logged).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from harness.errors import ModelError, format_error
from harness.models.causal import ensure_pad_token
from harness.models.hfconfig import read_config
from harness.models.load import (DTYPES, LoadedModel, checked_checkpoint, load_tokenizer, model_fingerprint,
                                 pick_device)
from harness.models.placement import DEVICE_MAPS, check_placement, input_device

__all__ = ["load_causal_lm", "check_causal_config"]

logger = logging.getLogger(__name__)


def check_causal_config(config, where: str) -> None:
    """Refuse configs that do not describe a causal LM.

    Raises
    ------
    ModelError
        If the checkpoint's architectures are only classifiers, or its ``model_type`` has no causal-LM class.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        raise ModelError(format_error("this checkpoint is not a causal language model", where=where,
                                      expected="a *ForCausalLM / *LMHeadModel checkpoint for a language-model suite",
                                      got=f"architectures {archs}",
                                      fix="use the language model this classifier was built from, or score it "
                                          "with a classification suite"))
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(format_error("the model type has no causal-LM class in transformers", where=where,
                                      got=config.model_type, fix="use a decoder-only model (llama, gpt2, qwen2...)"))


def load_causal_lm(name: str | Path, *, dtype: str = "fp32", device: str | None = None,
                   allow_pickle: bool = False, trust_remote_code: bool = False, revision: str | None = None,
                   tokenizer_path: str | Path | None = None, device_map: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer for scoring (eval mode, on the chosen device).

    Parameters are those of :func:`harness.models.load.load_model`; ``id2label`` of the result is empty.
    ``device_map`` (one of :data:`harness.models.placement.DEVICE_MAPS`, default ``None``) splits the model over
    the visible GPUs with accelerate instead of moving it to ``device``; ``device`` of the result is then that of
    the input embeddings and ``info["device_map"]`` records the placement (:func:`check_placement`).

    Raises
    ------
    ModelError
        Missing folder, adapter folder, no or unsafe weights, not a causal LM, weights that would be initialised
        at random, unusable tokenizer, a device map that offloads weights, an unknown device map.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if dtype not in DTYPES:
        raise ModelError(format_error("unknown dtype", where="--dtype", expected=", ".join(DTYPES), got=dtype))
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ModelError(format_error("unknown device map", where="--device-map", expected=", ".join(DEVICE_MAPS),
                                      got=device_map))
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ModelError(format_error("--device-map needs the accelerate package", where="--device-map",
                                      got="accelerate is not installed", fix="pip install accelerate"))
    path, files = checked_checkpoint(name, revision, allow_pickle)
    config = read_config(path, trust_remote_code)
    check_causal_config(config, str(path))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # missing weights are reported below, as errors
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
            use_safetensors=any(f.suffix == ".safetensors" for f in files), output_loading_info=True,
            **({"device_map": device_map} if device_map is not None else {}))
    except Exception as e:
        raise ModelError(format_error("cannot load the causal-LM weights", where=str(path), got=str(e)[:400],
                                      fix="check that the folder is a complete checkpoint (config.json + "
                                          "weights)")) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        raise ModelError(format_error("the checkpoint lacks weights of the language model, which transformers "
                                      "would initialise at random", where=str(path),
                                      expected="every tensor of the architecture in config.json",
                                      got=f"{len(missing)} missing (e.g. {missing[:3]}), {len(mismatched)} of "
                                          f"another shape (e.g. {mismatched[:2]})",
                                      fix="check that config.json and the weights belong to the same model"))
    extra = {}
    if device_map is not None:  # accelerate placed the layers; nothing is moved
        extra["device_map"] = check_placement(model, str(path))
        dev = input_device(model)
    else:
        dev = pick_device(device)
        model = model.to(dev)
    tok = load_tokenizer(Path(tokenizer_path) if tokenizer_path else path, trust_remote_code)
    ensure_pad_token(tok)
    return LoadedModel(model=model.eval(), tokenizer=tok, source=str(name), path=path,
                       fingerprint=model_fingerprint(path, allow_pickle), id2label={}, device=dev,
                       dtype=DTYPES[dtype], info={"n_parameters": sum(p.numel() for p in model.parameters()), **extra})
