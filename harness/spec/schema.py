"""Suite spec: the strict pydantic schema of a ``kind: suite`` YAML file (``../shared/CONTRACT.md``).

Every model forbids unknown keys and is frozen; cross-field rules live in ``model_validator``s that raise
``ValueError`` so pydantic reports the field path. Metric *names* are checked here; each metric's direction and
range live in :mod:`harness.metrics.registry`.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import did_you_mean
from harness.records import SplitRole, SuiteRole
from harness.spec.base import _NAME, Name, Strict, _check_name  # noqa: F401  (re-exported)
from harness.spec.lm import GenerationTask, LMTask, MultipleChoiceTask, PerplexityTask

__all__ = [
    "Name",
    "BUILTIN_METRICS",
    "DEFAULT_METRICS",
    "TASKS",
    "TASK_METRICS",
    "TASK_DEFAULT_METRICS",
    "Strict",
    "OnMissingText",
    "ShiftType",
    "LocalSource",
    "HubSource",
    "BuiltinSource",
    "SplitSpec",
    "TransformSpec",
    "DerivedFrom",
    "Suite",
]

#: The tasks a suite can name (``task:``); see :mod:`harness.tasks`.
TASKS = ("classification", "multiple_choice", "generation", "perplexity")
#: Built-in metric names per task (keys and order equal :data:`harness.metrics.METRICS`); classification suites
#: may also name ``evaluate:NAME_OR_PATH`` (an ``evaluate`` module, loaded only when asked).
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1", "balanced_accuracy", "nll", "ece"),
    "multiple_choice": ("acc", "acc_norm", "acc_bytes"),
    "generation": ("exact_match", "numeric_match", "contains", "f1"),
    "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
BUILTIN_METRICS = tuple(m for names in TASK_METRICS.values() for m in names)
#: Metrics of a suite that names none, per task.
TASK_DEFAULT_METRICS = {
    "classification": ("accuracy", "macro_f1", "nll", "ece"),
    "multiple_choice": ("acc", "acc_norm"),
    "generation": ("exact_match",),
    "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
DEFAULT_METRICS = TASK_DEFAULT_METRICS["classification"]
class OnMissingText(str, Enum):
    """What to do with rows whose text is null or empty: stop (``error``), ``drop`` them (counted), ``keep``
    them as empty strings."""

    ERROR = "error"
    DROP = "drop"
    KEEP = "keep"


class ShiftType(str, Enum):
    """``natural``: another real domain; ``synthetic``: perturbed copies of another suite's split."""

    NATURAL = "natural"
    SYNTHETIC = "synthetic"


class _SourceCommon(Strict):
    on_missing_text: OnMissingText = OnMissingText.ERROR
    document_key: str | None = Field(
        default=None,
        description="column whose value groups rows into documents: derived splits never split a document, "
                    "and the bootstrap resamples documents. Default: each row is its own document.")


class LocalSource(_SourceCommon):
    """Local csv, jsonl or parquet file(s); relative paths resolve against the suite file's folder."""

    type: Literal["local"]
    files: list[str] = Field(min_length=1)
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"


class HubSource(_SourceCommon):
    """A Hugging Face Hub dataset pinned to a revision (a commit sha or tag); needs the network or the cache."""

    type: Literal["hub"]
    id: str
    revision: str = Field(min_length=1)
    config: str | None = None
    split: str | None = Field(default=None, description="the hub split to read when a split names none")


class BuiltinSource(_SourceCommon):
    """A source shipped with the harness as a loader (never as data).

    ``vader-icwsm2014``: the human-rated sentences of Hutto & Gilbert (ICWSM 2014), fetched at run time from the
    vaderSentiment 3.3.2 source archive on PyPI. Labels come from the sign of the mean rating in [-4, 4]; rows with
    ``|rating| < neutral_band`` are excluded and counted.
    """

    type: Literal["builtin"]
    name: Literal["vader-icwsm2014"]
    domain: Literal["movies", "tweets", "amazon", "nyt"]
    neutral_band: float = Field(default=0.5, ge=0.0, le=4.0)


Source = Annotated[Union[LocalSource, HubSource, BuiltinSource], Field(discriminator="type")]


class SplitSpec(Strict):
    """One split. Either derived (``fraction``: a stable hash of the document key puts each document in exactly
    one derived split) or read whole (``files`` for local sources, ``hub_split`` for hub sources, or the whole
    source). ``where`` filters rows by column value before anything else; ``max_examples`` caps the split with a
    seeded sample of documents."""

    name: Name
    role: SplitRole
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    files: list[str] | None = None
    hub_split: str | None = None
    where: dict[str, Union[str, int, list[Union[str, int]]]] | None = None
    max_examples: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_origin(self) -> "SplitSpec":
        given = [k for k in ("fraction", "files", "hub_split") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"a split takes at most one of fraction, files, hub_split; got {', '.join(given)}")
        return self


class TransformSpec(Strict):
    """One perturbation from :mod:`harness.data.shifts`, with its parameters and seed."""

    name: Name
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


class DerivedFrom(Strict):
    """The suite and split(s) a synthetic suite perturbs. ``suite`` is a suite name (looked up among the suite
    files given together and the files beside this one) or a path to a suite file."""

    suite: str
    split: str | None = None
    splits: list[str] | None = None

    @model_validator(mode="after")
    def _one(self) -> "DerivedFrom":
        if (self.split is None) == (self.splits is None):
            raise ValueError("derived_from takes exactly one of split (a name) or splits (a list of names)")
        return self

    @property
    def split_names(self) -> list[str]:
        return [self.split] if self.split is not None else list(self.splits or [])


class Suite(Strict):
    """An evaluation suite: where the rows come from, how to read them, how to split them, what to measure."""

    #: fields added after wave 1, left out of :func:`harness.spec.load.spec_hash` while at their defaults
    HASH_OMIT_IF_DEFAULT: ClassVar[tuple[str, ...]] = ("task", "select_metric", "truncation")
    HASH_OMIT: ClassVar[tuple[str, ...]] = ("in_selection",)  # how a run uses the results, not what they are

    kind: Literal["suite"]
    schema_version: Literal[1] = 1
    name: Name
    version: str = "1"
    description: str = ""
    role: SuiteRole
    shift_type: ShiftType | None = None
    source: Source | None = None
    derived_from: DerivedFrom | None = None
    transforms: list[TransformSpec] = Field(default_factory=list)
    id_column: str | None = Field(default=None, description="column of unique row ids; default: row number")
    text: str = "text"
    text_pair: str | None = None
    label: str = Field(default="label", description=(
        "column of the label. One rule for every file format (JSON 1, CSV \"1\" and parquet 1.0 are the same "
        "value): label_map first; else a value equal to a class name is that class; else an integer is a 0-based "
        "index into classes, but only when no class name reads as an integer (with classes \"1\", \"2\", "
        "\"3\" an integer label is a class name, and any other value is an error asking for a label_map)"))
    classes: list[str] = Field(default_factory=list, description="ordered class names (classification; at least "
                                                                 "2); language-model tasks have none")
    label_map: dict[Union[int, str], str] | None = Field(default=None, description=(
        "raw label value -> class name (keys compared as text: 1, 1.0 and \"1\" agree); needed when integer "
        "labels are indices and the class names read as integers"))
    splits: list[SplitSpec] = Field(default_factory=list)
    split_seed: int = Field(default=0, description="salt of the document hash that assigns derived splits")
    max_length: int = Field(default=128, ge=8, le=8192)
    truncation: Literal["right", "head_tail"] = Field(
        default="right", description="how a classification example longer than max_length is cut: right (the "
        "tokenizer's truncation, keeps the start) or head_tail (keeps the first quarter and the last three "
        "quarters of the token budget, Sun et al. 2019; single texts only); either way the count of truncated "
        "examples is reported")
    task: Union[Literal["classification"], LMTask] = Field(
        default="classification",
        description="what the model is asked to do: classification (a sequence classifier's logits), or a "
                    "language-model task block with kind multiple_choice, generation or perplexity "
                    "(harness.spec.lm)")
    select_metric: str | None = Field(default=None, description="the metric this suite selects alpha on; default: "
                                                                "accuracy, acc_norm, the first generation metric "
                                                                "or bits_per_byte (by task)")
    in_selection: bool = Field(default=True, description="whether this suite's validation splits enter the score "
                                                         "that selects alpha; false: the suite is evaluated, "
                                                         "reported and judged by gate rules but does not move "
                                                         "alpha (a perplexity suite beside accuracy suites)")
    metrics: list[str] = Field(default_factory=list, min_length=1,
                               description="metric names of the task; default: the task's defaults")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"classes must be unique; got {v}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str], info) -> list[str]:
        task = info.data.get("task")  # validated before metrics; a hint names a metric of this suite's task
        own = TASK_METRICS.get(task if isinstance(task, str) else getattr(task, "kind", None), BUILTIN_METRICS)
        for m in v:  # names of another task are refused by _cross, which knows the task
            if m not in BUILTIN_METRICS and not (m.startswith("evaluate:") and len(m) > len("evaluate:")):
                raise ValueError(f"unknown metric {m!r}{did_you_mean(m, own, families=False)}; expected one of "
                                 f"{', '.join(own)} or 'evaluate:NAME_OR_PATH'")
        if len(set(v)) != len(v):
            raise ValueError(f"metrics must be unique; got {v}")
        return v

    @property
    def task_name(self) -> str:
        """``classification``, ``multiple_choice``, ``generation`` or ``perplexity``."""
        return self.task if isinstance(self.task, str) else self.task.kind

    @property
    def selection_metric(self) -> str:
        """The metric this suite selects alpha on (``select_metric``, else the task's default)."""
        if self.select_metric is not None:
            return self.select_metric
        preferred = {"classification": "accuracy", "multiple_choice": "acc_norm",
                     "perplexity": "bits_per_byte"}.get(self.task_name)
        return preferred if preferred in self.metrics else self.metrics[0]

    @model_validator(mode="before")
    @classmethod
    def _default_metrics(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("metrics"):
            task = data.get("task", "classification")
            name = task.get("kind") if isinstance(task, dict) else task
            if isinstance(name, str) and name in TASK_DEFAULT_METRICS:  # a malformed task is the schema's to refuse
                data = {**data, "metrics": list(TASK_DEFAULT_METRICS[name])}
        return data

    @model_validator(mode="after")
    def _task_metrics(self) -> "Suite":
        own = TASK_METRICS[self.task_name]
        bad = [m for m in self.metrics if m not in own and not (self.task_name == "classification"
                                                                 and m.startswith("evaluate:"))]
        if bad:
            raise ValueError(f"metrics {bad} do not apply to task {self.task_name!r}; its metrics are "
                             f"{', '.join(own)}")
        if self.select_metric is not None and self.select_metric not in self.metrics:
            raise ValueError(f"select_metric {self.select_metric!r} is not one of the suite's metrics {self.metrics}")
        if self.task_name == "classification" and len(self.classes) < 2:
            raise ValueError("a classification suite needs classes: at least 2 ordered class names")
        if self.truncation == "head_tail" and self.text_pair is not None:
            raise ValueError("truncation head_tail applies to single texts; a suite with text_pair uses right")
        if self.task_name != "classification":
            if (self.classes or self.label_map is not None or self.text_pair is not None or self.transforms
                    or self.truncation != "right"):
                raise ValueError("classes, label_map, text_pair, transforms and truncation are for classification "
                                 "suites; a language-model suite reads its prompt, choices and gold from task (and "
                                 "truncates from the left, as lm-eval)")
            fewshot = getattr(getattr(self.task, "prompt", None), "fewshot", None)
            if fewshot is not None and fewshot.split not in {s.name for s in self.splits}:
                raise ValueError(f"task.prompt.fewshot.split {fewshot.split!r} is not a split of this suite")
        return self

    @model_validator(mode="after")
    def _cross(self) -> "Suite":
        if self.role is SuiteRole.SHIFT and self.shift_type is None:
            raise ValueError("a shift suite needs shift_type: natural or synthetic")
        if self.role is SuiteRole.ID and self.shift_type is not None:
            raise ValueError("shift_type is only for role: shift")
        if (self.source is None) == (self.derived_from is None):
            raise ValueError("a suite takes exactly one of source (real rows) or derived_from (perturbed copies)")
        if self.derived_from is not None:
            if not self.transforms:
                raise ValueError("a derived suite needs at least one entry in transforms")
            if self.splits:
                raise ValueError("a derived suite inherits its splits from derived_from; remove splits")
        else:
            if self.transforms:
                raise ValueError("transforms need derived_from (the suite and split to perturb)")
            if not self.splits:
                raise ValueError("a suite with a source needs at least one split")
        if self.shift_type is ShiftType.SYNTHETIC and self.derived_from is None:
            raise ValueError("shift_type synthetic needs derived_from and transforms")
        names = [s.name for s in self.splits]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"split names must be unique; repeated: {dup}")
        fractions = [s.fraction for s in self.splits if s.fraction is not None]
        if fractions and sum(fractions) > 1.0 + 1e-9:
            raise ValueError(f"split fractions add up to {sum(fractions):g}; they must add up to at most 1")
        if self.source is not None:
            for s in self.splits:
                if s.files is not None and self.source.type != "local":
                    raise ValueError(f"split {s.name!r}: files only work with a local source")
                if s.hub_split is not None and self.source.type != "hub":
                    raise ValueError(f"split {s.name!r}: hub_split only works with a hub source")
        if self.label_map is not None:
            bad = sorted({c for c in self.label_map.values() if c not in self.classes})
            if bad:
                raise ValueError(f"label_map maps to {bad}, which are not in classes {self.classes}")
        return self
