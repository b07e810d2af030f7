"""The Python API: one function per CLI command, same arguments, same results (``harness.evaluate`` etc.)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["evaluate", "sweep", "blend", "gate", "report", "demo"]


def evaluate(model: str | Path, suites: list[str | Path], *, out: str | Path | None = None, **options: Any):
    """Score one model on suites (twin of ``harness eval``); ``options`` are :class:`harness.pipeline.RunOptions`
    fields. Returns a :class:`harness.pipeline.RunResult` (``.summary``, ``.to_pandas()``, ``.run_dir``)."""
    from harness.pipeline import RunOptions, evaluate_model

    return evaluate_model(model, list(suites), out=out, options=RunOptions(**options), argv=[])


def sweep(base: str | Path, adapted: str | Path, suites: list[str | Path], *, alphas: Any = None,
          select: str = "max-shift-within-id", select_metric: str = "accuracy", tolerance: float = 0.01,
          weight: float = 0.5, head: str = "shared", gate: str | Path | None = None,
          baseline: str | Path | None = None, out: str | Path | None = None, **options: Any):
    """Evaluate base, adapted and blends, select alpha, optionally gate (twin of ``harness sweep``).

    Returns a :class:`harness.pipeline.RunResult`; ``.to_pandas()`` is the per-alpha, per-suite table and
    ``.verdict`` the gate's :class:`harness.records.Verdict` when ``gate`` is given."""
    from harness.pipeline import RunOptions, sweep_models

    return sweep_models(base, adapted, list(suites), alphas=alphas, select=select, select_metric=select_metric,
                        tolerance=tolerance, weight=weight, head=head, gate=gate, baseline=baseline, out=out,
                        options=RunOptions(**options), argv=[])


def blend(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, *, head: str = "shared",
          **options: Any) -> Path:
    """Write the blend at ``alpha`` as a safetensors checkpoint (twin of ``harness blend``)."""
    from harness.pipeline import RunOptions, write_blend

    return write_blend(base, adapted, alpha, out, head=head, options=RunOptions(**options))


def gate(run_dir: str | Path, policy: str | Path, *, baseline: str | Path | None = None,
         junit: str | Path | None = None):
    """Judge a stored run (twin of ``harness gate``); returns the :class:`harness.records.Verdict`."""
    from harness.pipeline import run_gate

    return run_gate(run_dir, policy, baseline=baseline, junit=junit)


def report(run_dir: str | Path, *, include_examples: bool = False):
    """(Re)render the report of a stored run (twin of ``harness report [--examples]``).

    With ``include_examples`` the largest negative flips are shown in ``report.html`` with their dataset text,
    read back from the suite files recorded in ``manifest.json`` (:mod:`harness.report.texts`).
    """
    from harness.report import render_report
    from harness.report.texts import run_text_lookup

    return render_report(run_dir, include_examples=include_examples,
                         text_lookup=run_text_lookup(run_dir) if include_examples else None)


def demo(*, adaptation: str = "full", profile: str = "quick", out: str | Path | None = None, **options: Any):
    """Run the end-to-end demo (twin of ``harness demo``)."""
    from harness.demo.run import run_demo
    from harness.pipeline import RunOptions

    return run_demo(adaptation=adaptation, profile=profile, out=out, options=RunOptions(**options))
