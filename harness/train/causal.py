"""Causal language-model training: prompt -> answer pairs, the answer-token loss, LoRA or full fine-tuning.

Pairs are tokenised as lm-eval's ``_encode_pair`` does (:func:`encode_pairs`), so a multiple-choice evaluation
reads what the model was trained on: the loss is the cross-entropy of the answer tokens only (prompt and padding
positions carry label -100). Optimisation: AdamW (no weight decay on biases and 1-d weights), linear warmup then
linear decay, gradient clipping, seeded shuffling and LoRA initialisation. Used by ``harness train`` on
multiple-choice suites (:mod:`harness.train.command`) and by the language-model demo
(:mod:`harness.demo.lm_train`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error
from harness.spec.training import FineTuneSettings, LoraSettings, TrainingSettings
from harness.train.loop import StepProgress, adamw_linear, quiet_loading

__all__ = ["encode_pairs", "collate", "answer_loss", "prepare_model", "fit", "validation_loss", "pad_id_of"]

logger = logging.getLogger(__name__)


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int
                 ) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Tokenise pairs into ``(input_ids, labels)`` with label -100 on prompt tokens.

    As lm-eval's ``_encode_pair``: whitespace at the end of the prompt moves to the answer; the answer tokens are
    those of ``tokenize(prompt + answer)`` after ``tokenize(prompt)``; no special tokens are added. Sequences longer
    than ``max_length`` lose prompt tokens from the left (the answer is kept whole); a pair whose answer alone
    exceeds ``max_length`` is dropped.

    Returns
    -------
    encoded : list of (input_ids, labels)
        Lists of ints of equal length per pair.
    n_truncated : int
        How many pairs lost prompt tokens or were dropped.
    """
    encoded, n_truncated = [], 0
    for prompt, answer in pairs:
        n_space = len(prompt) - len(prompt.rstrip())
        if n_space:
            prompt, answer = prompt[:-n_space], prompt[-n_space:] + answer
        whole = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n_answer = len(whole) - n_prompt
        if n_answer < 1 or n_answer > max_length - 1:
            n_truncated += 1
            continue
        if len(whole) > max_length:
            n_truncated += 1
            whole, n_prompt = whole[len(whole) - max_length:], max_length - n_answer
        encoded.append((whole, [-100] * n_prompt + whole[n_prompt:]))
    return encoded, n_truncated


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a batch (answers end every row): ``input_ids``, ``attention_mask``, ``position_ids`` (0 at each
    row's first real token), ``labels`` (-100 on padding and prompt), int64 tensors of shape (batch, length)."""
    length = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, length - len(x):], labels[i, length - len(y):] = torch.tensor(x), torch.tensor(y)
        mask[i, length - len(x):] = 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
            "labels": labels}


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy (nats per token) of the answer tokens of a left-padded batch, and their count.

    Logits are computed only at the last ``k + 1`` positions, ``k`` the longest answer (``logits_to_keep``): the
    vocabulary projection of the prompt positions (a fifth of a 135M model's compute) is skipped.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch["labels"]
    answer_len = int((labels != -100).sum(-1).max())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=answer_len + 1).logits
    targets = labels[:, -answer_len:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=-100, reduction="sum")
    n = int((targets != -100).sum())
    return loss / max(n, 1), n


def prepare_model(model_dir: Path, settings: TrainingSettings, adaptation: str) -> tuple[Any, Any, FineTuneSettings]:
    """Load tokenizer and model (float32); wrap the model with LoRA for ``adaptation == "lora"``.

    Returns
    -------
    (tokenizer, model, FineTuneSettings)
        The optimisation settings of ``adaptation`` (``settings.lora`` or ``settings.full``).

    Raises
    ------
    ModelError
        If the folder is not a loadable causal LM, or no module matches ``lora.target_modules``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelError(format_error("cannot load the causal language model to fine-tune", where=str(model_dir),
                                      got=str(e), fix="point at a transformers causal-LM folder")) from e
    if adaptation == "full":
        return tokenizer, model, settings.full
    from peft import LoraConfig, get_peft_model

    from harness.models.adapters import quiet_peft_deprecations

    lora: LoraSettings = settings.lora
    n_layers = model.config.num_hidden_layers
    layers = None if lora.last_layers is None else list(range(max(0, n_layers - lora.last_layers), n_layers))
    config = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), layers_to_transform=layers)
    try:
        with quiet_peft_deprecations():  # transformers' is_gradient_checkpointing FutureWarning, read by peft
            model = get_peft_model(model, config)
    except ValueError as e:
        raise ModelError(format_error("LoRA target modules not found in the model", where="lora.target_modules",
                                      got=lora.target_modules, fix="name linear layers of the model, e.g. q_proj, "
                                      "v_proj")) from e
    return tokenizer, model, lora


def fit(model: torch.nn.Module, encoded: list, opt: FineTuneSettings, pad_id: int, seed: int,
        progress: bool) -> list[float]:
    """The training loop over ``(input_ids, labels)`` pairs; returns the mean answer-token loss of each epoch
    (nats per token)."""
    steps_per_epoch = math.ceil(len(encoded) / opt.batch_size)
    optimizer, scheduler = adamw_linear(model, opt, steps_per_epoch * opt.epochs, warmup_offset=0,
                                        no_decay=lambda name, p: p.ndim < 2 or name.endswith(".bias"))
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    epoch_losses = []
    for epoch in range(opt.epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        total, tokens = 0.0, 0
        bar = StepProgress(range(steps_per_epoch), steps_per_epoch, f"fine-tuning epoch {epoch + 1}/{opt.epochs}",
                           progress, logger)
        for step in bar:
            batch = collate([encoded[i] for i in order[step * opt.batch_size:(step + 1) * opt.batch_size]], pad_id)
            loss, n = answer_loss(model, batch)
            loss.backward()
            if opt.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total, tokens = total + loss.detach().item() * n, tokens + n
            bar.step(total / max(tokens, 1))
        bar.close()
        epoch_losses.append(total / max(tokens, 1))
        if progress:
            logger.info("epoch %d/%d done: mean answer-token loss %.4f", epoch + 1, opt.epochs, epoch_losses[-1])
    model.eval()
    return epoch_losses


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, encoded: list, batch_size: int, pad_id: int) -> float:
    """Mean answer-token cross-entropy (nats per token) of ``encoded`` pairs under ``model`` (eval mode)."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        loss, n = answer_loss(model, collate(encoded[start:start + batch_size], pad_id))
        total, tokens = total + float(loss) * n, tokens + n
    return total / max(tokens, 1)


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id (padding positions are masked out anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
