"""The only module that knows the order of the stages: spec -> data -> tokens -> model/blend -> predictions ->
metrics -> selection -> gate -> report, for ``eval``, ``sweep`` and ``blend``. The CLI and the Python API call
these functions with explicit arguments (never an argparse Namespace)."""

from harness.pipeline.blend import write_blend
from harness.pipeline.common import (LoadedSuites, RunOptions, RunResult, build_manifest, load_suites,
                                     prepare_splits, stage_timer)
from harness.pipeline.evaluate import evaluate_model
from harness.pipeline.evaluator import BlendEvaluator, SweepRequest
from harness.pipeline.sweep import run_gate, run_sweep, sweep_models
from harness.rundir import write_run

__all__ = ["RunOptions", "LoadedSuites", "RunResult", "load_suites", "prepare_splits", "evaluate_model",
           "sweep_models", "run_sweep", "SweepRequest", "BlendEvaluator", "run_gate", "write_blend", "write_run", "stage_timer", "build_manifest"]
