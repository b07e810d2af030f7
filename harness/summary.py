"""The typed ``summary.json`` of a run directory (``../shared/CONTRACT.md``), one pydantic model.

``Summary.model_json_schema()`` is exported to ``suites/summary.schema.json``. Like :mod:`harness.records`, any
stage may import this module; it imports nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

__all__ = ["SCHEMA_VERSION", "MetricEntry", "SplitEntry", "PointEntry", "Selection", "SelectionNoise",
           "BootstrapInfo", "SuiteInfo", "OverlapEntry", "OverlapUnchecked", "Summary"]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricEntry(_Model):
    """Point estimate and bootstrap interval of one metric (fractions; ``None`` encodes NaN in JSON)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    higher_is_better: bool

    @field_validator("value", "ci_low", "ci_high", mode="before")
    @classmethod
    def _nan_to_none(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v


class SplitEntry(_Model):
    """Counts and metrics of one point on one split."""

    n: int
    n_truncated: int = 0
    n_dropped: int = 0
    n_nonfinite: int = Field(0, description="examples whose outputs hold inf/NaN (e.g. an fp16 overflow); the "
                                            "split's metrics are then NaN")
    metrics: dict[str, MetricEntry]

    @model_serializer(mode="wrap")
    def _omit_zero_nonfinite(self, handler):  # summaries of runs without overflow stay byte-identical
        out = handler(self)
        if isinstance(out, dict) and not out.get("n_nonfinite"):
            out.pop("n_nonfinite", None)
        return out


class PointEntry(_Model):
    """A sweep point: ``base`` (alpha 0), ``adapted`` (alpha 1) or a ``blend``; ``label`` describes unusual
    points (e.g. "base backbone + adapted head" with ``--head adapted``)."""

    id: str
    role: Literal["base", "adapted", "blend"]
    alpha: float | None
    is_chosen: bool = False
    label: str = ""


class Selection(_Model):
    """How alpha was chosen, and on which splits (only ``validation`` splits ever select)."""

    policy: str
    params: dict[str, Any] = Field(default_factory=dict)
    metric: str = "accuracy"
    selected_on: list[str]
    chosen_alpha: float | None
    chosen_point: str | None = None
    tie_break: str
    objective: dict[str, float | None] = Field(default_factory=dict)
    feasible: dict[str, bool] = Field(default_factory=dict)
    pareto: list[str] = Field(default_factory=list, description="point ids on the ID vs mean-shift Pareto front")
    n_evaluations: int = 0
    search: str = "grid"


class SelectionNoise(_Model):
    """How stable the alpha choice is under resampling of the validation splits (paired cluster bootstrap: the same
    resampled examples score every alpha). Keys are point ids."""

    method: str = ("paired cluster bootstrap over the validation splits; the selection policy re-run on every "
                   "resample")
    n_resamples: int
    seed: int
    level: float = Field(description="two-sided level of the paired intervals that decide indistinguishability")
    p_selected: dict[str, float] = Field(description="point id -> share of resamples in which the policy picks it")
    indistinguishable: list[str] = Field(description="point ids whose objective is not shown worse than the "
                                                     "chosen point's (paired interval of the difference reaches 0)")
    rule: str = Field(description="the stated rule that picks within the indistinguishable set")
    pick: str | None = Field(description="the point that rule picks")
    stability: float = Field(description="share of resamples that pick the chosen point")
    stable_rate: float = Field(0.9, description="a choice picked in fewer than this share of resamples is unstable "
                                                "and warned about")
    warning: str = Field("", description="set only for an unstable choice (stability below stable_rate)")


class BootstrapInfo(_Model):
    """Bootstrap settings: percentile intervals from multinomial resampling of clusters."""

    n_resamples: int
    seed: int
    method: str = "percentile; clusters resampled with replacement (multinomial weights)"
    cluster_key: str = "source_id"
    confidence: float = 0.95


class SuiteInfo(_Model):
    """Identity of a suite as evaluated: version, spec hash, role, and each split's role and fingerprint."""

    name: str
    version: str
    spec_hash: str
    role: Literal["id", "shift"]
    shift_type: str | None = None
    splits: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                              description="split -> {role, fingerprint, n}")
    metrics: list[str] = Field(default_factory=list)


class OverlapEntry(_Model):
    """Rows of an evaluated split ``b`` that also occur in a reference split ``a`` (train/test contamination):
    ``by_id`` (same suite only, else ``None``) and ``by_text`` (normalised text) count rows of ``b``;
    ``fraction`` = max(by_id, by_text) / n_b (:mod:`harness.data.overlap`)."""

    a: str
    b: str
    n_a: int
    n_b: int
    by_id: int | None = None
    by_text: int = 0
    fraction: float = 0.0


class OverlapUnchecked(_Model):
    """A pair whose overlap was not counted because the reference split ``a`` (an ID train split) could not be
    read when the run was made; ``reason`` is the problem. A ``max_overlap`` gate rule on ``b`` fails."""

    a: str
    b: str
    reason: str


class Summary(_Model):
    """summary.json: points, results (point -> suite -> split), selection, bootstrap, suites."""

    schema_version: int = SCHEMA_VERSION
    harness_version: str
    command: Literal["eval", "sweep", "demo"]
    profile: str | None = None
    notes: list[str] = Field(default_factory=list)
    points: list[PointEntry]
    results: dict[str, dict[str, dict[str, SplitEntry]]]
    ensemble: dict[str, dict[str, dict[str, SplitEntry]]] = Field(
        default_factory=dict, description="output-space ensemble (1-alpha)*p_base + alpha*p_adapted, same keys")
    selection: Selection | None = None
    selection_noise: SelectionNoise | None = Field(
        default=None, description="stability of the alpha choice under resampling (absent in older runs)")
    bootstrap: BootstrapInfo
    suites: dict[str, SuiteInfo]
    overlap: list[OverlapEntry] = Field(
        default_factory=list, description="train/validation/test overlap of every checked pair of splits (ID train "
                                          "vs every evaluated split; validation vs test of a suite)")
    overlap_unchecked: list[OverlapUnchecked] = Field(
        default_factory=list, description="pairs whose overlap was not counted: their ID train split could not be "
                                          "read (a max_overlap gate rule on the evaluated split fails)")

    def point(self, point_id: str) -> PointEntry:
        """The point with this id (``KeyError`` naming the available ids if absent)."""
        for p in self.points:
            if p.id == point_id:
                return p
        raise KeyError(f"no point {point_id!r}; points are {[p.id for p in self.points]}")

    @property
    def chosen(self) -> PointEntry | None:
        """The chosen point, if a selection ran."""
        return next((p for p in self.points if p.is_chosen), None)
