"""Run config (``kind: run``, ``harness sweep -c run.yaml``): the same settings as the sweep flags; flags given
on the command line override the file. Relative paths resolve against the file's folder."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from harness.spec.schema import Strict

__all__ = ["RunConfig", "PATH_FIELDS"]

PATH_FIELDS = ("base", "adapted", "suites", "gate", "baseline", "out", "junit")


class RunConfig(Strict):
    """Settings of a sweep; every field mirrors the ``harness sweep`` flag of the same name."""

    kind: Literal["run"]
    schema_version: Literal[1] = 1
    base: str | None = None
    adapted: str | None = None
    suites: list[str] = Field(default_factory=list)
    alphas: str | list[float] | None = None
    select: Literal["max-shift-within-id", "weighted", "id-only"] | None = None
    select_metric: str | None = None
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0)
    weight: float | None = Field(default=None, ge=0.0, le=1.0)
    head: Literal["shared", "adapted"] | None = None
    gate: str | None = None
    baseline: str | None = None
    junit: str | None = None
    out: str | None = None
    device: str | None = None
    dtype: Literal["fp32", "bf16", "fp16"] | None = None
    batch_tokens: int | None = Field(default=None, gt=0)
    compile: bool | None = None
    n_resamples: int | None = Field(default=None, ge=10)
    seed: int | None = None
    label_map: dict[str, str] | None = None

    @model_validator(mode="after")
    def _alphas(self) -> "RunConfig":
        if isinstance(self.alphas, str) and self.alphas != "adaptive":
            for part in self.alphas.split(","):
                try:
                    v = float(part)
                except ValueError as e:
                    raise ValueError(f"alphas must be 'adaptive', a comma list or a list of numbers; got "
                                     f"{self.alphas!r}") from e
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"every alpha must be in [0, 1]; got {v}")
        if isinstance(self.alphas, list) and any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"every alpha must be in [0, 1]; got {self.alphas}")
        return self
