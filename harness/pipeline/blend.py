"""``blend``: write the blend at one alpha as a checkpoint with provenance.

Two full checkpoints are streamed shard by shard (:mod:`harness.models.blend_stream`: bounded memory, ties, resized
vocabularies); a PEFT adapter is applied in memory to the base, by scaling a LoRA/rsLoRA update by alpha and
merging it in place (one model plus the factors, :func:`harness.models.lora_scale.blend_in_place`), or for other
adapters (DoRA) by interpolating the merged weights. Both paths run the checks of
:mod:`harness.models.checks`, the same as ``sweep``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness.errors import BlendError, HarnessError, format_error
from harness.pipeline.common import RunOptions
from harness.records import canonical_alpha
from harness.rundir import check_out_dir, clean_stale_siblings, swap_dir, tmp_prefix

__all__ = ["write_blend", "blend_checkpoint", "BlendOutcome"]

log = logging.getLogger(__name__)


@dataclass
class BlendOutcome:
    """What ``blend`` wrote: the folder, the path taken (``stream``, ``lora-scale`` or ``merged``), where the
    tokenizer came from, and notes for the user (tied/untied heads, resized vocabulary)."""

    path: Path
    blend_path: str
    tokenizer_from: str = "base"
    notes: list[str] = field(default_factory=list)


def _provenance(base, adapted, alpha: float, head: str, base_fp: str, adapted_fp: str, kind: str, path: str,
                notes: list[str]) -> dict:
    return {"base": str(base), "adapted": str(adapted), "alpha": alpha, "head": head, "base_fingerprint": base_fp,
            "adapted_fingerprint": adapted_fp, "adapted_kind": kind, "blend_path": path, "notes": list(notes),
            "harness_version": harness.__version__}


def _labels(config, id2label: dict, head: str, alpha: float) -> None:
    if head == "adapted":
        config.num_labels = len(id2label)
    if (head == "adapted" or alpha == 1.0) and id2label:
        config.id2label = dict(id2label)
        config.label2id = {v: k for k, v in id2label.items()}


def _stream(base, adapted, alpha: float, head: str, options: RunOptions, tmp: Path,
            max_shard_bytes: int | None) -> BlendOutcome:
    from harness.models.blend_stream import check_tokenizer_extends, open_checkpoint, plan_blend, stream_blend
    from harness.models.load import DTYPES, load_tokenizer, model_fingerprint

    out_dtype = DTYPES[options.dtype]
    b = open_checkpoint(base, options.trust_remote_code)
    a = open_checkpoint(adapted, options.trust_remote_code)
    plan = plan_blend(b, a, head=head, out_dtype=out_dtype, trust_remote_code=options.trust_remote_code)
    tok_b, tok_a = load_tokenizer(b.path, options.trust_remote_code), load_tokenizer(a.path, options.trust_remote_code)
    notes, tok, tok_from = list(plan.notes), tok_b, "base"
    if plan.resized or tok_a.get_vocab() != tok_b.get_vocab():
        check_tokenizer_extends(tok_b, tok_a, where=str(a.path))
        tok, tok_from = tok_a, "adapted"
        if not plan.resized:
            notes.append(f"the fine-tune's tokenizer adds {len(tok_a) - len(tok_b)} tokens to the base's; the output "
                         "uses the fine-tune's tokenizer")
    stream_blend(b, a, plan, alpha, tmp, out_dtype=out_dtype, max_shard_bytes=max_shard_bytes)
    cfg = plan.config
    a_labels = {int(k): str(v) for k, v in (getattr(a.config, "id2label", None) or {}).items()}
    _labels(cfg, a_labels, head, alpha)
    cfg.dtype = out_dtype
    cfg.harness_blend = _provenance(base, adapted, alpha, head, model_fingerprint(b.path), model_fingerprint(a.path),
                                    "full", "stream", notes)
    cfg.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    gen = (a.path if tok_from == "adapted" else b.path) / "generation_config.json"
    if gen.is_file():
        shutil.copy(gen, tmp / gen.name)
    return BlendOutcome(path=tmp, blend_path="stream", tokenizer_from=tok_from, notes=notes)


def _streamable_adapter(base, adapted, head: str) -> str | None:
    """Why a LoRA adapter blend cannot stream (``None`` when it can): a causal LM base in safetensors, a plain
    LoRA/rsLoRA adapter (:func:`harness.models.lora_stream.stream_blocker`), the shared head."""
    from harness.models.load import resolve_model_dir, weight_files
    from harness.models.adapters import adapter_config
    from harness.models.lora_stream import stream_blocker

    if head != "shared":
        return "--head adapted"
    why = stream_blocker(adapter_config(Path(adapted).expanduser()))
    if why:
        return why
    folder = resolve_model_dir(base)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        weight_files(folder, allow_pickle=False)
    except (OSError, ValueError, HarnessError):
        return "the base is not a safetensors checkpoint with a config.json"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = [str(a) for a in config.get("architectures") or ()]
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if not archs or not all(a in causal or a.endswith("ForCausalLM") for a in archs):
        return "the base is not a causal language model (classifier heads are checked in memory)"
    return None


def _stream_adapter(base, adapted, alpha: float, head: str, options: RunOptions, tmp: Path,
                    max_shard_bytes: int | None) -> BlendOutcome:
    """A LoRA adapter blended shard by shard (:class:`harness.models.lora_stream.LoraCheckpoint`): peak memory
    about one output shard, the base is never loaded whole. Falls back to :func:`_adapter` when it cannot."""
    why = _streamable_adapter(base, adapted, head)
    if why is not None:
        log.info("blend: the adapter is merged in memory (%s)", why)
        return _adapter(base, adapted, alpha, head, options, tmp, max_shard_bytes)
    from types import SimpleNamespace

    from harness.models.adapters import adapted_model_fingerprint, adapter_config, check_adapter_base
    from harness.models.blend_stream import open_checkpoint, plan_blend, stream_blend
    from harness.models.load import DTYPES, load_tokenizer, model_fingerprint
    from harness.models.lora_stream import LoraCheckpoint

    out_dtype = DTYPES[options.dtype]
    path = Path(adapted).expanduser()
    cfg = adapter_config(path)
    b = open_checkpoint(base, options.trust_remote_code)
    base_fp = model_fingerprint(b.path)
    check_adapter_base(cfg, SimpleNamespace(fingerprint=base_fp, path=b.path, source=str(base), model=None), path)
    a = LoraCheckpoint(b, path)
    plan = plan_blend(b, a, head=head, out_dtype=out_dtype, trust_remote_code=options.trust_remote_code)
    stream_blend(b, a, plan, alpha, tmp, out_dtype=out_dtype, max_shard_bytes=max_shard_bytes)
    adapter_fp = model_fingerprint(path)
    out_cfg = plan.config
    out_cfg.dtype = out_dtype
    out_cfg.harness_blend = _provenance(base, adapted, alpha, head, base_fp,
                                        adapted_model_fingerprint(base_fp, adapter_fp), "lora", "lora-stream",
                                        list(plan.notes))
    out_cfg.save_pretrained(str(tmp))
    load_tokenizer(b.path, options.trust_remote_code).save_pretrained(str(tmp))
    gen = b.path / "generation_config.json"
    if gen.is_file():
        shutil.copy(gen, tmp / gen.name)
    return BlendOutcome(path=tmp, blend_path="lora-stream", notes=list(plan.notes))


def _adapter(base, adapted, alpha: float, head: str, options: RunOptions, tmp: Path,
             max_shard_bytes: int | None) -> BlendOutcome:
    from harness.models.adapters import load_adapted
    from harness.models.arch import load_any
    from harness.models.blend import interpolate
    from harness.models.lora_scale import blend_in_place

    if head == "adapted":
        log.info("--head adapted with an adapter: the adapter's modules_to_save head is interpolated like any "
                 "weight it trained")
    live = load_any(base, dtype=options.dtype, allow_pickle=options.allow_pickle,
                    trust_remote_code=options.trust_remote_code)
    adp = load_adapted(live, adapted, lora_scale=True)
    if live.id2label:  # a classifier: no randomly initialised head is written (issue 17)
        from harness.models.sanity import check_blend_heads  # torch (as above)

        check_blend_heads(live, adp, head, base_src=str(base), adapted_src=str(adapted))
    if adp.lora is not None:
        blend_in_place(live.model, adp.lora, adp.state_dict, alpha)
    else:
        live.model.load_state_dict(interpolate(live.model.state_dict(), adp.state_dict, alpha), strict=True)
    path = "lora-scale" if adp.lora is not None else "merged"
    live.model.config.harness_blend = _provenance(base, adapted, alpha, head, live.fingerprint, adp.fingerprint,
                                                  adp.kind, path, [])
    shard = int(max_shard_bytes) if max_shard_bytes else "5GB"
    live.model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=shard)
    live.tokenizer.save_pretrained(str(tmp))
    return BlendOutcome(path=tmp, blend_path=path)


def _alpha_used(alpha: float) -> float:
    """The canonical alpha (6 decimals) written to the checkpoint; one that rounding would change is refused
    (``1e-7`` would silently be the base), float noise such as ``0.30000000000000004`` is not.

    Raises
    ------
    BlendError
        For an alpha outside [0, 1] or one with more than 6 significant decimals.
    """
    try:
        used = canonical_alpha(alpha)
    except ValueError as e:
        raise BlendError(str(e)) from e
    if abs(used - float(alpha)) > 1e-9:
        raise BlendError(format_error("alpha has more decimals than a blend keeps (6)", where="--alpha",
                                      expected="a multiple of 0.000001 in [0, 1]", got=f"{alpha!r}, which would be "
                                      f"written as {used:g}" + (" (the base itself)" if used == 0.0 else
                                                                " (the adapted model itself)" if used == 1.0 else ""),
                                      fix=f"pass --alpha {used:g} if that is what you mean"))
    return used


BLEND_MARKER = "harness_blend.json"  # what a blend folder holds: its files, so a rerun replaces nothing else


def _check_blend_out(out: Path) -> None:
    """Refuse an ``out`` that a blend would destroy (:func:`harness.rundir.check_out_dir`): the blend replaces
    ``out`` as a whole, so it must be new, empty, or an earlier blend with nothing added: every entry listed in the
    earlier blend's :data:`BLEND_MARKER` (a model fine-tuned from a blend keeps ``harness_blend`` in its
    config.json, so the config alone proves nothing).

    Raises
    ------
    OutputError
        As :func:`harness.rundir.check_out_dir`, for anything the earlier blend did not write.
    """
    check_out_dir(out, others=_not_blend_files, holds="an earlier blend",
                  expected=f"a new or empty folder, or one `harness blend` wrote (listed in its {BLEND_MARKER})")


def _not_blend_files(folder: Path, entries: list[Path]) -> list[str]:
    """The entries of ``folder`` that its :data:`BLEND_MARKER` does not list (all of them without one)."""
    try:
        marker = json.loads((folder / BLEND_MARKER).read_text(encoding="utf-8"))
        written = set(marker["files"]) | {BLEND_MARKER} if isinstance(marker, dict) else set()
    except (OSError, ValueError, TypeError, KeyError):
        written = set()
    return [e.name + ("/" if e.is_dir() else "") for e in entries
            if e.name not in written or not e.is_file() or e.is_symlink()]


def blend_checkpoint(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, *, head: str = "shared",
                     options: RunOptions = RunOptions(), max_shard_bytes: int | None = None) -> BlendOutcome:
    """Write the blend at ``alpha`` into ``out`` (atomically: a sibling temporary folder swapped into place) and
    say how (:class:`BlendOutcome`). See :func:`write_blend`.

    Raises
    ------
    HarnessError
        ModelError/BlendError for unusable models, OutputError when ``out`` cannot be written.
    """
    from harness.models.blend import HEAD_MODES  # torch: imported when a blend is written
    from harness.models.load import is_adapter_dir, resolve_model_dir
    from harness.models.paths import check_model_path

    alpha = _alpha_used(alpha)
    check_model_path(base, "--base")
    check_model_path(adapted, "--adapted")
    _refuse_reft(adapted)
    if head not in HEAD_MODES:
        raise BlendError(format_error("unknown head mode", where="--head", expected=HEAD_MODES, got=head))
    out = Path(out)
    _check_blend_out(out)
    adapter = Path(adapted).expanduser().is_dir() and is_adapter_dir(Path(adapted).expanduser())
    if not adapter:
        resolve_model_dir(adapted)  # a missing adapted model fails before anything is read
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(out)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out), dir=out.parent))
    try:
        make = _stream_adapter if adapter else _stream
        outcome = make(base, adapted, alpha, head, options, tmp, max_shard_bytes)
        _check_reload_untied(tmp, outcome)
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / BLEND_MARKER).write_text(json.dumps({"alpha": alpha, "files": files}, indent=1) + "\n",
                                        encoding="utf-8")
        _check_blend_out(out)  # again: the blend took a while, and out may have been filled meanwhile
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    outcome.path = out
    for note in outcome.notes:
        log.warning("blend: %s", note)
    return outcome


def _refuse_reft(adapted: str | Path) -> None:
    """A ReFT adaptation has no weights to write: its edit acts on hidden states at chosen token positions of the
    prompt, which no weight of the base can express (a weight acts on every position alike).

    Raises
    ------
    BlendError
        When ``adapted`` is a ReFT folder (exit 2).
    """
    from harness.models.reft_io import reft_format  # torch (see blend_checkpoint)

    if reft_format(adapted):
        raise BlendError(format_error(
            "a ReFT adaptation cannot be written as a blended checkpoint: its alpha is an intervention strength "
            "(an edit of hidden states at chosen prompt positions), not a weight of a weight blend, and no set of "
            "weights reproduces a position-dependent edit", where=str(adapted),
            fix="score the intervention at any strength with `harness sweep --base BASE --adapted REFT_FOLDER "
                "--alphas 0,ALPHA,1`, or `harness eval --model REFT_FOLDER` for strength 1"))


def _check_reload_untied(folder: Path, outcome: BlendOutcome) -> None:
    """Where the blend untied head and embedding, the written config must not tie them again on load."""
    cfg = json.loads((folder / "config.json").read_text())
    if any("tie_word_embeddings=false" in n for n in outcome.notes) and cfg.get("tie_word_embeddings", True):
        raise BlendError(format_error("the written config would tie the output head to the embedding again on load",
                                      where=str(folder / "config.json"), expected="tie_word_embeddings: false",
                                      got=cfg.get("tie_word_embeddings"), fix="report this as a harness bug"))


def write_blend(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, *, head: str = "shared",
                options: RunOptions = RunOptions(), max_shard_bytes: int | None = None) -> Path:
    """Write the blend at ``alpha`` as a safetensors checkpoint (sharded, with ``model.safetensors.index.json``,
    when larger than one shard) loadable with the ``from_pretrained`` of its architecture
    (``AutoModelForCausalLM``, ``AutoModelForSequenceClassification`` after ``harness.register()`` for harness
    model classes), with provenance (base and adapted fingerprints, alpha, head, blend path, notes) in its config
    under ``harness_blend``. Floating weights are written in ``options.dtype``.

    Raises
    ------
    HarnessError
        ModelError/BlendError for unusable models, OutputError when ``out`` cannot be written.
    """
    return blend_checkpoint(base, adapted, alpha, out, head=head, options=options,
                            max_shard_bytes=max_shard_bytes).path
