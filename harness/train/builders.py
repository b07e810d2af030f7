"""The training runs behind ``harness train`` (:mod:`harness.train.command` checks the inputs first).

- **Classification**: the base is a sentence-transformers folder (mean pooling, as the demo's MiniLM) or a
  sequence-classification checkpoint with a linear head (``classifier`` or ``score``). ``probe`` fits the head
  (C chosen on validation accuracy), ``full`` and ``lora`` train from the base's head, which must already be
  trained for the suite's classes in their order (a folder without such a head is refused: training would start
  from a random head, and a sweep would evaluate it), ``lpft`` writes ``OUT/base`` (the probe) and
  ``OUT/adapted`` (every weight fine-tuned from it), reloading the probe from disk exactly as the demo does.
- **Multiple choice** (causal LM): each train row becomes ``(prompt, target_delimiter + correct choice)`` with the
  suite's own prompt template (its few-shot block left out; chat wrapping kept), the loss on the answer tokens
  only; the answer-token loss of the validation rows is measured before and after training.

Every folder gets ``training.json``: settings, data fingerprints, rows used, epochs, losses per epoch, validation
results, wall and CPU seconds, threads, device and library versions.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from harness.errors import DataError, ModelError, SpecError, format_error
from harness.io import library_versions, sha256_file
from harness.records import SplitData
from harness.settings import Settings
from harness.train import classifier as clf
from harness.train.causal import encode_pairs, fit, pad_id_of, prepare_model, validation_loss
from harness.train.command import RECORD, TrainJob, TrainResult
from harness.train.loop import quiet_loading, save_model_folder

__all__ = ["run", "load_classifier", "mc_pairs"]

logger = logging.getLogger(__name__)
_FORMAT_VERSION = 1


def run(job: TrainJob, train: SplitData, validation: SplitData, settings: Settings) -> TrainResult:
    """Train as ``job`` says on the loaded splits; returns where the model folders are."""
    torch.set_num_threads(settings.effective_threads)
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = {"device": device, "progress": settings.progress}
    if job.suite.task_name == "multiple_choice":
        record = _train_causal(job, job.base, job.out, train, validation, **ctx)
        return TrainResult(job.method, job.out, job.base, {str(job.out): record})
    classes = clf.check_splits(train, validation)
    if job.method == "probe":
        return TrainResult("probe", job.out, None, {str(job.out): _probe(job, job.out, train, validation, classes,
                                                                          **ctx)})
    if job.method in ("full", "lora"):
        record = _fine_tune(job, job.base, job.out, job.method, train, validation, classes, **ctx)
        return TrainResult(job.method, job.out, job.base, {str(job.out): record})
    base_dir, adapted_dir = job.out / "base", job.out / "adapted"
    records = {str(base_dir): _probe(job, base_dir, train, validation, classes, **ctx)}
    records[str(adapted_dir)] = _fine_tune(job, base_dir, adapted_dir, "full", train, validation, classes, **ctx)
    return TrainResult("lpft", adapted_dir, base_dir, records)


# --- the record -------------------------------------------------------------------------------------------------


def _record(job: TrainJob, stage: str, base: Path, train: SplitData, validation: SplitData, device: str,
            started: tuple[float, float], result: dict[str, Any]) -> dict[str, Any]:
    """training.json: what was trained, from what, on which rows, with which settings, and what was measured."""
    weights = sorted(p for p in Path(base).glob("*.safetensors"))
    return {"format_version": _FORMAT_VERSION, "method": stage, "command_method": job.method,
            "task": job.suite.task_name, "base": str(Path(base).resolve()),
            "base_sha256": {p.name: sha256_file(p) for p in weights},
            "training_file": {"path": str(job.spec_path.resolve()), "name": job.spec.name,
                              "version": job.spec.version, "sha256": sha256_file(job.spec_path),
                              "profile": job.profile},
            "settings": job.settings.model_dump(mode="json"),
            "suite": {"name": job.suite.name, "version": job.suite.version, "path": str(job.suite_path.resolve()),
                      "classes": list(job.suite.classes or [])},
            "data": {role: {"split": split.ref.split, "fingerprint": split.ref.fingerprint, "n_rows": len(split),
                            "n_dropped": split.n_dropped}
                     for role, split in (("train", train), ("validation", validation))},
            **result, "device": device, "threads": torch.get_num_threads(),
            "wall_seconds": round(time.perf_counter() - started[0], 2),
            "cpu_seconds": round(time.process_time() - started[1], 2), "versions": library_versions()}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# --- classification ---------------------------------------------------------------------------------------------


def _is_sentence_transformer(path: Path) -> bool:
    import json

    if not (path / "modules.json").is_file():
        return False
    try:
        archs = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return True
    return not any(str(a).endswith("ForSequenceClassification") for a in archs)


def _labels_match(id2label: dict[int, str], classes: tuple[str, ...]) -> bool:
    names = [str(id2label.get(i, "")) for i in range(len(classes))]
    return names == list(classes) or names == [f"LABEL_{i}" for i in range(len(classes))]


def load_classifier(base: Path, classes: tuple[str, ...]) -> tuple[Any, Any, str | None]:
    """``(model, tokenizer, why_untrained)``: the base as a classifier over ``classes`` (float32, CPU) and why its
    head cannot be trained from (``None`` when it can: a head of the suite's size whose labels are the suite's
    classes in order, or generic ``LABEL_i``).

    Raises
    ------
    ModelError
        Not a folder, a PEFT adapter, a checkpoint missing encoder weights, or one transformers cannot load.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from harness.models.checks import head_keys
    from harness.models.load import is_adapter_dir, load_tokenizer
    from harness.models.pooling import from_sentence_transformer, register

    if not base.is_dir():
        raise ModelError(format_error("the base model folder does not exist", where=str(base),
                                      fix="pass a sentence-transformers folder or a classifier checkpoint"))
    if is_adapter_dir(base):
        raise ModelError(format_error("--base is a PEFT adapter, not a full model", where=str(base),
                                      fix="pass the full model (the adapter's base, or a merged checkpoint)"))
    register()
    id2label = dict(enumerate(classes))
    tokenizer = load_tokenizer(base)
    if _is_sentence_transformer(base):
        model = from_sentence_transformer(base, num_labels=len(classes), id2label=id2label)
        return model, tokenizer, f"{base} is a sentence-transformers folder (no classification head)"
    try:
        with quiet_loading():
            old = AutoConfig.from_pretrained(base)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                base, num_labels=len(classes), id2label=id2label, label2id={c: i for i, c in id2label.items()},
                ignore_mismatched_sizes=True, output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(format_error("cannot load the base as a sequence classifier", where=str(base),
                                      got=str(e)[:300], fix="pass a classifier checkpoint or a "
                                      "sentence-transformers folder")) from e
    heads = head_keys(model.state_dict().keys(), getattr(model, "base_model_prefix", None))
    missing = set(info.get("missing_keys") or ()) | {str(k[0] if isinstance(k, tuple) else k)
                                                     for k in info.get("mismatched_keys") or ()}
    body = sorted(k for k in missing if k not in heads)
    if body:
        raise ModelError(format_error("the base checkpoint lacks weights of its encoder", where=str(base),
                                      got=f"{len(body)} missing, e.g. {body[:3]}",
                                      fix="check that config.json and the weights belong to the same model"))
    old_labels = {int(k): str(v) for k, v in (old.id2label or {}).items()}
    if missing or old.num_labels != len(classes):
        return model, tokenizer, f"{base} has no trained head for the suite's {len(classes)} classes"
    if not _labels_match(old_labels, classes):
        return model, tokenizer, (f"the head of {base} predicts {[old_labels[i] for i in sorted(old_labels)]}, "
                                  f"the suite's classes are {list(classes)}")
    return model, tokenizer, None


def _save(model, tokenizer, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write the model folder with its record; returns the record."""
    with quiet_loading():
        save_model_folder(model.to("cpu"), tokenizer, out, record, RECORD)
    logger.info("wrote %s", out)
    return record


def _probe(job: TrainJob, out: Path, train: SplitData, validation: SplitData, classes: tuple[str, ...], *,
           device: str, progress: bool) -> dict[str, Any]:
    started, s = _clock(), job.settings
    torch.manual_seed(s.seed)
    model, tokenizer, _ = load_classifier(job.base, classes)
    model.to(device)
    frame = clf.subsample(train.frame, s.probe.max_train_examples, s.seed)
    info = clf.probe_head(model, tokenizer, frame, validation.frame, s.probe, seed=s.seed,
                          max_length=s.max_length, device=device, progress=progress)
    result = {"n_train_examples": info["n_train"], "n_validation_examples": info["n_validation"], "epochs": 0,
              "loss_per_epoch": [], "probe": info, "validation": {"accuracy": info["val_accuracy"]}}
    return _save(model, tokenizer, out, _record(job, "probe", job.base, train, validation, device, started, result))


def _fine_tune(job: TrainJob, base: Path, out: Path, method: str, train: SplitData, validation: SplitData,
               classes: tuple[str, ...], *, device: str, progress: bool) -> dict[str, Any]:
    started, s = _clock(), job.settings
    torch.manual_seed(s.seed)
    model, tokenizer, why = load_classifier(base, classes)
    if why is not None:
        raise SpecError(format_error(f"--method {method} trains from the base's classification head, which is not "
                                     "trained for this suite", where=str(base), got=why,
                                     fix="train the head first: harness train --method probe (then pass its "
                                         "folder as --base), or --method lpft (probe and fine-tune in one run)"))
    ft = s.full if method == "full" else s.lora
    if method == "lora":
        model = clf.wrap_lora(model, s.lora, head=clf.head_module(model)[0])
    model.to(device)
    frame = clf.subsample(train.frame, ft.max_train_examples, s.seed)
    info = clf.fine_tune(model, tokenizer, frame, validation.frame, ft, seed=s.seed, max_length=s.max_length,
                         device=device, progress=progress)
    if method == "lora":
        model.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    result = {"n_train_examples": info["n_train"], "n_validation_examples": info["n_validation"],
              "epochs": ft.epochs, "steps": info["steps"], "loss_per_epoch": info["loss_per_epoch"],
              "train_seconds": info["train_seconds"], "validation": {"accuracy": info["val_accuracy"]},
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return _save(model, tokenizer, out, _record(job, method, base, train, validation, device, started, result))


# --- multiple choice (causal LM) --------------------------------------------------------------------------------


def mc_pairs(suite, split: SplitData, tokenizer: Any) -> list[tuple[str, str]]:
    """``(prompt, target_delimiter + correct choice)`` per row of a multiple-choice split, with the suite's prompt
    template (chat-wrapped when the suite says ``chat: true``) and without its few-shot block."""
    from harness.data.lm_rows import each_row
    from harness.tasks.lm_common import PromptBuilder, mc_target

    spec = suite.task
    build = PromptBuilder(spec.prompt.model_copy(update={"fewshot": None}), None, None, tokenizer)
    # a bad row's error names the suite, split, row and field (harness.data.lm_rows.each_row)
    return each_row(split, lambda row: (build(row), spec.prompt.target_delimiter + mc_target(spec, row)))


def _encoded(suite, split: SplitData, tokenizer, max_length: int, cap: int | None, seed: int) -> tuple[list, int]:
    pairs = mc_pairs(suite, split, tokenizer)
    if cap is not None and cap < len(pairs):
        keep = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
        pairs = [pairs[i] for i in sorted(keep[:cap].tolist())]
    encoded, n_truncated = encode_pairs(tokenizer, pairs, max_length)
    if not encoded:
        raise DataError(format_error("no training pair fits max_length", where=split.ref.key,
                                     got=f"max_length {max_length}", fix="raise max_length in the training file"))
    return encoded, n_truncated


def _train_causal(job: TrainJob, base: Path, out: Path, train: SplitData, validation: SplitData, *, device: str,
                  progress: bool) -> dict[str, Any]:
    started, s = _clock(), job.settings
    torch.manual_seed(s.seed)
    tokenizer, model, opt = prepare_model(Path(base), s, job.method)
    model.to(device)
    encoded, n_truncated = _encoded(job.suite, train, tokenizer, s.max_length, opt.max_train_examples, s.seed)
    val_encoded, _ = _encoded(job.suite, validation, tokenizer, s.max_length, None, s.seed)
    pad = pad_id_of(tokenizer)
    before = validation_loss(model, val_encoded, opt.batch_size, pad)
    losses = fit(model, encoded, opt, pad, s.seed, progress)
    after = validation_loss(model, val_encoded, opt.batch_size, pad)
    logger.info("validation answer-token loss %.4f -> %.4f", before, after)
    if job.method == "lora":
        model.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    result = {"n_train_examples": len(encoded), "n_truncated": n_truncated, "n_validation_examples": len(val_encoded),
              "epochs": opt.epochs, "loss_per_epoch": losses,
              "validation": {"answer_loss_before": before, "answer_loss_after": after},
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return _save(model, tokenizer, out, _record(job, job.method, base, train, validation, device, started, result))
