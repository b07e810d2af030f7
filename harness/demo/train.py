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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from harness.errors import CacheError, DataError, ModelError, SpecError, format_error, unknown_name
from harness.io import atomic_write_json, ensure_dir, sha256_file, sha256_json
from harness.records import SplitData
from harness.spec.training import FineTuneSettings, LoraSettings, TrainingSettings, TrainingSpec

__all__ = ["DemoModels", "build_demo_models", "cache_keys", "file_sha256", "BUILD_FILE"]

logger = logging.getLogger(__name__)

#: Written last into every finished model directory: the cache key and the build's measurements.
BUILD_FILE = "build.json"
#: Bump when a code change alters what a build produces for the same inputs (invalidates every cached model).
_FORMAT_VERSION = 1
_ADAPTATIONS = ("full", "lora")
_INFER_BATCH = 64


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


# --- data plumbing ---------------------------------------------------------------------------------------------


def _subsample(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``cap`` rows in their original order (all rows when ``cap`` is None or not smaller)."""
    if cap is None or len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed).sort_index()


def _encode(tokenizer, frame: pd.DataFrame, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids (and token type ids where the tokenizer makes them) per row, truncated, unpadded."""
    pair = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    enc = tokenizer(frame["text"].tolist(), pair, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(frame))]


def _collate(rows: Sequence[dict[str, list[int]]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row; returns input_ids, attention_mask (and token_type_ids) as int64."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if "token_type_ids" in rows[0] else None
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        if types is not None:
            types[i, :n] = torch.tensor(r["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


def _train_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Seeded, length-sorted-ish batches: shuffle, sort by length within chunks of 50 batches, shuffle batches."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@torch.inference_mode()
def _run_inference(model, rows, pad_id: int, device: str, fn: Callable, desc: str, progress: bool) -> np.ndarray:
    """``fn(model, batch)`` over rows in length order, results put back in row order (float32 array)."""
    model.eval()
    lengths = np.array([len(r["input_ids"]) for r in rows])
    order = np.argsort(lengths, kind="stable")
    outs = []
    for start in tqdm(range(0, len(order), _INFER_BATCH), desc=desc, disable=not progress, leave=False):
        idx = order[start:start + _INFER_BATCH]
        outs.append(fn(model, _collate([rows[i] for i in idx], pad_id, device)).float().cpu().numpy())
    result = np.empty((len(rows), outs[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(outs)
    return result


def _logits(model, rows, pad_id, device, desc, progress) -> np.ndarray:
    return _run_inference(model, rows, pad_id, device, lambda m, b: m(**b).logits, desc, progress)


def _check_splits(train: SplitData, validation: SplitData) -> tuple[str, ...]:
    classes = tuple(train.classes)
    if tuple(validation.classes) != classes:
        raise DataError(format_error("train and validation splits have different classes",
                                     where=f"{train.ref.key} vs {validation.ref.key}",
                                     expected=list(classes), got=list(validation.classes)))
    for split in (train, validation):
        if len(split) == 0:
            raise DataError(format_error("split is empty", where=split.ref.key, fix="check the suite's splits"))
    missing = sorted(set(range(len(classes))) - set(train.frame["label"].astype(int)))
    if missing:
        raise DataError(format_error("the train split lacks some classes", where=train.ref.key,
                                     expected=f"every class of {list(classes)}",
                                     got=f"no rows of {[classes[i] for i in missing]}",
                                     fix="use a larger or stratified train split"))
    return classes


# --- the base: linear probe ------------------------------------------------------------------------------------


def _fit_probe(x_train, y_train, x_val, y_val, probe, seed: int):
    """Fit LogisticRegression for each C; keep the best on validation accuracy (ties: the smaller C)."""
    from sklearn.linear_model import LogisticRegression  # heavy: only for the linear-probe head

    best, grid = None, {}
    for c in probe.c_grid:
        clf = LogisticRegression(C=c, max_iter=probe.max_iter, random_state=seed).fit(x_train, y_train)
        acc = float((clf.predict(x_val) == y_val).mean())
        grid[repr(float(c))] = acc
        if best is None or acc > best[1]:
            best = (clf, acc, float(c))
    return best[0], best[2], grid


def _head_from_probe(clf, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax head weights (n_classes, hidden) and bias (n_classes,) with the probe's class probabilities.

    A binary LogisticRegression gives one score ``w.x + b`` for its second class; the head gets ``+-(w, b)/2``,
    whose logit difference is that score, so both give the same probabilities."""
    coef, intercept = np.asarray(clf.coef_, dtype=np.float64), np.asarray(clf.intercept_, dtype=np.float64)
    classes = [int(c) for c in clf.classes_]
    weight = np.zeros((n_classes, coef.shape[1]))
    bias = np.zeros(n_classes)
    if n_classes == 2 and coef.shape[0] == 1:
        weight[classes[1]], bias[classes[1]] = coef[0] / 2, intercept[0] / 2
        weight[classes[0]], bias[classes[0]] = -coef[0] / 2, -intercept[0] / 2
    else:
        for row, c in enumerate(classes):
            weight[c], bias[c] = coef[row], intercept[row]
    return torch.tensor(weight, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)


def _build_base(settings: TrainingSettings, train: SplitData, validation: SplitData, encoder_dir: Path,
                classes: tuple[str, ...], work: Path, device: str, progress: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer  # heavy: only when a demo model is built

    from harness.models.pooling import from_sentence_transformer  # transformers: as above

    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = from_sentence_transformer(encoder_dir, num_labels=len(classes), id2label=dict(enumerate(classes)))
    model.to(device)
    train_frame = _subsample(train.frame, settings.probe.max_train_examples, settings.seed)
    embed = lambda m, b: m.embed(**b)  # noqa: E731
    feats = {name: _run_inference(model, _encode(tokenizer, frame, settings.max_length), tokenizer.pad_token_id,
                                  device, embed, f"probe features ({name})", progress)
             for name, frame in (("train", train_frame), ("validation", validation.frame))}
    y_train, y_val = train_frame["label"].to_numpy(int), validation.frame["label"].to_numpy(int)
    clf, c, grid = _fit_probe(feats["train"], y_train, feats["validation"], y_val, settings.probe, settings.seed)
    weight, bias = _head_from_probe(clf, len(classes))
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    val_logits = feats["validation"] @ weight.numpy().T + bias.numpy()
    val_acc = float((val_logits.argmax(1) == y_val).mean())
    model.to("cpu").save_pretrained(work)
    tokenizer.save_pretrained(work)
    logger.info("linear probe: C=%g, validation accuracy %.4f on %d rows (%d train rows)", c, val_acc,
                len(y_val), len(y_train))
    return {"stage": "base", "C": c, "val_accuracy": val_acc, "val_accuracy_by_C": grid,
            "train_accuracy": float((clf.predict(feats["train"]) == y_train).mean()),
            "n_train": int(len(y_train)), "n_validation": int(len(y_val)),
            "seconds": round(time.perf_counter() - started, 2)}


# --- the adapted model: full fine-tuning or LoRA ---------------------------------------------------------------


def _optimizer(model: torch.nn.Module, ft: FineTuneSettings, total_steps: int):
    """AdamW (no decay on biases and norm weights) and a linear warmup / linear decay schedule."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ft.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=ft.learning_rate)
    warmup = int(round(ft.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _train_loop(model, rows, labels: np.ndarray, ft: FineTuneSettings, seed: int, pad_id: int, device: str,
                progress: bool) -> dict[str, Any]:
    """Mini-batch training with cross-entropy; returns the mean loss per epoch and the step count."""
    generator = torch.Generator().manual_seed(seed)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    n_batches = -(-len(rows) // ft.batch_size)
    opt, sched = _optimizer(model, ft, ft.epochs * n_batches)
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    losses, step = [], 0
    model.train()
    for epoch in range(ft.epochs):
        total = 0.0
        bar = tqdm(_train_batches(lengths, ft.batch_size, generator), desc=f"epoch {epoch + 1}/{ft.epochs}",
                   disable=not progress, leave=False)
        for idx in bar:
            batch = _collate([rows[i] for i in idx], pad_id, device)
            loss = model(**batch, labels=target[idx].to(device)).loss
            loss.backward()
            if ft.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), ft.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
            step += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        losses.append(total / len(rows))
        logger.info("epoch %d/%d: mean training loss %.4f", epoch + 1, ft.epochs, losses[-1])
    model.eval()
    return {"loss_per_epoch": losses, "steps": step}


def _wrap_lora(model, lora: LoraSettings):
    from peft import LoraConfig, TaskType, get_peft_model  # heavy: only for the LoRA demo

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.lora_alpha,
                        lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
                        modules_to_save=["classifier"])
    from harness.models.adapters import quiet_peft_deprecations

    try:
        with quiet_peft_deprecations():
            return get_peft_model(model, config)
    except ValueError as e:
        raise SpecError(format_error("LoRA target modules not found in the encoder", where="lora.target_modules",
                                     expected="names of linear layers (for BERT: query, key, value, dense)",
                                     got=list(lora.target_modules), fix="fix lora.target_modules")) from e


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
        model = _wrap_lora(model, settings.lora)
    model.to(device)
    frame = _subsample(train.frame, ft.max_train_examples, settings.seed)
    rows = _encode(tokenizer, frame, settings.max_length)
    history = _train_loop(model, rows, frame["label"].to_numpy(int), ft, settings.seed, tokenizer.pad_token_id,
                          device, progress)
    train_seconds = time.perf_counter() - started
    val_rows = _encode(tokenizer, validation.frame, settings.max_length)
    y_val = validation.frame["label"].to_numpy(int)
    val_logits = _logits(model, val_rows, tokenizer.pad_token_id, device, "validation", progress)
    val_acc = float((val_logits.argmax(1) == y_val).mean())
    model.to("cpu")
    if adaptation == "lora":
        model.peft_config["default"].base_model_name_or_path = str(base_dir)
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    logger.info("%s fine-tuning: validation accuracy %.4f after %d steps (%.1f s)", adaptation, val_acc,
                history["steps"], train_seconds)
    return {"stage": adaptation, "val_accuracy": val_acc, "n_train": int(len(frame)),
            "n_validation": int(len(y_val)), "train_seconds": round(train_seconds, 2),
            "seconds": round(time.perf_counter() - started, 2), **history}


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
    from harness.models.pooling import register  # transformers: only when a demo model is built

    if adaptation not in _ADAPTATIONS:
        raise SpecError(unknown_name("adaptation", str(adaptation), _ADAPTATIONS))
    register()  # AutoTokenizer reads config.json of the saved models: their model_type must be known
    settings = _resolve_profile(spec, profile)
    classes = _check_splits(train, validation)
    encoder_dir, out_dir = Path(encoder_dir), Path(out_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    fps = {"encoder": file_sha256(encoder_dir / "model.safetensors"), "train": _split_fingerprint(train),
           "validation": _split_fingerprint(validation)}
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
