"""Sanity checks of a loaded model for scoring (no random weights, files present, positions, padding, casts).

* **Files**: a model folder without ``config.json``, an adapter folder without ``adapter_config.json``
  (:func:`check_model_files`).
* **Random weights**: transformers initialises at random every tensor of the architecture that a checkpoint
  lacks and only logs it. The harness reads transformers' own loading info (``output_loading_info=True`` ->
  ``missing_keys``, recorded by :mod:`harness.models.load` as ``LoadedModel.info["random_weights"]``) and refuses
  to evaluate any such tensor, naming the tensors and the real cause: a causal LM in a classification suite, an
  adapter that carries no head, an adapter whose file lacks the head its config lists, a base without a head
  under ``--head shared`` (:func:`require_trained`, :func:`check_blend_heads`, :func:`check_adapter_head`).
* **Padding**: GPT-2-style checkpoints have no pad token; the EOS id pads (:func:`ensure_pad_token`).
* **Positions**: the longest input a model can take (:func:`position_limit`).
* **Casts**: weights that overflow only when cast to fp16 are blamed on the cast, not the checkpoint
  (:func:`check_cast_finite`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch

from harness.errors import ModelError, format_error

__all__ = ["check_model_files", "is_causal_lm", "require_trained", "check_blend_heads", "check_adapter_head",
           "adapter_stored_keys", "ensure_pad_token", "position_limit", "check_cast_finite"]

log = logging.getLogger(__name__)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.safetensors.index.json")
_PEFT_PREFIX = "base_model.model."
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# tokens a learned position table offsets by (RoBERTa-family models start positions at padding_idx + 1)
_POSITION_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "camembert", "longformer", "xmod",
                                    "roberta-prelayernorm"})


def check_model_files(path: Path) -> None:
    """Name the file a checkpoint folder lacks: ``adapter_config.json`` beside adapter weights, or ``config.json``.

    Raises
    ------
    ModelError
        If ``path`` holds adapter weights but no ``adapter_config.json``, or no ``config.json``.
    """
    names = {p.name for p in path.iterdir()}
    if any(n in names for n in _ADAPTER_WEIGHTS) and "adapter_config.json" not in names:
        raise ModelError(format_error("adapter folder has adapter weights but no adapter_config.json",
                                      where=str(path), expected="adapter_config.json beside adapter_model.safetensors",
                                      got=sorted(names)[:10],
                                      fix="copy adapter_config.json saved with the adapter (save_pretrained writes "
                                          "both files) into the folder"))
    if "config.json" not in names:
        raise ModelError(format_error("model folder has no config.json", where=str(path),
                                      expected="config.json (the architecture) beside the weights",
                                      got=sorted(names)[:10],
                                      fix="copy config.json saved with the model (save_pretrained writes it)"))


def is_causal_lm(config: Any) -> bool:
    """Whether a config's saved architectures are language-model heads (``*ForCausalLM``, ``*LMHeadModel``)."""
    archs = getattr(config, "architectures", None) or []
    return bool(archs) and all(str(a).endswith(_CAUSAL_SUFFIXES) for a in archs)


def _causal_fix() -> str:
    return ("evaluate a sequence classifier fine-tuned from it (e.g. a *ForSequenceClassification checkpoint or a "
            "LoRA adapter with task_type SEQ_CLS and its head); to score the language model itself use a "
            "language-model suite (task: multiple_choice) instead of a classification suite")


def require_trained(loaded: Any, *, where: str) -> None:
    """Refuse to evaluate a loaded model with any tensor transformers initialised at random.

    ``loaded`` is a :class:`~harness.models.load.LoadedModel` whose ``info["random_weights"]`` lists them.

    Raises
    ------
    ModelError
        Naming the tensors; a causal LM gets its own message (classification suites need a sequence classifier).
    """
    missing = list(loaded.info.get("random_weights") or ())
    if not missing:
        return
    if is_causal_lm(loaded.model.config):
        raise ModelError(format_error(
            f"this is a causal language model ({', '.join(loaded.model.config.architectures)}), not a sequence "
            f"classifier: a classification suite would score it with a classification head {missing[:4]} that "
            "transformers initialises at random", where=where, fix=_causal_fix()))
    raise ModelError(format_error(
        "the checkpoint has no trained classification head: transformers would initialise these tensors at "
        "random, so every prediction would be noise (and differ between runs)", where=where,
        got=f"missing {missing[:6]}",
        fix="evaluate a checkpoint with a trained head; a bare encoder is only usable as the base of "
            "`harness sweep --head adapted` with an adapted model that carries its own head"))


def adapter_stored_keys(files: Iterable[Path]) -> set[str]:
    """Tensor names stored in adapter safetensors files, without PEFT's ``base_model.model.`` prefix."""
    from safetensors import safe_open

    out: set[str] = set()
    for f in files:
        if f.suffix != ".safetensors":
            continue
        with safe_open(str(f), framework="pt") as fh:
            out |= {k.removeprefix(_PEFT_PREFIX) for k in fh.keys()}
    return out


def check_adapter_head(model: torch.nn.Module, cfg: dict[str, Any], stored: set[str], path: Path) -> None:
    """An adapter whose ``adapter_config.json`` lists ``modules_to_save`` (its trained head) must store their
    tensors; else PEFT fails with a bare KeyError (or keeps the base's head) and the message would blame the base.

    Raises
    ------
    ModelError
        Naming the module, the tensors the model expects, and that the adapter file lacks them.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("modules_to_save"), list):
        return  # a malformed config is peft's to refuse (the caller reports it)
    modules = {m for m in cfg["modules_to_save"] if isinstance(m, str)}
    names = [n for n, _ in model.named_modules() if n]
    if not _all_on_modules(stored, set(names)):
        return  # tensors under foreign names (a wrapper prefix, another base): the strict apply check names them
    for m in sorted(modules):
        present = [n for n in names if n == m or n.endswith("." + m)]
        for n in present:
            want = sorted(f"{n}.{k}" for k, _ in model.get_submodule(n).named_parameters())
            if want and not any(k.startswith(n + ".") for k in stored):
                raise ModelError(format_error(
                    f"the adapter is broken: its adapter_config.json lists {m!r} in modules_to_save (the head it "
                    f"trained), but its weight file holds no tensor of it, so the head would not be the trained one",
                    where=str(path), expected=f"tensors {want} in the adapter file",
                    got=f"{len(stored)} tensors, none under {n!r}",
                    fix="re-save the adapter with save_pretrained (it writes the modules_to_save tensors); the base "
                        "model is not the problem"))


def _all_on_modules(keys: set[str], modules: set[str]) -> bool:
    """Whether every key lies under some module of the model (its dotted prefixes include a module name)."""
    def on_module(k: str) -> bool:
        parts = k.split(".")
        return any(".".join(parts[:i]) in modules for i in range(1, len(parts)))

    return all(on_module(k) for k in keys)


def check_blend_heads(base: Any, adapted: Any, head: str, *, base_src: str, adapted_src: str) -> bool:
    """Refuse blends that would evaluate a randomly initialised head; tell whether the base's own head is usable.

    ``base`` is the loaded base (``info["random_weights"]``), ``adapted`` the
    :class:`~harness.models.adapters.AdaptedWeights` (``info["random_weights"]``: the tensors it leaves random).

    Returns
    -------
    bool
        True when the base's own head is trained (so it may be evaluated as the ``base`` point).

    Raises
    ------
    ModelError
        When the adapted model leaves tensors random (blamed on the adapted model; a causal-LM base is named as
        such), or when ``head="shared"`` would blend the base's random head.
    """
    base_random = list(base.info.get("random_weights") or ())
    adapted_random = list(adapted.info.get("random_weights") or ())
    if adapted_random:
        kind = "adapter" if adapted.kind != "full" else "adapted checkpoint"
        cause = (f"the base is a causal language model ({', '.join(base.model.config.architectures)}) with no "
                 "classification head, and the adapter does not carry one" if is_causal_lm(base.model.config)
                 else f"the base has no trained head and the {kind} does not carry one")
        raise ModelError(format_error(
            f"the adapted model's classification head would be initialised at random: {cause}", where=adapted_src,
            got=f"random tensors {adapted_random[:6]}",
            fix=(_causal_fix() if is_causal_lm(base.model.config) else
                 "train the adapter with its head saved (peft: task_type='SEQ_CLS' or modules_to_save=['classifier']"
                 "), or pass a base whose head is trained")))
    if base_random and head == "shared":
        raise ModelError(format_error(
            "the base has no trained classification head (transformers would initialise it at random), and "
            "--head shared blends the base's head into every point", where=base_src,
            got=f"random tensors {base_random[:6]}",
            fix="pass --head adapted to keep the adapted model's trained head and blend only the backbone"))
    return not base_random


def ensure_pad_token(model: torch.nn.Module, tokenizer: Any, path: Path) -> str | None:
    """Give a checkpoint without a pad token (GPT-2 style) the EOS id as padding, in the tokenizer and in
    ``model.config.pad_token_id`` (last-token pooling finds the last real token through it: right padding with
    the attention mask keeps the result exact). Returns a note when something was set.

    Raises
    ------
    ModelError
        If there is neither a pad nor an EOS token.
    """
    cfg = model.config
    if tokenizer.pad_token_id is None:
        eos = tokenizer.eos_token
        if eos is None:
            raise ModelError(format_error("the tokenizer has no pad token and no EOS token to pad with",
                                          where=str(path), fix="set one: tokenizer.pad_token = '<token>' and "
                                          "model.config.pad_token_id = its id, then save_pretrained"))
        tokenizer.pad_token = eos
        note = (f"{path.name}: the tokenizer has no pad token; padding with the EOS token {eos!r} "
                f"(id {tokenizer.pad_token_id}), as usual for GPT-2-style models")
    elif getattr(cfg, "pad_token_id", None) is None:
        note = f"{path.name}: config.json has no pad_token_id; using the tokenizer's ({tokenizer.pad_token_id})"
    else:
        return None
    cfg.pad_token_id = int(tokenizer.pad_token_id)
    log.warning("%s", note)
    return note


def position_limit(model: torch.nn.Module) -> int | None:
    """The longest input (tokens) the model's position table holds, or None when it has no fixed table."""
    cfg = model.config
    n = getattr(cfg, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(cfg, "model_type", None) in _POSITION_OFFSET_TYPES:
        n -= int(getattr(cfg, "pad_token_id", 1) or 1) + 1
    return n


def check_cast_finite(model: torch.nn.Module, dtype: torch.dtype, files: list[Path], path: Path) -> None:
    """Refuse non-finite weights after loading, blaming the cast (``--dtype fp16`` overflow) when the stored
    values are finite and the checkpoint otherwise.

    Raises
    ------
    ModelError
        Naming the tensors, their largest stored magnitude, and the dtype to use.
    """
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if not bad:
        return
    stored = _stored_max_abs(files, bad[:8])
    finite_in_file = bool(stored) and all(v is not None and v < float("inf") for v in stored.values())
    if finite_in_file and dtype != torch.float32:
        raise ModelError(format_error(
            f"weights overflow when cast to {str(dtype).removeprefix('torch.')}: the checkpoint's values are finite "
            f"but exceed the range of that dtype (fp16 holds at most 65504), so the cast, not the checkpoint, "
            "turns them into inf", where=str(path),
            got=f"{len(bad)} tensor(s), e.g. " + ", ".join(f"{k} (max |w| = {v:.3g})" for k, v in stored.items()),
            fix="use --dtype bf16 (same range as fp32) or --dtype fp32"))
    raise ModelError(format_error("the checkpoint holds NaN or infinite weights", where=str(path),
                                  got=f"{len(bad)} tensor(s), e.g. {bad[:4]}",
                                  fix="fix or re-export the checkpoint; non-finite weights give NaN predictions"))


def _stored_max_abs(files: list[Path], names: list[str]) -> dict[str, float | None]:
    """Largest |value| of each named tensor as stored in safetensors files (None when not found there)."""
    from safetensors import safe_open

    out: dict[str, float | None] = {}
    for f in files:
        if f.suffix != ".safetensors":
            continue
        with safe_open(str(f), framework="pt") as fh:
            keys = set(fh.keys())
            for n in names:
                if n in keys:
                    t = fh.get_tensor(n).float()
                    out[n] = float(t.abs().max()) if bool(torch.isfinite(t).all()) else float("inf")
    return out
