"""The language-model demo's adapted models: a LoRA adapter (default) or a full fine-tune of a causal LM.

Training data: multiple-choice rows in the ARC format (``question``, ``choices{text[], label[]}``, ``answerKey``),
each turned into one prompt -> answer pair: ``"Question: {question}\\nAnswer:"`` + ``" "`` + the text of the correct
choice, exactly the format lm-eval's ``arc_easy`` task scores (``doc_to_text``, ``target_delimiter``,
``doc_to_choice``), so the multiple-choice evaluation reads what the model was trained on. The loss is the
cross-entropy of the answer tokens only (prompt and padding positions carry label -100); token boundaries follow
lm-eval's ``_encode_pair``: the answer's tokens are those of ``prompt + delimiter + answer`` after the prompt's.

Optimisation: AdamW (no weight decay on biases and norm weights), linear warmup then linear decay, gradient
clipping, seeded shuffling and LoRA initialisation (:mod:`harness.train.causal`). Output: an ordinary PEFT adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) or a full checkpoint folder (``model.safetensors``),
each with the tokenizer and :data:`RECORD` (settings, data fingerprint, losses, seconds), written to a temporary
sibling folder and renamed into place when complete. :func:`adapted_lm_dir` caches the result under
``cache_root()/lm-demo-models/<key>`` where the key hashes everything that can change the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from harness.errors import DataError, ModelError, format_error
from harness.io import cache_root
from harness.progress import progress_bar
from harness.spec.training import FineTuneSettings, LmSettings, TrainingSettings
from harness.train.causal import answer_loss, collate, encode_pairs, fit, pad_id_of, prepare_model
from harness.train.loop import quiet_loading, save_folder, save_model_folder

__all__ = ["LM_DATA_DIR", "RECORD", "read_jsonl", "arc_pairs", "encode_pairs", "collate", "answer_loss", "train_causal_lm",
           "adapted_lm_dir"]

logger = logging.getLogger(__name__)

#: The committed LM data (ARC-Easy, ARC-Challenge, a BoolQ prefix); sources and licences in its NOTICE.md.
LM_DATA_DIR = Path(__file__).resolve().parent.parent / "resources" / "llm_data"
#: Written last into every finished model folder: the training record.
RECORD = "training_record.json"
#: Bump when a code change alters what training produces for the same inputs (invalidates cached models).
_FORMAT_VERSION = 1


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
    tokenizer, model, opt = prepare_model(Path(model_dir), settings, adaptation)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # not part of the cache key
    model.to(device)
    rows, data_sha = _training_rows(settings, opt, Path(data_dir) if data_dir else LM_DATA_DIR)
    encoded, n_truncated = encode_pairs(tokenizer, arc_pairs(rows, settings.lm), settings.max_length)
    if not encoded:
        raise DataError(format_error("no training pair fits max_length", where=settings.lm.train_file,
                                     got=f"max_length {settings.max_length}", fix="raise max_length"))
    losses = fit(model, encoded, opt, pad_id_of(tokenizer), settings.seed, progress)
    record = {"format_version": _FORMAT_VERSION, "adaptation": adaptation, "settings": settings.model_dump(),
              "train_file": settings.lm.train_file, "train_sha256": data_sha, "n_pairs": len(encoded),
              "n_truncated": n_truncated, "epoch_loss": losses,
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "threads": torch.get_num_threads(), "device": str(device),
              "seconds": round(time.perf_counter() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu_started, 1), "base": str(model_dir)}
    save_model_folder(model, tokenizer, Path(out_dir), record, RECORD, safe_serialization=True)
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
    with quiet_loading():
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

    save_folder(write, out_dir, record, RECORD)
    return record


def _model_fingerprint(model_dir: Path, progress: bool = False) -> str:
    """sha256 of the base's safetensors files (names and bytes), so a different base gives a different key; with
    ``progress``, a bar over the bytes on a terminal (SmolLM2's 540 MB take seconds on a loaded CPU)."""
    digest = hashlib.sha256()
    paths = sorted(model_dir.glob("*.safetensors"))
    with progress_bar(total=sum(p.stat().st_size for p in paths), desc="sha256 of the base weights", unit="B",
                      unit_scale=True, show=progress) as bar:
        for path in paths:
            digest.update(path.name.encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
                    bar.update(len(chunk))
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
    key_obj = {"format_version": _FORMAT_VERSION, "base": _model_fingerprint(model_dir, progress),
               "adaptation": adaptation,
               "settings": settings.model_dump(mode="json"),
               "train_sha256": hashlib.sha256((data_root / settings.lm.train_file).read_bytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()
    target = cache_root() / "lm-demo-models" / f"{adaptation}-{key[:16]}"
    if (target / RECORD).is_file():
        logger.info("reusing the %s fine-tune in %s", adaptation, target)
        return target
    train_causal_lm(model_dir, target, settings, adaptation=adaptation, data_dir=data_root, progress=progress)
    return target
