"""The Python API: one function per CLI command, same arguments, same results.

The names (``run_eval``, ``run_sweep``, ``run_blend``, ``run_gate``, ``run_report``, ``run_demo``, ``run_train``) never
collide with
a submodule of :mod:`harness`, so ``harness.run_sweep`` is always this function, whatever has been imported. The
keyword arguments of the settings (``dtype=``, ``alphas=``, ``n_resamples=``...) are generated from
:class:`harness.settings.Settings`: each function's signature lists the settings of its command, and an unknown or
misplaced keyword is a :class:`~harness.errors.SpecError` with near matches.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.demo.run import run_demo as _demo
from harness.pipeline import RunResult, evaluate_model, sweep_models, write_blend
from harness.pipeline import run_gate as _judge_stored_run
from harness.settings import Settings, make_settings, settings_fields
from harness.train.command import TrainResult, train_model

__all__ = ["run_eval", "run_sweep", "run_blend", "run_gate", "run_report", "run_demo", "run_train",
           "sweep_with_settings"]


def _with_settings(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give ``fn`` (whose last parameter is ``**settings``) a signature that lists every setting of ``command`` as
    a keyword with its default, and a docstring section that describes them."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        fields = settings_fields(command)
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default,
                                     annotation=info.annotation) for name, info in fields.items()]
        fn.__signature__ = sig.replace(parameters=params)
        lines = [f"    {name} : default={info.default!r}\n        {info.description}" for name, info in fields.items()]
        fn.__doc__ = (fn.__doc__ or "") + "\n\n    Settings (keywords; :class:`harness.settings.Settings`)\n" \
            "    ---------------------------------------------------------\n" + "\n".join(lines) + "\n"
        return fn

    return wrap


def sweep_with_settings(base: str | Path, adapted: str | Path, suites: list[Any], settings: Settings, *,
                        gate: str | Path | None = None, baseline: str | Path | None = None,
                        junit: str | Path | None = None, out: str | Path | None = None,
                        argv: list[str] | None = None) -> RunResult:
    """Run :func:`harness.pipeline.sweep_models` with the selection settings taken from ``settings`` (what the CLI
    and :func:`run_sweep` share)."""
    return sweep_models(base, adapted, list(suites), alphas=settings.alphas, select=settings.select,
                        select_metric=settings.select_metric, tolerance=settings.tolerance, weight=settings.weight,
                        head=settings.head, budget=settings.budget, gate=gate, baseline=baseline, junit=junit,
                        out=out, options=settings, argv=argv)


@_with_settings("eval")
def run_eval(model: str | Path, suites: list[str | Path], *, out: str | Path | None = None,
             base: str | Path | None = None, **settings: Any) -> RunResult:
    """Score one model on suites (twin of ``harness eval``; ``base`` only with a ReFT folder as ``model``).

    Returns a :class:`harness.pipeline.RunResult` (``.summary``, ``.to_pandas()``, ``.run_dir``)."""
    opts = make_settings(settings, command="eval")
    return evaluate_model(model, list(suites), out=out, options=opts, argv=[], base=base)


@_with_settings("sweep")
def run_sweep(base: str | Path, adapted: str | Path, suites: list[str | Path], *, gate: str | Path | None = None,
              baseline: str | Path | None = None, junit: str | Path | None = None, out: str | Path | None = None,
              **settings: Any) -> RunResult:
    """Evaluate base, adapted and blends, select alpha, optionally gate (twin of ``harness sweep``).

    Returns a :class:`harness.pipeline.RunResult`; ``.to_pandas()`` is the per-alpha, per-suite table and
    ``.verdict`` the gate's :class:`harness.records.Verdict` when ``gate`` is given.

    Raises
    ------
    SpecError
        Before any model loads: ``gate`` without ``out`` (the gate judges the run directory), ``junit`` or
        ``baseline`` without ``gate``, or a policy whose verdict on these suites is already decided (a suite the
        run lacks, a metric a judged suite lacks, a threshold outside its metric's range, a rule's ``min_n`` or
        ``min_clusters`` above ``max_examples``); and for other bad input (exit 2 on the command line)."""
    opts = make_settings(settings, command="sweep")
    return sweep_with_settings(base, adapted, suites, opts, gate=gate, baseline=baseline, junit=junit, out=out,
                               argv=[])


@_with_settings("blend")
def run_blend(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, **settings: Any) -> Path:
    """Write the blend at ``alpha`` as a safetensors checkpoint (twin of ``harness blend``); returns ``out``."""
    opts = make_settings(settings, command="blend")
    return write_blend(base, adapted, alpha, out, head=opts.head, options=opts)


def run_gate(run_dir: str | Path, policy: str | Path, *, baseline: str | Path | None = None,
             junit: str | Path | None = None):
    """Judge a stored run (twin of ``harness gate``); returns the :class:`harness.records.Verdict`.

    Raises
    ------
    SpecError, DataError
        For a bad policy or run directory, or a policy whose verdict on this run is decided before judging (a
        suite the run lacks, a metric a judged suite lacks, a threshold outside its metric's range); nothing is
        written then."""
    return _judge_stored_run(run_dir, policy, baseline=baseline, junit=junit)


def run_report(run_dir: str | Path, *, include_examples: bool = False, progress: bool = False):
    """(Re)render the report of a stored run (twin of ``harness report [--examples]``; ``progress``: a bar over the
    report's sections on a terminal).

    With ``include_examples`` the largest negative flips are shown in ``report.html`` with their dataset text,
    and generation suites' outputs beside their prompt and reference answer, read back from the suite files
    recorded in ``manifest.json`` (:mod:`harness.report.texts`). Never in a committed sample report.
    """
    from harness.report import render_report  # matplotlib and jinja2: only when a report is rendered
    from harness.report.texts import run_lookups

    text, gold = run_lookups(run_dir) if include_examples else (None, None)
    return render_report(run_dir, include_examples=include_examples, text_lookup=text, gold_lookup=gold,
                         progress=progress)


@_with_settings("demo")
def run_demo(*, task: str = "sentiment", adaptation: str | None = None, profile: str = "quick",
             out: str | Path | None = None, **settings: Any):
    """Run an end-to-end demo (twin of ``harness demo [--task sentiment|lm]``).

    ``task="sentiment"`` (default): MiniLM on VADER domains, ``adaptation`` ``full`` (default) or ``lora``;
    ``task="lm"``: SmolLM2-135M-Instruct on ARC and BoolQ (:func:`harness.demo.lm_run.run_lm_demo`),
    ``adaptation`` ``lora`` (default) or ``full``. ``out`` defaults to ``reports/demo`` (``reports/lm-demo``)
    in the current folder. Returns the sweep's :class:`~harness.pipeline.RunResult`.

    Raises
    ------
    SpecError
        For an unknown task, profile or adaptation.
    """
    options = make_settings(settings, command="demo")
    if task == "lm":
        from harness.demo.lm_run import run_lm_demo  # gguf/accelerate: only for this demo

        return run_lm_demo(adaptation=adaptation or "lora", profile=profile, out=out, options=options)
    if task != "sentiment":
        from harness.errors import SpecError, unknown_name

        raise SpecError(unknown_name("demo task", task, ["sentiment", "lm"]))
    return _demo(adaptation=adaptation or "full", profile=profile, out=out, options=options)


@_with_settings("train")
def run_train(training: str | Path, suite: str | Path, base: str | Path, out: str | Path,
              **settings: Any) -> TrainResult:
    """Train on a suite's train split (twin of ``harness train``): a linear probe, LP-FT, a full fine-tune or a
    LoRA adapter of a sentence classifier, or a LoRA / full fine-tune of a causal LM on a multiple-choice suite.

    ``training`` is a ``kind: training`` file (hyperparameters), ``suite`` an ID suite with train and validation
    splits, ``base`` the model to start from, ``out`` a folder to create. Returns a
    :class:`harness.train.command.TrainResult`: ``model_dir`` (checkpoint or adapter folder, with
    ``training.json``), ``base_dir`` (what to sweep it against), ``records``. Errors as :func:`harness.train.command.train_model`."""
    opts = make_settings(settings, command="train")
    return train_model(training, suite, base, out, settings=opts)
