"""``harness train``: a ``kind: training`` file + an ID suite + a base model -> a trained model folder and
``training.json``.

Checks come first, before any model is loaded: the training file's kind and profile, the suite's role (ID), its
train and validation splits, its task (classification or multiple choice) against the training file's task
(``classifier`` or ``causal_lm``), the method against the task, and an output folder that does not exist yet.
Then the train and validation splits are loaded (the rows :func:`harness.data.sources.load_splits` gives every
other command) and handed to :mod:`harness.train.builders`. Nothing is chosen on a test split: the probe's C is
chosen on the validation split, which is also scored after training.

Methods (:data:`METHODS`): ``probe``, ``lpft`` (classification only), ``full`` and ``lora``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ModelError, SpecError, format_error, unknown_name
from harness.settings import Settings
from harness.spec.load import load_spec, load_suite
from harness.spec.schema import Suite
from harness.spec.training import TrainingSettings, TrainingSpec

__all__ = ["METHODS", "RECORD", "TrainJob", "TrainResult", "plan", "train_model"]

logger = logging.getLogger(__name__)

#: The training record written into every model folder ``harness train`` makes.
RECORD = "training.json"
#: method -> the suite tasks it applies to
METHODS: dict[str, tuple[str, ...]] = {"probe": ("classification",), "lpft": ("classification",),
                                       "full": ("classification", "multiple_choice"),
                                       "lora": ("classification", "multiple_choice")}
_TRAINING_TASK = {"classification": "classifier", "multiple_choice": "causal_lm"}
_DEFAULT_METHOD = {"classification": "lpft", "multiple_choice": "lora"}


@dataclass(frozen=True)
class TrainResult:
    """What ``harness train`` wrote.

    ``model_dir`` is the trained model (a safetensors checkpoint, or a PEFT adapter folder for ``lora``; for
    ``lpft`` the fine-tuned ``OUT/adapted``); ``base_dir`` is the model to sweep it against (``OUT/base`` for
    ``lpft``, the ``--base`` for ``full`` and ``lora``, ``None`` for ``probe``, whose output is itself a base);
    ``records`` maps each written folder to its ``training.json`` content.
    """

    method: str
    model_dir: Path
    base_dir: Path | None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainJob:
    """Everything checked before training: resolved settings, the suite and its split names, method, paths."""

    spec: TrainingSpec
    spec_path: Path
    settings: TrainingSettings
    profile: str | None
    suite: Suite
    suite_path: Path
    train_split: str
    validation_split: str
    method: str
    base: Path
    out: Path


def _split_of(suite: Suite, role: str, suite_path: Path) -> str:
    names = [s.name for s in suite.splits if s.role.value == role]
    if not names:
        have = ", ".join(f"{s.name} ({s.role.value})" for s in suite.splits) or "none"
        raise SpecError(format_error(f"suite {suite.name!r} has no {role} split", where=str(suite_path),
                                     expected=f"a split with role: {role}", got=have,
                                     fix=f"add a {role} split to the suite (e.g. {{name: {role}, role: {role}, "
                                         "fraction: 0.7}), or point --suite at the suite you train on"))
    if len(names) > 1:
        logger.warning("suite %s has %d %s splits; using the first, %s", suite.name, len(names), role, names[0])
    return names[0]


def _resolve_settings(spec: TrainingSpec, profile: str | None, path: Path) -> TrainingSettings:
    if profile is None:
        return spec.resolve(None)
    if profile not in spec.profiles:
        raise SpecError(unknown_name(f"training profile of {path}", profile, spec.profiles))
    return spec.resolve(profile)


def plan(training: str | Path, suite: str | Path, base: str | Path, out: str | Path, *, method: str | None,
         profile: str | None) -> TrainJob:
    """Check the inputs of a training run and resolve its settings (loads no model and no data rows).

    Raises
    ------
    SpecError
        Wrong kind of file, unknown profile or method, a shift suite, no train or validation split, a task that
        cannot be trained, a training file for the other task, or an existing output folder.
    ModelError
        If ``base`` is not a folder.
    """
    spec_path, suite_path, out = Path(training), Path(suite), Path(out)
    spec = load_spec(spec_path, kind="training")
    settings = _resolve_settings(spec, profile, spec_path)
    suite_obj = load_suite(suite_path)
    task = suite_obj.task_name
    if task not in _TRAINING_TASK:
        raise SpecError(format_error(f"harness train cannot train on a {task} suite", where=str(suite_path),
                                     expected="task classification or multiple_choice", got=task,
                                     fix="train on a classification or multiple-choice suite"))
    if suite_obj.role.value != "id":
        raise SpecError(format_error("harness train trains on an ID suite", where=str(suite_path),
                                     expected="role: id", got=f"role: {suite_obj.role.value}",
                                     fix="pass the in-distribution suite; shift suites are for evaluation"))
    if settings.task != _TRAINING_TASK[task]:
        raise SpecError(format_error("the training file is for another kind of model", where=str(spec_path),
                                     expected=f"task: {_TRAINING_TASK[task]} (the suite's task is {task})",
                                     got=f"task: {settings.task}",
                                     fix="use a training file written for this kind of suite (see suites/"
                                         "training-demo.yaml and suites/training-lm-demo.yaml)"))
    method = method or _DEFAULT_METHOD[task]
    if method not in METHODS:
        raise SpecError(unknown_name("training method", method, METHODS))
    if task not in METHODS[method]:
        raise SpecError(format_error(f"method {method} does not apply to a {task} suite", where="--method",
                                     expected=[m for m, tasks in METHODS.items() if task in tasks], got=method))
    if out.exists():
        raise SpecError(format_error("the output folder exists already", where=str(out),
                                     fix="choose a new folder or delete it"))
    if not Path(base).is_dir():
        raise ModelError(format_error("the base model folder does not exist", where=str(base),
                                      fix="pass a local model folder: a sentence-transformers folder or a classifier "
                                          "checkpoint (classification), a causal-LM folder (multiple choice)"))
    return TrainJob(spec=spec, spec_path=spec_path, settings=settings, profile=profile, suite=suite_obj,
                    suite_path=suite_path, train_split=_split_of(suite_obj, "train", suite_path),
                    validation_split=_split_of(suite_obj, "validation", suite_path), method=method,
                    base=Path(base), out=out)


def train_model(training: str | Path, suite: str | Path, base: str | Path, out: str | Path, *,
                settings: Settings | None = None) -> TrainResult:
    """Train on a suite's train split and write the model folder(s) with ``training.json``.

    Parameters
    ----------
    training : str or Path
        A ``kind: training`` file (hyperparameters; ``settings.profile`` picks one of its profiles).
    suite : str or Path
        An ID suite with a ``train`` and a ``validation`` split: classification (any number of ``classes``) or
        multiple choice (the model learns the correct choice as the prompt's continuation).
    base : str or Path
        Classification: a sentence-transformers folder or a sequence-classification checkpoint (``full`` and
        ``lora`` need its head trained for the suite's classes: run ``probe`` first, or ``lpft``). Multiple
        choice: a causal-LM checkpoint folder.
    out : str or Path
        Folder to create (must not exist).
    settings : Settings, default=None
        ``method``, ``profile``, ``device``, ``threads`` and ``progress`` are read.

    Returns
    -------
    TrainResult

    Raises
    ------
    SpecError
        Bad input (see :func:`plan`), or a base whose head is untrained or labelled for other classes.
    DataError
        Unreadable data, an empty split, a train split lacking a class, or no pair that fits ``max_length``.
    ModelError
        A base that cannot be loaded.
    """
    settings = settings or Settings()
    job = plan(training, suite, base, out, method=settings.method, profile=settings.profile)
    from harness.data.sources import load_splits  # pandas and the readers: only once the inputs are checked
    from harness.train import builders  # torch: as above

    splits = load_splits(job.suite, suite_path=job.suite_path, split_names=[job.train_split, job.validation_split])
    train, validation = splits[job.train_split], splits[job.validation_split]
    logger.info("training %s on %s/%s (%d rows), validation %s (%d rows)", job.method, job.suite.name,
                job.train_split, len(train), job.validation_split, len(validation))
    return builders.run(job, train, validation, settings)
