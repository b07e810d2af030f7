"""The language-model demo's adapted models: a LoRA adapter (default) or a full fine-tune of a causal LM.

Training data: multiple-choice rows in the ARC format (``question``, ``choices{text[], label[]}``, ``answerKey``),
each turned into one prompt -> answer pair: ``"Question: {question}\\nAnswer:"`` + ``" "`` + the text of the correct
choice, exactly the format lm-eval's ``arc_easy`` task scores (``doc_to_text``, ``target_delimiter``,
``doc_to_choice``), so the multiple-choice evaluation reads what the model was trained on. The loss is the
cross-entropy of the answer tokens only (prompt and padding positions carry label -100); token boundaries follow
lm-eval's ``_encode_pair``: the answer's tokens are those of ``prompt + delimiter + answer`` after the prompt's.

Optimisation: AdamW (no weight decay on biases and norm weights), linear warmup then linear decay, gradient
clipping, seeded shuffling and LoRA initialisation. Output: an ordinary PEFT adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) or a full checkpoint folder (``model.safetensors``),
each with the tokenizer and :data:`RECORD` (settings, data fingerprint, losses, seconds), written to a temporary
sibling folder and renamed into place when complete. :func:`adapted_lm_dir` caches the result under
``cache_root()/lm-demo-models/<key>`` where the key hashes everything that can change the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from harness.errors import DataError, ModelError, format_error
from harness.demo.lm_assets import quiet_transformers
from harness.io import cache_root, ensure_dir
from harness.spec.training import FineTuneSettings, LmSettings, LoraSettings, TrainingSettings

__all__ = ["LM_DATA_DIR", "RECORD", "read_jsonl", "arc_pairs", "encode_pairs", "collate", "answer_loss", "train_causal_lm",
           "adapted_lm_dir"]

logger = logging.getLogger(__name__)

#: The committed LM data (ARC-Easy, ARC-Challenge, a BoolQ prefix); sources and licences in its NOTICE.md.
LM_DATA_DIR = Path(__file__).resolve().parent.parent / "resources" / "llm_data"
#: Written last into every finished model folder: the training record.
RECORD = "training_record.json"
#: Bump when a code change alters what training produces for the same inputs (invalidates cached models).
_FORMAT_VERSION = 1
_LOG_EVERY = 20  # optimiser steps between log lines when stderr is not a terminal


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (UTF-8, one object per line; blank lines skipped).

    Raises
    ------
    DataError
        If the file cannot be read or a line is not a JSON object (the message names the line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(format_error("cannot read the training data", where=str(path), got=e.strerror,
                                     fix="check the path (relative to harness/resources/llm_data)")) from e
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(format_error("a line is not valid JSON", where=f"{path}:{number}", got=str(e))) from e
        if not isinstance(row, dict):
            raise DataError(format_error("a line is not a JSON object", where=f"{path}:{number}",
                                         got=type(row).__name__))
        rows.append(row)
    return rows


def arc_pairs(rows: Sequence[dict[str, Any]], lm: LmSettings) -> list[tuple[str, str]]:
    """ARC-format rows -> ``(prompt, answer)`` pairs; ``answer`` starts with ``lm.target_delimiter``.

    The gold choice is the position of ``answerKey`` in ``choices.label`` (some rows use "1".."4").

    Raises
    ------
    DataError
        If a row lacks a field or its ``answerKey`` is not one of its labels.
    """
    pairs = []
    for i, row in enumerate(rows):
        try:
            labels, texts = row["choices"]["label"], row["choices"]["text"]
            gold = labels.index(row["answerKey"])
            pairs.append((lm.prompt.replace("{question}", row["question"]), lm.target_delimiter + texts[gold]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(format_error("a training row is not in the ARC format", where=f"row {i} "
                                         f"(id {row.get('id', '?') if isinstance(row, dict) else '?'})",
                                         expected="question, choices{text[], label[]}, answerKey in choices.label",
                                         got=repr(e))) from e
    return pairs


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
    labels = batch["labels"]
    answer_len = int((labels != -100).sum(-1).max())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=answer_len + 1).logits
    targets = labels[:, -answer_len:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=-100, reduction="sum")
    n = int((targets != -100).sum())
    return loss / max(n, 1), n


def _optimizer(model: torch.nn.Module, opt: FineTuneSettings, total_steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and 1-d norm weights) with linear warmup then linear decay to 0."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=opt.learning_rate)
    warmup = int(round(opt.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prepare(model_dir: Path, settings: TrainingSettings, adaptation: str) -> tuple[Any, Any, FineTuneSettings]:
    """Load tokenizer and model (float32); wrap the model with LoRA for ``adaptation == "lora"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelError(format_error("cannot load the causal language model to fine-tune", where=str(model_dir),
                                      got=str(e), fix="point at a transformers causal-LM folder")) from e
    if adaptation == "full":
        return tokenizer, model, settings.full
    from peft import LoraConfig, get_peft_model

    lora: LoraSettings = settings.lora
    n_layers = model.config.num_hidden_layers
    layers = None if lora.last_layers is None else list(range(max(0, n_layers - lora.last_layers), n_layers))
    config = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), layers_to_transform=layers)
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        raise ModelError(format_error("LoRA target modules not found in the model", where="lora.target_modules",
                                      got=lora.target_modules, fix="name linear layers of the model, e.g. q_proj, "
                                      "v_proj")) from e
    return tokenizer, model, lora


def _fit(model: torch.nn.Module, encoded: list, opt: FineTuneSettings, pad_id: int, seed: int,
         progress: bool) -> list[float]:
    """The training loop; returns the mean answer-token loss of each epoch (nats per token)."""
    steps_per_epoch = math.ceil(len(encoded) / opt.batch_size)
    optimizer, scheduler = _optimizer(model, opt, steps_per_epoch * opt.epochs)
    generator = torch.Generator().manual_seed(seed)
    interactive = progress and sys.stderr.isatty()
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    epoch_losses = []
    for epoch in range(opt.epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        total, tokens = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"fine-tuning epoch {epoch + 1}/{opt.epochs}", unit="step",
                   disable=not interactive, leave=False)
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
            bar.set_postfix(loss=f"{total / tokens:.3f}")
            if progress and not interactive and (step + 1) % _LOG_EVERY == 0:
                logger.info("epoch %d/%d step %d/%d: answer-token loss %.4f", epoch + 1, opt.epochs, step + 1,
                            steps_per_epoch, total / tokens)
        bar.close()
        epoch_losses.append(total / max(tokens, 1))
        if progress:
            logger.info("epoch %d/%d done: mean answer-token loss %.4f", epoch + 1, opt.epochs, epoch_losses[-1])
    model.eval()
    return epoch_losses


def _training_rows(settings: TrainingSettings, opt: FineTuneSettings, data_dir: Path) -> tuple[list, str]:
    """The (capped, seeded sample of) training rows and the sha256 of the training file."""
    path = data_dir / settings.lm.train_file
    rows = read_jsonl(path)
    if opt.max_train_examples is not None and opt.max_train_examples < len(rows):
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(settings.seed))
        rows = [rows[i] for i in sorted(keep[:opt.max_train_examples].tolist())]
    return rows, hashlib.sha256(path.read_bytes()).hexdigest()


def train_causal_lm(model_dir: str | Path, out_dir: str | Path, settings: TrainingSettings, *,
                    adaptation: Literal["lora", "full", "reft"] = "lora", data_dir: str | Path | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Fine-tune the causal LM in ``model_dir`` on ``settings.lm`` pairs and save the result to ``out_dir``.

    Parameters
    ----------
    model_dir : str or Path
        A transformers causal-LM folder (with its tokenizer), e.g. :func:`harness.demo.lm_assets.smollm2_dir`.
    out_dir : str or Path
        Folder to create (must not exist): a PEFT adapter (``lora``), a full checkpoint (``full``) or a harness
        ReFT folder (``reft``, :mod:`harness.models.reft_io`), safetensors, plus the tokenizer and :data:`RECORD`.
    settings : TrainingSettings
        Resolved settings with ``task == "causal_lm"``; ``settings.lora``, ``settings.full`` or
        ``settings.reft`` gives the optimisation, ``settings.lm`` the data and prompt, ``settings.max_length`` the
        tokens per pair.
    adaptation : {"lora", "full", "reft"}, default="lora"
    data_dir : str or Path, default=None
        Folder ``settings.lm.train_file`` is relative to; ``None``: :data:`LM_DATA_DIR`.
    progress : bool, default=True
        tqdm bars on a terminal; otherwise a log line every few steps and per epoch.

    Returns
    -------
    dict
        The training record (also in ``out_dir / RECORD``): adaptation, settings, data sha256, n pairs,
        n truncated, per-epoch answer-token loss (nats per token), trainable parameters, seconds.

    Raises
    ------
    SpecError-like ValueError
        ``ValueError`` if ``settings.task`` is not ``causal_lm`` or ``adaptation`` is unknown.
    DataError, ModelError
        If the data or the model cannot be read, or no pair fits ``max_length``.
    """
    if settings.task != "causal_lm" or settings.lm is None:
        raise ValueError(f"train_causal_lm needs settings with task causal_lm; got task {settings.task!r}")
    if adaptation not in ("lora", "full", "reft"):
        raise ValueError(f"adaptation must be 'lora', 'full' or 'reft'; got {adaptation!r}")
    if adaptation == "reft":
        return _train_reft(Path(model_dir), Path(out_dir), settings, Path(data_dir) if data_dir else LM_DATA_DIR,
                           progress)
    started = time.perf_counter()
    cpu_started = time.process_time()
    torch.manual_seed(settings.seed)
    tokenizer, model, opt = _prepare(Path(model_dir), settings, adaptation)
    rows, data_sha = _training_rows(settings, opt, Path(data_dir) if data_dir else LM_DATA_DIR)
    encoded, n_truncated = encode_pairs(tokenizer, arc_pairs(rows, settings.lm), settings.max_length)
    if not encoded:
        raise DataError(format_error("no training pair fits max_length", where=settings.lm.train_file,
                                     got=f"max_length {settings.max_length}", fix="raise max_length"))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses = _fit(model, encoded, opt, pad_id, settings.seed, progress)
    record = {"format_version": _FORMAT_VERSION, "adaptation": adaptation, "settings": settings.model_dump(),
              "train_file": settings.lm.train_file, "train_sha256": data_sha, "n_pairs": len(encoded),
              "n_truncated": n_truncated, "epoch_loss": losses,
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu_started, 1), "base": str(model_dir)}
    _save(model, tokenizer, Path(out_dir), record)
    return record


def _train_reft(model_dir: Path, out_dir: Path, settings: TrainingSettings, data_dir: Path,
                progress: bool) -> dict[str, Any]:
    """``adaptation="reft"``: interventions trained on the frozen base (:func:`harness.demo.reft_train.train_reft`,
    the same prompt -> answer pairs), saved in the harness ReFT format with the base's fingerprint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.demo.reft_train import ReftTrainConfig, train_reft
    from harness.models.load import model_fingerprint
    from harness.models.reft_io import save_reft

    opt = settings.reft
    if opt is None:
        raise ModelError(format_error("the training settings have no `reft:` section", where="training-lm-demo.yaml",
                                      fix="add a reft block (layers, positions, rank, epochs, learning_rate, "
                                          "batch_size)"))
    started, cpu_started = time.perf_counter(), time.process_time()
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows, data_sha = _training_rows(settings, opt, data_dir)
    cfg = ReftTrainConfig(kind=opt.kind, layers=tuple(opt.layers), positions=opt.positions, rank=opt.rank,
                          lr=opt.learning_rate, weight_decay=opt.weight_decay, epochs=opt.epochs,
                          batch_size=opt.batch_size, max_length=settings.max_length, seed=settings.seed,
                          progress=progress and sys.stderr.isatty())
    adapter, stats = train_reft(model, tokenizer, arc_pairs(rows, settings.lm), cfg)
    record = {"format_version": _FORMAT_VERSION, "adaptation": "reft", "settings": settings.model_dump(),
              "train_file": settings.lm.train_file, "train_sha256": data_sha, "n_pairs": stats.examples,
              "epoch_loss": stats.epoch_losses, "trainable_parameters": adapter.n_params,
              "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu_started, 1), "base": str(model_dir)}
    logger.info("trained %s: %d steps, loss %.4f -> %.4f (epoch means %s), %.0f s", adapter.describe(), stats.steps,
                stats.first_step_loss, stats.last_step_loss, [round(x, 4) for x in stats.epoch_losses],
                stats.seconds)

    def write(staging: Path) -> None:
        save_reft(adapter, staging, base_name=str(model_dir), base_fingerprint=model_fingerprint(model_dir),
                  base_model_type=model.config.model_type, training=adapter.info["training"])
        tokenizer.save_pretrained(staging)

    _save_with(write, out_dir, record)
    return record


def _save(model: Any, tokenizer: Any, out_dir: Path, record: dict[str, Any]) -> None:
    """save_pretrained (safetensors) + tokenizer + record into a temporary sibling, then rename onto ``out_dir``."""
    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    _save_with(write, out_dir, record)


def _save_with(write, out_dir: Path, record: dict[str, Any]) -> None:
    """``write(staging)`` + record into a temporary sibling, then rename onto ``out_dir``."""
    if out_dir.exists():
        raise ModelError(format_error("the output folder exists already", where=str(out_dir),
                                      fix="choose a new folder or delete it"))
    ensure_dir(out_dir.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(staging)
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _model_fingerprint(model_dir: Path) -> str:
    """sha256 of the base's safetensors files (names and bytes), so a different base gives a different key."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def adapted_lm_dir(model_dir: str | Path, settings: TrainingSettings, *,
                   adaptation: Literal["lora", "full", "reft"] = "lora",
                   data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The adapted model for ``(base, settings, adaptation, data)``, trained on first use and cached.

    The folder is ``cache_root()/lm-demo-models/<adaptation>-<first 16 hex of the key>``; the key is the sha256
    of the base weights, the resolved settings, the adaptation, the training file's bytes and a format version.
    A folder is reused only when it holds :data:`RECORD` (folders appear whole, by rename). Parameters and errors as :func:`train_causal_lm`.
    """
    model_dir = Path(model_dir)
    data_root = Path(data_dir) if data_dir else LM_DATA_DIR
    if settings.lm is None:
        raise ValueError(f"adapted_lm_dir needs settings with task causal_lm; got task {settings.task!r}")
    key_obj = {"format_version": _FORMAT_VERSION, "base": _model_fingerprint(model_dir), "adaptation": adaptation,
               "settings": settings.model_dump(mode="json"),
               "train_sha256": hashlib.sha256((data_root / settings.lm.train_file).read_bytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()
    target = cache_root() / "lm-demo-models" / f"{adaptation}-{key[:16]}"
    if (target / RECORD).is_file():
        logger.info("reusing the %s fine-tune in %s", adaptation, target)
        return target
    train_causal_lm(model_dir, target, settings, adaptation=adaptation, data_dir=data_root, progress=progress)
    return target
