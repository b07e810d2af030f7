"""Sentence-classifier training: a linear probe (the base), full fine-tuning (LP-FT from the probe) and LoRA.

- **probe**: scikit-learn ``LogisticRegression`` fit on frozen pooled features of the train split (the input of
  the model's linear head), one fit per C of ``probe.c_grid``, the C with the best validation accuracy kept
  (ties: the smaller C); its coefficients become the head. Multi-class heads get one row per class; a binary
  probe's single score becomes the symmetric pair ``+-(w, b)/2`` (same probabilities).
- **full**: every weight trained with cross-entropy from the given model (from a probe: LP-FT, Kumar et al.,
  2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR).
- **lora**: a PEFT LoRA adapter (Hu et al., 2021) on ``lora.target_modules``, the head trained in full
  (``modules_to_save``).

Optimisation: AdamW (no decay on biases and norm weights), linear warmup then decay, gradient clipping, seeded
length-bucketed shuffling. Labels are int indices into the suite's classes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.errors import DataError, ModelError, SpecError, format_error
from harness.records import SplitData
from harness.spec.training import FineTuneSettings, LoraSettings, ProbeSettings
from harness.train.loop import StepProgress, adamw_linear

__all__ = ["subsample", "encode", "collate", "train_batches", "run_inference", "logits", "check_splits",
           "fit_probe", "head_from_probe", "probe_head", "train_loop", "wrap_lora", "fine_tune", "head_module"]

logger = logging.getLogger(__name__)
_INFER_BATCH = 64


def subsample(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``cap`` rows in their original order (all rows when ``cap`` is None or not smaller)."""
    if cap is None or len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed).sort_index()


def encode(tokenizer, frame: pd.DataFrame, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids (and token type ids where the tokenizer makes them) per row, truncated, unpadded."""
    pair = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    enc = tokenizer(frame["text"].tolist(), pair, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(frame))]


def collate(rows: Sequence[dict[str, list[int]]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
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


def train_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
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
def run_inference(model, rows, pad_id: int, device: str, fn: Callable, desc: str, progress: bool) -> np.ndarray:
    """``fn(model, batch)`` over rows in length order, results put back in row order (float32 array of shape
    (n_rows, width))."""
    model.eval()
    lengths = np.array([len(r["input_ids"]) for r in rows])
    order = np.argsort(lengths, kind="stable")
    starts = range(0, len(order), _INFER_BATCH)
    bar = StepProgress(starts, len(starts), desc, progress, logger)
    outs = []
    for start in bar:
        idx = order[start:start + _INFER_BATCH]
        outs.append(fn(model, collate([rows[i] for i in idx], pad_id, device)).float().cpu().numpy())
        bar.step()
    bar.close()
    result = np.empty((len(rows), outs[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(outs)
    return result


def logits(model, rows, pad_id, device, desc, progress) -> np.ndarray:
    """Logits (n_rows, n_classes) of ``model`` on encoded rows."""
    return run_inference(model, rows, pad_id, device, lambda m, b: m(**b).logits, desc, progress)


def check_splits(train: SplitData, validation: SplitData) -> tuple[str, ...]:
    """The shared classes of the train and validation splits.

    Raises
    ------
    DataError
        Differing classes, an empty split, or a train split lacking a class.
    """
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


# --- the linear probe ------------------------------------------------------------------------------------------


def fit_probe(x_train, y_train, x_val, y_val, probe: ProbeSettings, seed: int):
    """Fit LogisticRegression for each C; keep the best on validation accuracy (ties: the smaller C).

    Returns
    -------
    (classifier, C, {repr(C): validation accuracy})
    """
    from sklearn.linear_model import LogisticRegression  # heavy: only for the linear-probe head

    best, grid = None, {}
    for c in probe.c_grid:
        clf = LogisticRegression(C=c, max_iter=probe.max_iter, random_state=seed).fit(x_train, y_train)
        acc = float((clf.predict(x_val) == y_val).mean())
        grid[repr(float(c))] = acc
        if best is None or acc > best[1]:
            best = (clf, acc, float(c))
    return best[0], best[2], grid


def head_from_probe(clf, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def head_module(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The name and module of a classifier's final linear head (``classifier`` or ``score``).

    Raises
    ------
    ModelError
        If the model has no single ``nn.Linear`` head under those names.
    """
    for name in ("classifier", "score"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Linear):
            return name, module
        if module is not None and isinstance(getattr(module, "out_proj", None), torch.nn.Linear):
            raise ModelError(format_error("the model's head is not a single linear layer", where=name,
                                          expected="a linear head (BERT-family, mean-pooling classifiers)",
                                          got=type(module).__name__,
                                          fix="train a BERT-family classifier or a sentence-transformers folder"))
    raise ModelError(format_error("the model has no linear classification head", expected="a module named "
                                  "'classifier' or 'score' (nn.Linear)", got=type(model).__name__,
                                  fix="pass a sequence-classification checkpoint or a sentence-transformers folder"))


def _features_fn(model: torch.nn.Module, head: torch.nn.Module) -> Callable:
    """``fn(model, batch) -> (batch, hidden)``: what the head reads (``embed`` where the model has it)."""
    if hasattr(model, "embed"):
        return lambda m, b: m.embed(**b)
    seen: list[torch.Tensor] = []

    def fn(m, b):
        handle = head.register_forward_pre_hook(lambda _mod, args: seen.append(args[0]))
        try:
            m(**b)
        finally:
            handle.remove()
        return seen.pop()

    return fn


def probe_head(model, tokenizer, train_frame: pd.DataFrame, val_frame: pd.DataFrame, probe: ProbeSettings, *,
               seed: int, max_length: int, device: str, progress: bool) -> dict[str, Any]:
    """Fit the linear probe on the frozen model's features and write it into the model's head (in place).

    Returns
    -------
    dict
        ``C``, ``val_accuracy`` (fraction), ``val_accuracy_by_C``, ``train_accuracy``, ``n_train``,
        ``n_validation``.

    Raises
    ------
    ModelError
        If the head is not a linear layer with a bias.
    """
    _, head = head_module(model)
    if head.bias is None:
        raise ModelError(format_error("a linear probe needs a head with a bias", got=type(model).__name__))
    fn = _features_fn(model, head)
    feats = {name: run_inference(model, encode(tokenizer, frame, max_length), tokenizer.pad_token_id, device, fn,
                                 f"probe features ({name})", progress)
             for name, frame in (("train", train_frame), ("validation", val_frame))}
    y_train, y_val = train_frame["label"].to_numpy(int), val_frame["label"].to_numpy(int)
    clf, c, grid = fit_probe(feats["train"], y_train, feats["validation"], y_val, probe, seed)
    weight, bias = head_from_probe(clf, head.out_features)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    val_logits = feats["validation"] @ weight.numpy().T + bias.numpy()
    val_acc = float((val_logits.argmax(1) == y_val).mean())
    logger.info("linear probe: C=%g, validation accuracy %.4f on %d rows (%d train rows)", c, val_acc,
                len(y_val), len(y_train))
    return {"C": c, "val_accuracy": val_acc, "val_accuracy_by_C": grid,
            "train_accuracy": float((clf.predict(feats["train"]) == y_train).mean()),
            "n_train": int(len(y_train)), "n_validation": int(len(y_val))}


# --- fine-tuning: full or LoRA ---------------------------------------------------------------------------------


def train_loop(model, rows, labels: np.ndarray, ft: FineTuneSettings, seed: int, pad_id: int, device: str,
               progress: bool) -> dict[str, Any]:
    """Mini-batch training with cross-entropy; returns the mean loss per epoch and the step count."""
    generator = torch.Generator().manual_seed(seed)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    n_batches = -(-len(rows) // ft.batch_size)
    opt, sched = adamw_linear(model, ft, ft.epochs * n_batches, warmup_offset=1,
                              no_decay=lambda name, p: p.ndim < 2 or "norm" in name.lower())
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    losses, step = [], 0
    model.train()
    for epoch in range(ft.epochs):
        total = 0.0
        batches = train_batches(lengths, ft.batch_size, generator)
        bar = StepProgress(batches, len(batches), f"epoch {epoch + 1}/{ft.epochs}", progress, logger)
        for idx in bar:
            batch = collate([rows[i] for i in idx], pad_id, device)
            loss = model(**batch, labels=target[idx].to(device)).loss
            loss.backward()
            if ft.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), ft.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
            step += 1
            bar.step(float(loss.detach()))
        bar.close()
        losses.append(total / len(rows))
        logger.info("epoch %d/%d: mean training loss %.4f", epoch + 1, ft.epochs, losses[-1])
    model.eval()
    return {"loss_per_epoch": losses, "steps": step}


def wrap_lora(model, lora: LoraSettings, head: str = "classifier"):
    """``model`` wrapped by PEFT with LoRA on ``lora.target_modules``; the head ``head`` is trained in full.

    Raises
    ------
    SpecError
        If no module matches ``lora.target_modules``.
    """
    from peft import LoraConfig, TaskType, get_peft_model  # heavy: only for LoRA

    from harness.models.adapters import quiet_peft_deprecations

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.lora_alpha,
                        lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
                        modules_to_save=[head])
    try:
        with quiet_peft_deprecations():
            return get_peft_model(model, config)
    except ValueError as e:
        raise SpecError(format_error("LoRA target modules not found in the encoder", where="lora.target_modules",
                                     expected="names of linear layers (for BERT: query, key, value, dense)",
                                     got=list(lora.target_modules), fix="fix lora.target_modules")) from e


def fine_tune(model, tokenizer, frame: pd.DataFrame, val_frame: pd.DataFrame, ft: FineTuneSettings, *, seed: int,
              max_length: int, device: str, progress: bool) -> dict[str, Any]:
    """Train ``model`` (already on ``device``, LoRA-wrapped or not) on ``frame``; then score ``val_frame``.

    Returns
    -------
    dict
        ``loss_per_epoch`` (mean cross-entropy, nats), ``steps``, ``val_accuracy`` (fraction), ``n_train``,
        ``n_validation``, ``train_seconds``.
    """
    started = time.perf_counter()
    rows = encode(tokenizer, frame, max_length)
    history = train_loop(model, rows, frame["label"].to_numpy(int), ft, seed, tokenizer.pad_token_id, device,
                         progress)
    train_seconds = time.perf_counter() - started
    y_val = val_frame["label"].to_numpy(int)
    val_logits = logits(model, encode(tokenizer, val_frame, max_length), tokenizer.pad_token_id, device,
                        "validation", progress)
    val_acc = float((val_logits.argmax(1) == y_val).mean())
    logger.info("fine-tuning: validation accuracy %.4f after %d steps (%.1f s)", val_acc, history["steps"],
                train_seconds)
    return {"val_accuracy": val_acc, "n_train": int(len(frame)), "n_validation": int(len(y_val)),
            "train_seconds": round(train_seconds, 2), **history}
