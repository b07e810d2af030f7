"""Demo models, built once and cached: a linear-probe base and an adapted model (full fine-tuning or LoRA).

- **base**: a pretrained sentence-transformers encoder in the mean-pooling class
  (:mod:`harness.models.pooling`) with a linear-probe head: scikit-learn ``LogisticRegression`` fit on frozen
  pooled features of the train split, its C chosen on validation accuracy.
- **adapted, full**: encoder and head fine-tuned from that probe (linear probing then fine-tuning, LP-FT:
  Kumar et al., 2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR).
- **adapted, lora**: a PEFT LoRA adapter (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models")
  trained from the same probe on the same data; the head is trained in full (``modules_to_save``).

Each model directory is content-addressed: its name holds a sha256 of everything that can change its weights
(resolved settings, encoder weights, train/validation fingerprints, adaptation; the adapted key chains the base
key). A build runs in a temporary folder that is renamed into place only when complete, with ``build.json``
(the key and what was measured) written last, so an interrupted build is never reused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from harness.errors import CacheError, ModelError, SpecError, format_error, unknown_name
from harness.io import atomic_write_json, ensure_dir, sha256_file, sha256_json
from harness.progress import StepProgress
from harness.records import SplitData
from harness.spec.training import TrainingSettings, TrainingSpec
from harness.train.classifier import check_splits, fine_tune, probe_head, subsample, wrap_lora
from harness.train.loop import pad_from_tokenizer

__all__ = ["DemoModels", "build_demo_models", "cache_keys", "file_sha256", "BUILD_FILE"]

logger = logging.getLogger(__name__)

#: Written last into every finished model directory: the cache key and the build's measurements.
BUILD_FILE = "build.json"
#: Bump when a code change alters what a build produces for the same inputs (invalidates every cached model).
_FORMAT_VERSION = 1
_ADAPTATIONS = ("full", "lora")


@dataclass(frozen=True)
class DemoModels:
    """Where the demo models are. ``adapted_dir`` is a full checkpoint (``full``) or a PEFT adapter directory
    whose base is ``base_dir`` (``lora``). ``info`` holds the cache keys, the chosen C, validation accuracies
    (fractions in [0, 1]), losses, sizes, seconds, and whether each model was reused from the cache."""

    base_dir: Path
    adapted_dir: Path
    info: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks.

    Raises
    ------
    ModelError
        If the file cannot be read.
    """
    try:
        return sha256_file(path)
    except OSError as e:
        raise ModelError(format_error("cannot read model weights", where=str(path), got=e.strerror,
                                      fix="point at a sentence-transformers folder holding model.safetensors")) from e


def _split_fingerprint(split: SplitData) -> str:
    """The split's own fingerprint, or (if it has none) a sha256 of its canonical rows."""
    if split.ref.fingerprint:
        return split.ref.fingerprint
    cols = [c for c in ("example_id", "text", "text_pair", "label") if c in split.frame.columns]
    return sha256_json({"classes": list(split.classes), "rows": split.frame[cols].astype(str).values.tolist()})


def cache_keys(settings: TrainingSettings, encoder_fingerprint: str, train_fingerprint: str,
               validation_fingerprint: str, adaptation: Literal["full", "lora"]) -> dict[str, str]:
    """The cache keys (sha256 hex) of the base and the adapted model.

    The base key covers the format version, seed, max_length, probe settings, encoder weights and the
    train/validation fingerprints; the adapted key covers the base key, the adaptation and its settings.

    Returns
    -------
    dict
        ``{"base": str, "adapted": str}``.
    """
    base = sha256_json({"format": _FORMAT_VERSION, "stage": "base", "seed": settings.seed,
                  "max_length": settings.max_length, "probe": settings.probe.model_dump(mode="json"),
                  "encoder": encoder_fingerprint, "train": train_fingerprint, "validation": validation_fingerprint})
    ft = settings.full if adaptation == "full" else settings.lora
    adapted = sha256_json({"format": _FORMAT_VERSION, "stage": adaptation, "base": base,
                     "settings": ft.model_dump(mode="json")})
    return {"base": base, "adapted": adapted}


# --- the two builds (the trainers live in harness.train.classifier) -------------------------------------------


def _build_base(settings: TrainingSettings, train: SplitData, validation: SplitData, encoder_dir: Path,
                classes: tuple[str, ...], work: Path, device: str, progress: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer  # heavy: only when a demo model is built

    from harness.models.pooling import from_sentence_transformer  # transformers: as above

    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = from_sentence_transformer(encoder_dir, num_labels=len(classes), id2label=dict(enumerate(classes)))
    model.to(device)
    train_frame = subsample(train.frame, settings.probe.max_train_examples, settings.seed)
    info = probe_head(model, tokenizer, train_frame, validation.frame, settings.probe, seed=settings.seed,
                      max_length=settings.max_length, device=device, progress=progress)
    pad_from_tokenizer(model, tokenizer)
    model.to("cpu").save_pretrained(work)
    tokenizer.save_pretrained(work)
    return {"stage": "base", **info, "seconds": round(time.perf_counter() - started, 2)}


def _build_adapted(settings: TrainingSettings, adaptation: str, base_dir: Path, train: SplitData,
                   validation: SplitData, work: Path, device: str, progress: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer  # heavy: only when a demo model is built

    from harness.models.pooling import MeanPoolingForSequenceClassification  # transformers: as above

    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    ft = settings.full if adaptation == "full" else settings.lora
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = MeanPoolingForSequenceClassification.from_pretrained(str(base_dir))
    if adaptation == "lora":
        model = wrap_lora(model, settings.lora)
    model.to(device)
    frame = subsample(train.frame, ft.max_train_examples, settings.seed)
    info = fine_tune(model, tokenizer, frame, validation.frame, ft, seed=settings.seed,
                     max_length=settings.max_length, device=device, progress=progress)
    model.to("cpu")
    if adaptation == "lora":
        model.peft_config["default"].base_model_name_or_path = str(base_dir)
    pad_from_tokenizer(model, tokenizer)
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    return {"stage": adaptation, **info, "seconds": round(time.perf_counter() - started, 2)}


# --- caching ---------------------------------------------------------------------------------------------------


def _read_build(final: Path, key: str) -> dict[str, Any] | None:
    """The finished build's record, or None if ``final`` is absent or unfinished; raises on a key mismatch."""
    marker = final / BUILD_FILE
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CacheError(format_error("cached model record is unreadable", where=str(marker), got=str(e),
                                      fix=f"delete {final} to rebuild it")) from e
    if record.get("key") != key:
        raise CacheError(format_error("cached model does not match its key", where=str(marker),
                                      expected=key, got=record.get("key"), fix=f"delete {final} to rebuild it"))
    return record


def _cached_build(final: Path, key: str, material: dict[str, Any],
                  build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Reuse ``final`` if finished; else build into a temporary sibling folder and rename it into place."""
    record = _read_build(final, key)
    if record is not None:
        logger.info("reusing cached model %s", final)
        return {**record["info"], "reused": True}
    if final.exists():
        logger.warning("removing unfinished model folder %s", final)
        shutil.rmtree(final)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=ensure_dir(final.parent)))
    try:
        info = build(work)
        atomic_write_json(work / BUILD_FILE, {"key": key, "material": material, "info": info})
        try:
            os.replace(work, final)
        except OSError:
            if _read_build(final, key) is None:  # not a concurrent build that finished first
                raise
            logger.info("another process finished %s first; using it", final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return {**info, "reused": False}


def _resolve_profile(spec: TrainingSpec, profile: str) -> TrainingSettings:
    if profile not in spec.profiles:
        raise SpecError(unknown_name(f"training profile of {spec.name!r}", profile, spec.profiles))
    return spec.resolve(profile)


def _prepare(encoder_dir: Path, train: SplitData, validation: SplitData, progress: bool) -> dict[str, str]:
    """Import the model classes and fingerprint the encoder and the splits, under a bar of its own (``preparing
    MiniLM``: the fresh-user trial of issue 19 saw 11.8 s with nothing on the terminal here, on a loaded 2-core
    CPU; mostly the import of transformers' model classes). Returns the fingerprints (sha256 hex) of the encoder weights, train and validation."""
    steps = StepProgress(range(2), 2, "preparing MiniLM", progress, logger)
    try:
        steps.describe("importing transformers")
        from harness.models.pooling import register  # transformers: only when a demo model is built

        register()  # AutoTokenizer reads config.json of the saved models: their model_type must be known
        steps.step(note="model classes imported")
        steps.describe("sha256 of the encoder weights")
        fps = {"encoder": file_sha256(encoder_dir / "model.safetensors"), "train": _split_fingerprint(train),
               "validation": _split_fingerprint(validation)}
        steps.step(note="fingerprints")
    finally:
        steps.close()
    return fps


def build_demo_models(spec: TrainingSpec, train: SplitData, validation: SplitData, encoder_dir: Path,
                      out_dir: Path, adaptation: Literal["full", "lora"], profile: str, device: str | None = None,
                      progress: bool = True) -> DemoModels:
    """Build (or reuse from the cache) the demo's base and adapted models.

    Parameters
    ----------
    spec : TrainingSpec
        The ``kind: training`` spec; ``profile`` selects its overrides.
    train, validation : SplitData
        The ID train split (probe and fine-tuning rows) and the ID validation split (chooses the probe's C;
        reported). Labels are int indices into ``classes``; both splits must share the same classes.
    encoder_dir : Path
        A sentence-transformers folder (``modules.json``, ``config.json``, ``model.safetensors``, tokenizer).
    out_dir : Path
        Cache folder; models go to ``out_dir/base-<key>`` and ``out_dir/<adaptation>-<key>``.
    adaptation : {"full", "lora"}
        Full fine-tuning (LP-FT, Kumar et al., 2022) or a LoRA adapter (Hu et al., 2021).
    profile : str
        A key of ``spec.profiles`` (``quick`` or ``full`` in the shipped spec).
    device : str, default=None
        Torch device; ``None`` picks ``cuda`` when available, else ``cpu``. Not part of the cache key.
    progress : bool, default=True
        Show tqdm progress bars.

    Returns
    -------
    DemoModels
        ``base_dir`` (safetensors checkpoint + tokenizer, ``id2label`` = the split's class names),
        ``adapted_dir`` (a checkpoint for ``full``, a PEFT adapter whose ``base_model_name_or_path`` is
        ``base_dir`` for ``lora``) and ``info`` (keys, chosen C, validation accuracies as fractions, losses).

    Raises
    ------
    SpecError
        Unknown ``profile`` or ``adaptation``, or LoRA target modules that match nothing.
    DataError
        Empty splits, differing classes, or a train split lacking a class.
    ModelError
        If ``encoder_dir`` is not a usable mean-pooling sentence-transformers folder.
    CacheError
        If a finished cache entry's recorded key differs from its folder's key.
    """
    if adaptation not in _ADAPTATIONS:
        raise SpecError(unknown_name("adaptation", str(adaptation), _ADAPTATIONS))
    settings = _resolve_profile(spec, profile)
    classes = check_splits(train, validation)
    encoder_dir, out_dir = Path(encoder_dir), Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    fps = _prepare(encoder_dir, train, validation, progress)
    keys = cache_keys(settings, fps["encoder"], fps["train"], fps["validation"], adaptation)
    base_dir = (out_dir / f"base-{keys['base'][:24]}").resolve()
    adapted_dir = (out_dir / f"{adaptation}-{keys['adapted'][:24]}").resolve()
    common = {"profile": profile, "spec": spec.name, "device": device, "fingerprints": fps,
              "settings": settings.model_dump(mode="json")}
    base_info = _cached_build(
        base_dir, keys["base"], {**common, "stage": "base"},
        lambda work: _build_base(settings, train, validation, encoder_dir, classes, work, device, progress))
    adapted_info = _cached_build(
        adapted_dir, keys["adapted"], {**common, "stage": adaptation, "base_dir": str(base_dir)},
        lambda work: _build_adapted(settings, adaptation, base_dir, train, validation, work, device, progress))
    info = {"profile": profile, "adaptation": adaptation, "keys": keys, "classes": list(classes),
            "base": base_info, "adapted": adapted_info}
    return DemoModels(base_dir=base_dir, adapted_dir=adapted_dir, info=info)
