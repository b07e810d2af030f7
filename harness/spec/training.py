"""Training spec: the strict pydantic schema of a ``kind: training`` YAML file, the demo models' hyperparameters.

The top-level settings are the reference configuration; ``profiles`` holds named partial overrides (for example
``quick`` for a CPU run, ``full`` for a GPU run) that are deep-merged over them by :meth:`TrainingSpec.resolve`.
Every profile is resolved and validated when the file is loaded, so a typo inside a profile is reported with its
field path (``profiles.quick.full.epochs``) before any model is touched.

Two alphas must never be confused: ``lora.lora_alpha`` is PEFT's LoRA scaling numerator (the update is scaled by
``lora_alpha / r``, Hu et al., 2021); the blend alpha (fraction of adapted weights) is chosen by the sweep.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from harness.spec.schema import _NAME, Name, Strict

__all__ = ["ProbeSettings", "FineTuneSettings", "LoraSettings", "ReftSettings", "LmSettings", "TrainingSettings",
           "TrainingSpec"]


class ProbeSettings(Strict):
    """Linear probe: scikit-learn ``LogisticRegression`` on frozen pooled features; C chosen on validation."""

    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1,
                                description="inverse regularisation strengths C to try (each > 0); ties go to "
                                            "the smaller C")
    max_train_examples: int | None = Field(default=None, gt=0,
                                           description="cap on training rows (a seeded sample); null: all")
    max_iter: int = Field(default=2000, ge=10, description="LogisticRegression max_iter")

    @field_validator("c_grid")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [c for c in v if not c > 0]
        if bad:
            raise ValueError(f"every C must be > 0; got {bad}")
        return sorted(set(v))


class FineTuneSettings(Strict):
    """Optimisation settings shared by full fine-tuning and LoRA: AdamW with linear warmup then linear decay."""

    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0, le=1.0)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW decoupled weight decay (not on biases "
                                                                  "and LayerNorm weights)")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="fraction of steps with linear warmup")
    max_grad_norm: float | None = Field(default=1.0, gt=0.0, description="gradient clipping; null: none")
    max_train_examples: int | None = Field(default=None, gt=0,
                                           description="cap on training rows (a seeded sample); null: all")


class LoraSettings(FineTuneSettings):
    """LoRA adapter (Hu et al., 2021) trained through PEFT; the classifier head is trained in full."""

    r: int = Field(ge=1, description="LoRA rank")
    lora_alpha: float = Field(gt=0.0, description="PEFT's LoRA scaling numerator (scale = lora_alpha / r); "
                                                  "not the blend alpha")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] = Field(min_length=1, description="module names that get LoRA (exact or suffix "
                                                                "match, e.g. query, value)")
    last_layers: int | None = Field(default=None, ge=1,
                                    description="causal_lm only: adapt only the last N transformer blocks (PEFT "
                                                "layers_to_transform); the frozen blocks below need no backward "
                                                "pass, so a step costs less on CPU; null: every block")


class ReftSettings(Strict):
    """Representation fine-tuning (LoReFT/DiReFT, Wu et al. 2024) of a causal LM: one low-rank intervention per
    listed block, on the block's output at the prompt's first/last tokens; the base stays frozen
    (:func:`harness.demo.reft_train.train_reft`: AdamW, linear decay to 0, R kept orthonormal)."""

    kind: Literal["loreft", "direft"] = Field(default="loreft", description="intervention kind")
    layers: list[int] = Field(min_length=1, description="0-based block indices, one intervention each")
    positions: str = Field(default="l1", pattern=r"^(f[0-9]+\+l[0-9]+|f[0-9]+|l[0-9]+)$",
                           description="pyreft's positions: first/last prompt tokens edited (l1, f1+l1, f2)")
    rank: int = Field(ge=1, description="rank of the intervention's subspace (rows of R)")
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0, le=1.0)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW decoupled weight decay")
    max_train_examples: int | None = Field(default=None, gt=0,
                                           description="cap on training rows (a seeded sample); null: all")

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"layers must be distinct block indices >= 0; got {v}")
        return v


class LmSettings(Strict):
    """What a causal language model is fine-tuned on (``task: causal_lm``): prompt -> answer pairs built from
    multiple-choice rows in the ARC format (``question``, ``choices{text[], label[]}``, ``answerKey``), the answer
    being the text of the correct choice. The loss is on the answer tokens only."""

    train_file: str = Field(default="arc_easy/train.jsonl", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.jsonl$",
                            description="JSON Lines file of ARC-format rows, relative to the committed LM data "
                                        "folder (harness/resources/llm_data)")
    prompt: str = Field(default="Question: {question}\nAnswer:", min_length=1,
                        description="prompt template; {question} is replaced by the row's question (lm-eval's "
                                    "arc_easy doc_to_text)")
    target_delimiter: str = Field(default=" ", description="between the prompt and the answer text (lm-eval's "
                                                           "target_delimiter)")

    @field_validator("prompt")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError(f"the prompt must contain the placeholder {{question}}; got {v!r}")
        return v


class TrainingSettings(Strict):
    """One fully resolved set of hyperparameters (a profile applied to the top level).

    ``task`` says which model the settings train: ``classifier`` (the sentence demo: probe, then full or LoRA
    fine-tuning of a classifier) or ``causal_lm`` (the language-model demo: full or LoRA fine-tuning of a causal
    LM on the pairs that ``lm`` describes; ``lm`` is required there, ``probe`` does not apply)."""

    task: Literal["classifier", "causal_lm"] = "classifier"
    seed: int = 0
    max_length: int = Field(default=128, ge=8, le=8192, description="tokens per sentence, special tokens included")
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    full: FineTuneSettings
    lora: LoraSettings
    lm: LmSettings | None = Field(default=None, description="causal-LM training data and prompt (task causal_lm)")
    reft: ReftSettings | None = Field(default=None, description="causal_lm only: ReFT interventions (--adaptation "
                                                                "reft)")

    @model_validator(mode="after")
    def _task_sections(self) -> "TrainingSettings":
        if self.task == "causal_lm":
            if self.lm is None:
                raise ValueError("task causal_lm needs an `lm:` section (train_file, prompt, target_delimiter)")
            if self.probe != ProbeSettings():
                raise ValueError("`probe` settings do not apply to task causal_lm (no linear probe); remove them")
        elif self.lm is not None:
            raise ValueError(f"the `lm:` section applies only to task causal_lm; task is {self.task!r}")
        elif self.lora.last_layers is not None:
            raise ValueError("lora.last_layers applies only to task causal_lm; remove it")
        elif self.reft is not None:
            raise ValueError("the `reft:` section applies only to task causal_lm; remove it")
        return self


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class TrainingSpec(TrainingSettings):
    """A ``kind: training`` file: reference settings plus named profiles of overrides."""

    kind: Literal["training"]
    schema_version: Literal[1] = 1
    name: Name
    version: str = "1"
    description: str = ""
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="profile name -> partial settings deep-merged over the top level")

    @model_validator(mode="after")
    def _profiles_resolve(self) -> "TrainingSpec":
        problems = []
        for name in self.profiles:
            if not _NAME.match(name):
                problems.append(f"profiles.{name}: profile names must be letters, digits, '_', '.', '-'")
                continue
            try:
                self.resolve(name)
            except ValidationError as e:
                for err in e.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    msg = err["msg"].removeprefix("Value error, ")
                    if err["type"] == "extra_forbidden":
                        msg = ("unknown key (typo? profiles may override "
                               f"{', '.join(TrainingSettings.model_fields)})")
                    problems.append(f"profiles.{name}.{loc}: {msg}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolve(self, profile: str | None) -> TrainingSettings:
        """The settings of ``profile`` (its overrides deep-merged over the top level; lists are replaced).

        Parameters
        ----------
        profile : str or None
            A key of ``profiles``; ``None`` gives the top-level settings.

        Returns
        -------
        TrainingSettings

        Raises
        ------
        KeyError
            If ``profile`` is not a key of ``profiles`` (callers turn it into a ``SpecError`` listing the names).
        pydantic.ValidationError
            If the merged settings are invalid (cannot happen for a spec that passed validation).
        """
        base = self.model_dump(include=set(TrainingSettings.model_fields))
        if profile is None:
            return TrainingSettings.model_validate(base)
        return TrainingSettings.model_validate(_deep_merge(base, self.profiles[profile]))
