"""What every trainer shares: the optimiser and schedule, progress reporting, and writing a model folder whole,
loading models quietly.

Progress (:class:`harness.progress.StepProgress`, re-exported here): a tqdm bar when stderr is a terminal; otherwise
(CI logs) one INFO line per optimiser step on the ``harness.train`` loggers; nothing with ``progress=False``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error
from harness.io import ensure_dir
from harness.progress import StepProgress  # re-exported: the trainers' progress (harness.progress)
from harness.spec.training import FineTuneSettings

__all__ = ["adamw_linear", "StepProgress", "pad_from_tokenizer", "save_model_folder", "save_folder", "quiet_loading"]

logger = logging.getLogger(__name__)


def adamw_linear(model: torch.nn.Module, ft: FineTuneSettings, total_steps: int, *,
                 no_decay: Callable[[str, torch.nn.Parameter], bool], warmup_offset: int
                 ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (``weight_decay`` except where ``no_decay(name, p)``) with a linear
    warmup over ``round(warmup_ratio * total_steps)`` steps, then a linear decay to 0 at ``total_steps``.

    Parameters
    ----------
    model : torch.nn.Module
    ft : FineTuneSettings
        ``learning_rate``, ``weight_decay`` and ``warmup_ratio``.
    total_steps : int
        Optimiser steps of the whole run.
    no_decay : callable
        ``(name, parameter) -> bool``: parameters without weight decay (biases, norm weights).
    warmup_offset : int
        The warmup factor of step ``s`` is ``(s + 1) / (warmup + warmup_offset)`` (the classifier uses 1, the
        causal LM 0; kept apart so both demos' weights stay what they were).

    Returns
    -------
    (optimizer, scheduler)
        Step the scheduler once per optimiser step.
    """
    decay, keep = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if no_decay(name, p) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ft.weight_decay},
                             {"params": keep, "weight_decay": 0.0}], lr=ft.learning_rate)
    warmup = int(round(ft.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + warmup_offset)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def pad_from_tokenizer(model: Any, tokenizer: Any) -> None:
    """Copy the tokenizer's pad token id into ``model.config`` when the config has none, before saving: else
    every later load of the folder notes that config.json lacks ``pad_token_id``
    (:func:`harness.models.sanity`). A config that has one, or a tokenizer without one, is left as it is."""
    config = getattr(model, "config", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if config is not None and getattr(config, "pad_token_id", None) is None and pad is not None:
        config.pad_token_id = int(pad)


def save_model_folder(model: Any, tokenizer: Any, out_dir: Path, record: dict[str, Any], record_name: str,
                      **save_kwargs: Any) -> None:
    """``save_pretrained`` (safetensors) + tokenizer + ``record`` as JSON into a temporary sibling folder, then
    rename it onto ``out_dir``: the folder appears whole or not at all (:func:`save_folder`).

    Raises
    ------
    ModelError
        If ``out_dir`` exists already.
    """
    pad_from_tokenizer(model, tokenizer)

    def write(staging: Path) -> None:
        model.save_pretrained(staging, **save_kwargs)
        tokenizer.save_pretrained(staging)

    save_folder(write, out_dir, record, record_name)


def save_folder(write: Callable[[Path], None], out_dir: Path, record: dict[str, Any], record_name: str) -> None:
    """``write(staging)`` plus ``record`` as JSON (``record_name``) into a temporary sibling folder, renamed onto
    ``out_dir`` at the end: the folder appears whole or not at all.

    Raises
    ------
    ModelError
        If ``out_dir`` exists already.
    """
    if out_dir.exists():
        raise ModelError(format_error("the output folder exists already", where=str(out_dir),
                                      fix="choose a new folder or delete it"))
    ensure_dir(out_dir.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(staging)
        (staging / record_name).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' "Loading weights" / "Writing model shards" bars and its info logging (restored on
    exit)."""
    from transformers.utils import logging as hf_logging  # heavy: only when a model is loaded

    bars_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()
