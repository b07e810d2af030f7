"""Stage 4c: turn an adapted checkpoint of any common kind into a state dict aligned with the base model.

* A full fine-tuned checkpoint (HF folder, sharded or not): loaded like any model; its state dict is used.
* A PEFT adapter folder (it holds ``adapter_config.json``): checked against the base it records
  (:func:`check_adapter_base`), applied to a *copy* of the base model (the base is never changed), checked strictly
  (every adapter tensor must land on a module), then merged. With ``lora_scale=True`` a LoRA/rsLoRA adapter is not
  merged: :attr:`AdaptedWeights.lora` holds its factors for the LoRA-scale path of
  :class:`harness.models.blend.BlendEngine` (:mod:`harness.models.lora_scale`) and ``state_dict`` only the other
  tensors it trained. For plain LoRA the
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
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from harness.errors import ModelError, format_error
from harness.models.causal_load import load_causal_lm
from harness.models.reft import check_adapter_fits, model_dims
from harness.models.reft_io import adapted_fingerprint, load_reft, reft_format
from harness.models.sanity import adapter_stored_keys, check_adapter_head
from harness.models.load import (LoadedModel, check_safetensors, is_adapter_dir, load_model, model_fingerprint,
                                 weight_files)

__all__ = ["AdaptedWeights", "load_adapted", "load_reft_adapted", "check_adapter_base", "adapter_config",
           "adapted_model_fingerprint"]

log = logging.getLogger(__name__)


@dataclass
class AdaptedWeights:
    """The adapted model as a state dict on CPU in the base model's key space and storage dtype.

    ``kind`` is ``full`` or the PEFT type in lower case (``lora``, ``dora``, ...); ``id2label`` the adapted head's
    labels; ``fingerprint`` identifies the adapted model: the sha256 of its files for a full checkpoint, and for an
    adapter (which means nothing without its base) a sha256 of (base fingerprint, adapter files' sha256), the
    latter also kept as ``info["adapter_fingerprint"]``. ``lora`` is set on the LoRA-scale path (then
    ``state_dict`` holds only the tensors other than the LoRA factors that the adapter trained; every other tensor
    is the base's). ``reft`` is set for a ReFT adaptation (:class:`harness.models.reft.ReftAdapter`, kind
    ``reft``): no weight differs from the base, ``state_dict`` is empty, and the blend is the intervention
    strength (:class:`harness.models.reft.InterventionEngine`).
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    fingerprint: str
    id2label: dict[int, str]
    source: str
    tokenizer: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    lora: Any = None
    reft: Any = None


def _state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def adapter_config(path: Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter folder.

    Raises
    ------
    ModelError
        If it cannot be read, is not JSON, or is not a JSON object.
    """
    try:
        cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(format_error("adapter_config.json cannot be read as JSON", where=str(path),
                                      got=str(e)[:200], fix="re-save the adapter with save_pretrained")) from e
    if not isinstance(cfg, dict):
        raise ModelError(format_error("adapter_config.json is not a JSON object", where=str(path),
                                      got=type(cfg).__name__, fix="re-save the adapter with save_pretrained"))
    return cfg


def _check_all_applied(peft_model: Any, path: Path) -> None:
    """Every tensor in the adapter file must correspond to a tensor peft expects (strict load).

    The input and output embedding matrices are accepted but not required: peft saves them when an adapter
    resizes the vocabulary or targets an embedding layer. peft's own default (``save_embedding_layers="auto"``)
    decides that by fetching the base model's config.json from the Hugging Face Hub when the adapter's recorded
    base is no local folder, a network call (and a warning offline) that loading a local adapter must not make."""
    from peft.utils import get_peft_model_state_dict  # heavy: only for adapters

    files = weight_files(path, allow_pickle=False)
    stored: set[str] = set()
    for f in files:
        check_safetensors(f)
        with safe_open(str(f), framework="pt") as fh:
            stored |= set(fh.keys())
    expected = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
    optional = set(get_peft_model_state_dict(peft_model, save_embedding_layers=True)) - expected

    def norm(k: str) -> str:
        return k.replace(".default", "")

    unmatched = sorted({norm(k) for k in stored} - {norm(k) for k in expected | optional})
    missing = sorted({norm(k) for k in expected} - {norm(k) for k in stored})
    if unmatched:
        raise ModelError(format_error("adapter tensors match no module of the base model", where=str(path),
                                      got=f"{len(unmatched)} unmatched, e.g. {unmatched[:3]}",
                                      fix="check that --base is the model this adapter was trained on"))
    if missing:
        raise ModelError(format_error("adapter file lacks tensors its config promises", where=str(path),
                                      got=f"{len(missing)} missing, e.g. {missing[:3]}",
                                      fix="re-save the adapter with save_pretrained"))


@contextmanager
def quiet_peft_deprecations():
    """Silence the one FutureWarning that peft 0.21 triggers on every adapter it builds or loads.

    peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning printed
    on stderr at every ``PeftModel.from_pretrained`` / ``get_peft_model``: nothing a harness user can act on
    (issue 17, item 13). Only that message is ignored; every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _same_name(recorded: str, names: set[str]) -> bool:
    """``recorded`` names the base: equal to a known name, or the same last path component(s) (a hub id
    ``org/name`` and a local folder ``.../name``)."""
    tail = recorded.rstrip("/").split("/")[-1]
    return recorded in names or any(n and n.rstrip("/").split("/")[-1] == tail for n in names)


def check_adapter_base(cfg: dict[str, Any], base: LoadedModel, path: Path) -> None:
    """Report an adapter applied to another base than the one it records.

    Checked, in order: ``harness_base_fingerprint`` (written by the harness) must equal the base's fingerprint;
    ``base_model_name_or_path`` naming an existing folder must be the base folder or a copy with the same
    fingerprint; a name that is not a local folder (a hub id, a path on another machine) must match the base's
    source, folder name or ``_name_or_path``, else a warning is logged (it cannot be verified here).

    Raises
    ------
    ModelError
        When the recorded base is verifiably another model (exit 2). The fix says how to proceed: pass the
        recorded base, or, for a true copy of it, record the base you pass in ``adapter_config.json``.
    """
    def mismatch(recorded: str, why: str) -> ModelError:
        return ModelError(format_error(
            "the adapter was trained on another base model: its shapes may fit, but the blend would be meaningless",
            where=str(path / "adapter_config.json"), expected=f"base {recorded}", got=f"--base {base.path} ({why})",
            fix=f"pass --base {recorded}; if the two are the same model (a copy, or a re-save of it), set "
                f"base_model_name_or_path in adapter_config.json to {base.path}"))

    fp = cfg.get("harness_base_fingerprint")
    if fp and fp != base.fingerprint:
        raise mismatch(f"with fingerprint {fp[:12]}", f"fingerprint {base.fingerprint[:12]}")
    recorded = cfg.get("base_model_name_or_path")
    if not recorded or fp:
        return
    rp = Path(str(recorded)).expanduser()
    if rp.is_dir():
        if rp.resolve() == Path(base.path).resolve():
            return
        try:
            rfp = model_fingerprint(rp)
        except ModelError:
            rfp = None
        if rfp is not None and rfp != base.fingerprint:
            raise mismatch(str(recorded), f"fingerprint {base.fingerprint[:12]}, the recorded folder's is {rfp[:12]}")
        if rfp is not None:
            return
    names = {base.source, str(base.path), Path(base.path).name,
             str(getattr(getattr(base.model, "config", None), "_name_or_path", "") or "")}
    if not _same_name(str(recorded), names):
        log.warning("adapter %s records base %r, which is not --base %s and cannot be checked here; make sure it "
                    "is the same model", path, recorded, base.path)


def _lora_scale(base: LoadedModel, path: Path, cfg: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    """The LoRA-scale path: factors plus the other trained tensors (no merged copy)."""
    from harness.models.lora_scale import load_lora_delta

    base_sd = dict(base.model.state_dict())
    delta, others = load_lora_delta(path, cfg, base_sd)
    return others, delta


def _merged(base: LoadedModel, path: Path) -> dict[str, torch.Tensor]:
    """The merged path: the adapter applied to a copy of the base and merged (one full state dict)."""
    try:
        from peft import PeftModel  # heavy: only for adapters
    except ImportError as e:  # pragma: no cover - peft is a dependency
        raise ModelError("loading an adapter needs the 'peft' package: pip install peft") from e
    work = copy.deepcopy(base.model)  # the base model is never touched
    try:
        with quiet_peft_deprecations():
            peft_model = PeftModel.from_pretrained(work, str(path), is_trainable=False)
    except Exception as e:
        raise ModelError(format_error("cannot apply the adapter to the base model", where=str(path),
                                      got=str(e)[:400], fix="check that --base is the model the adapter was "
                                      "trained on")) from e
    _check_all_applied(peft_model, path)
    merged = peft_model.merge_and_unload()
    sd = _state_dict_cpu(merged)
    del peft_model, merged, work
    return sd


def _load_peft(base: LoadedModel, path: Path, lora_scale: bool) -> AdaptedWeights:
    from harness.models.lora_scale import lora_scale_blocker

    cfg = adapter_config(path)
    files = weight_files(path, allow_pickle=False)  # refuses pickle-only adapters
    check_adapter_base(cfg, base, path)
    random_left = _check_head_tensors(base, cfg, files, path)
    blocker = lora_scale_blocker(cfg)
    delta = None
    if lora_scale and blocker is None:
        sd, delta = _lora_scale(base, path, cfg)
    else:
        if lora_scale:
            log.info("adapter %s takes the merged path: %s", path, blocker)
        sd = _merged(base, path)
    kind = str(cfg.get("peft_type", "adapter")).lower()
    if cfg.get("use_dora"):
        kind = "dora"
    adapter_fp = model_fingerprint(path)
    fingerprint = adapted_model_fingerprint(base.fingerprint, adapter_fp)
    return AdaptedWeights(state_dict=sd, kind=kind, fingerprint=fingerprint, id2label=base.id2label,
                          source=str(path), tokenizer=base.tokenizer, lora=delta,
                          info={"adapter_fingerprint": adapter_fp, "peft_type": cfg.get("peft_type"), "r": cfg.get("r"),
                                "lora_alpha": cfg.get("lora_alpha"), "use_rslora": cfg.get("use_rslora"),
                                "use_dora": cfg.get("use_dora"), "modules_to_save": cfg.get("modules_to_save"),
                                "base_model_name_or_path": cfg.get("base_model_name_or_path"),
                                "blend_path": "lora-scale" if delta is not None else "merged",
                                "random_weights": random_left})


def adapted_model_fingerprint(base_fp: str, adapter_fp: str) -> str:
    """The fingerprint of base + adapter (sha256 hex): the same adapter on another base must not share
    results-store entries."""
    return hashlib.sha256(f"peft|{base_fp}|{adapter_fp}".encode()).hexdigest()


def _is_causal_lm(model) -> bool:
    """Whether a loaded model is a causal language model (its class is ``...ForCausalLM``/``...LMHeadModel``)."""
    name = type(model).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel")


def _check_head_tensors(base: LoadedModel, cfg: dict[str, Any], files: list[Path], path: Path) -> list[str]:
    """Issue 17: refuse an adapter whose file lacks the head its config lists (blamed on the adapter), and
    return the base's random head tensors the adapter does not replace (:mod:`harness.models.checks`)."""
    stored = adapter_stored_keys(files)
    check_adapter_head(base.model, cfg, stored, path)
    return [k for k in base.info.get("random_weights") or () if k not in stored]


def load_reft_adapted(base: LoadedModel, path: Path, *, allow_pickle: bool = False,
                      positions: str | None = None) -> AdaptedWeights:
    """A ReFT folder as the adapted side: the interventions (``reft``), checked to fit the base (hidden size,
    layer count, layer indices) and R's orthogonality (a warning, :func:`harness.models.reft_io.check_orthogonality`);
    a recorded base fingerprint that is not the base's is refused.

    Raises
    ------
    ModelError
        pickle without ``allow_pickle``, a pyreft folder without ``positions``, malformed files, an adaptation made
        for another model.
    """
    adapter = load_reft(path, positions=positions, allow_pickle=allow_pickle)
    hidden, n_layers = model_dims(base.model)
    check_adapter_fits(adapter, hidden, n_layers)
    recorded = (adapter.info.get("base_model") or {}).get("fingerprint")
    if recorded and recorded != base.fingerprint:
        raise ModelError(format_error("the ReFT adaptation was trained on another base model", where=str(path),
                                      expected=f"base with fingerprint {recorded[:12]}",
                                      got=f"--base {base.path} (fingerprint {base.fingerprint[:12]})",
                                      fix="pass the base the interventions were trained on"))
    info = {"adapter_fingerprint": adapter.info["fingerprint"], "reft_format": adapter.info.get("format"),
            "method": adapter.kind, "description": adapter.describe(), "rank": adapter.rank,
            "n_params": adapter.n_params, "orthogonality_deviation": adapter.info.get("orthogonality_deviation"),
            "blend_path": "intervention"}
    return AdaptedWeights(state_dict={}, kind="reft", fingerprint=adapted_fingerprint(base.fingerprint, adapter),
                          id2label=base.id2label, source=str(path), tokenizer=base.tokenizer, info=info,
                          reft=adapter)


def load_adapted(base: LoadedModel, adapted: str | Path, *, allow_pickle: bool = False,
                 trust_remote_code: bool = False, revision: str | None = None,
                 lora_scale: bool = False, reft_positions: str | None = None) -> AdaptedWeights:
    """Load the adapted side of a blend as a state dict in the base model's key space.

    Parameters
    ----------
    base : LoadedModel
        The loaded base model (unchanged by this call: adapters are applied to a deep copy, or not at all on the
        LoRA-scale path).
    adapted : str or Path
        A full checkpoint folder (or hub id), a PEFT adapter folder, or a ReFT folder (harness format or a
        pyreft 0.1.0 save, :func:`harness.models.reft_io.reft_format`; see :func:`load_reft_adapted`).
    allow_pickle, trust_remote_code, revision
        As in :func:`harness.models.load.load_model` (``allow_pickle`` also admits a pyreft folder's pickled
        ``intkey_*.bin`` files, read with ``weights_only=True``).
    lora_scale : bool, default=False
        For a LoRA/rsLoRA adapter, return its factors in ``lora`` instead of a merged state dict (pass them to
        ``BlendEngine(..., lora=adapted.lora)``); other adapters are merged as before.
    reft_positions : str, default=None
        pyreft folders only (required there, pyreft does not save them): the token positions the interventions
        were trained at (``"l1"``, ``"f1+l1"``).

    Raises
    ------
    ModelError
        If the checkpoint cannot be loaded, adapter tensors do not all apply to the base, or the adapter records
        another base (:func:`check_adapter_base`), or a ReFT adaptation does not fit the base.
    """
    p = Path(adapted).expanduser()
    if p.is_dir() and is_adapter_dir(p):
        return _load_peft(base, p.resolve(), lora_scale)
    if reft_format(p) is not None:
        return load_reft_adapted(base, p.resolve(), allow_pickle=allow_pickle, positions=reft_positions)
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[base.dtype]
    # a causal-LM base needs a causal-LM fine-tune (the loader refuses any weight it would leave random)
    loader = load_causal_lm if (not base.id2label and _is_causal_lm(base.model)) else load_model
    other = loader(adapted, dtype=dtype, device="cpu", allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code, revision=revision)
    sd = _state_dict_cpu(other.model)
    out = AdaptedWeights(state_dict=sd, kind="full", fingerprint=other.fingerprint, id2label=other.id2label,
                         source=str(adapted), tokenizer=other.tokenizer,
                         info={"random_weights": other.info.get("random_weights", [])})
    del other
    return out
