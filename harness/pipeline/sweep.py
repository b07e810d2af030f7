"""``sweep``: evaluate base, adapted and blends over alpha, select alpha, write the run directory.

The steps, each a small function: fix the request (:class:`SweepRequest`), load the data, build the evaluator
(:class:`BlendEvaluator`), search and select (:func:`harness.sweep.search_alphas`, pure), derive the output
ensembles (pure), build the summary once, write the run directory, gate, report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import harness
from harness.errors import SpecError, format_error, problem_lines
from harness.gate_outputs import run_gate as _run_gate
from harness.models.paths import check_model_path
from harness.pipeline.common import (LoadedSuites, RunOptions, RunResult, bootstrap_info, build_manifest,
                                     check_baseline, check_options_fit, load_suites, maybe_report, metrics_for,
                                     nest_results, prepare_splits, run_overlap, stage_timer, suite_infos)
from harness.pipeline.distributed import group_info, join_group, rank_memory
from harness.pipeline.evaluator import BlendEvaluator, SweepRequest, point_of
from harness.rundir import check_out_dir, write_run
from harness.spec.load import load_spec
from harness.spec.schema import Suite
from harness.summary import PointEntry, Selection as SelectionEntry, Summary
from harness.sweep import (TIE_BREAK, SelectionPolicy, SweepResult, check_selectable, output_ensembles,
                           parse_alphas_noted, search_alphas, select_points, selection_uncertainty)

__all__ = ["sweep_models", "run_sweep", "run_gate", "SweepRequest"]

log = logging.getLogger(__name__)


def sweep_models(base: str | Path, adapted: str | Path, suites: list[str | Path] | list[Suite], *,
                 alphas: str | list[float] | None = None, select: str = "max-shift-within-id",
                 select_metric: str | None = None, tolerance: float = 0.01, weight: float = 0.5,
                 head: str = "shared", gate: str | Path | None = None, baseline: str | Path | None = None,
                 out: str | Path | None = None, options: RunOptions = RunOptions(), argv: list[str] | None = None,
                 command: str = "sweep", profile: str | None = None, notes: list[str] | None = None,
                 junit: str | Path | None = None, budget: int = 6) -> RunResult:
    """Evaluate base, adapted and blends over alpha, select alpha on validation splits, optionally gate, write
    the run directory and the report (``harness sweep``).

    Parameters
    ----------
    base, adapted : str or Path
        Base checkpoint; adapted checkpoint (full fine-tune), PEFT adapter folder or ReFT folder (alpha is
        then the intervention strength, docs/reft.md).
    suites : list
        Suite files/folders/objects: at least one ID suite with a validation split.
    alphas : str or list of float, default=None
        ``None`` (0, 0.1, ..., 1), ``"adaptive"``, or explicit weights of the adapted model.
    select, select_metric, tolerance, weight
        The selection policy (:class:`harness.sweep.SelectionPolicy`).
    head : {"shared", "adapted"}, default="shared"
        ``adapted`` keeps the adapted head at every alpha (the true base is still evaluated as ``base``).
    gate, baseline, junit : default=None
        A gate policy file; a baseline run directory; where to write JUnit XML.
    out : str or Path, default=None
        The run directory.
    options : RunOptions
        Shared settings.
    budget : int, default=6
        Maximum evaluations of the adaptive search.

    Returns
    -------
    RunResult
        With ``sweep`` (a :class:`harness.sweep.SweepResult`) and ``verdict`` when gated.

    Raises
    ------
    HarnessError
        SpecError, DataError, ModelError, BlendError for unusable input (nothing written).
    """
    alphas, alpha_notes = parse_alphas_noted(alphas)
    for note in alpha_notes:
        log.warning("%s", note)
    request = SweepRequest(base=base, adapted=adapted, suites=tuple(suites), alphas=alphas,
                           policy=SelectionPolicy(name=select, metric=select_metric, tolerance=tolerance,
                                                  weight=weight),
                           head=head, options=options, budget=budget, gate=gate, baseline=baseline, junit=junit,
                           out=out, command=command, profile=profile, notes=(*(notes or ()), *alpha_notes),
                           argv=tuple(argv or ()))
    return run_sweep(request)


def run_sweep(request: SweepRequest) -> RunResult:
    """Run a :class:`SweepRequest`: evaluate, select, summarise; write, gate and report when ``out`` is set.

    Started by torchrun / accelerate launch (``WORLD_SIZE`` > 1), each process is one rank of a data-parallel sweep
    (:mod:`harness.pipeline.distributed`): same summary as one process; rank 0 writes the run directory and
    every rank returns its ``run_dir`` and ``verdict``.
    """
    timings: dict[str, float] = {}
    request.options.trunk_cache_bytes  # a bad HARNESS_TRUNK_CACHE_GIB fails before any model is loaded
    check_baseline(request.baseline)
    check_gate_outputs(request)
    check_model_path(request.base, "--base")  # a mistyped path fails before the data is read
    check_model_path(request.adapted, "--adapted")
    if request.out is not None:
        check_out_dir(request.out)  # an --out holding other files fails before any work, and is never replaced
    suites = load_suites(list(request.suites))
    check_options_fit(suites, request.options)
    check_selectable(suites, request.policy.metric, request.policy.name)  # or cannot select it meaningfully
    if request.gate is not None:  # fail on a bad policy, or one that must fail on these suites, before any model
        check_policy_fits(load_spec(request.gate, kind="policy"), [s for s, _ in suites], request.gate,
                          max_examples=request.options.max_examples, split=request.options.split)
    group, options = join_group(request.options)
    request = dataclasses.replace(request, options=options)
    try:
        return _run(request, timings, group)
    finally:
        if group is not None:
            group.close()


def check_gate_outputs(request: SweepRequest) -> None:
    """Refuse, before any work, gate options the sweep would not act on: a gate without a run directory (the gate
    judges the run directory the sweep writes; without ``--out`` it would be skipped and a CI job would pass a
    failing model: CI-integration trial, 2026-12-01), and ``--junit`` or ``--baseline`` without a gate.

    Parameters
    ----------
    request : SweepRequest
        Its ``gate``, ``junit``, ``baseline`` and ``out``.

    Raises
    ------
    SpecError
        Naming the option and how to fix the command.
    """
    where = "command line / run config"
    if request.gate is not None and request.out is None:
        raise SpecError(format_error(
            "sweep --gate needs --out: the gate judges the run directory the sweep writes (verdict.json, junit.xml)",
            where=where, fix="add --out RUN_DIR (or out: in the -c run file)"))
    extra = [f"--{k}" for k in ("junit", "baseline") if getattr(request, k) is not None]
    if request.gate is None and extra:
        raise SpecError(format_error(
            f"{' and '.join(extra)} {'are' if len(extra) > 1 else 'is'} for the gate, and no --gate policy is given",
            where=where, fix="add --gate POLICY (or gate: in the -c run file), or remove " + " and ".join(extra)))


def check_policy_fits(policy, suites: list[Suite], path: str | Path, *, max_examples: int | None = None,
                      split: str | None = None) -> None:
    """Refuse, before any model is loaded, a gate policy whose verdict on these suites is already decided
    (:func:`harness.gate.policy_problems`, the run's suites; ``harness validate POLICY SUITES...`` reports the
    same), or on splits capped at ``max_examples`` (``--max-examples``): a rule whose ``min_n`` or
    ``min_clusters`` exceeds the cap fails for sure (a split keeps at most that many examples, and as many
    documents at most); or when the run scores one split (``--split``) and a rule judges another, which the run
    does not have (trial: every point was scored, then the gate failed with exit 1 as if the model had
    regressed).

    Parameters
    ----------
    policy : GatePolicy
    suites : list of Suite
        The run's suites.
    path : str or Path
        The policy file, for the message.
    max_examples : int, default=None
        The run's ``--max-examples``.
    split : str, default=None
        The run's ``--split`` (the one split name scored), if any.

    Raises
    ------
    SpecError
        Listing every such problem.
    """
    from harness.gate import policy_problems
    from harness.spec.policy import RuleKind

    found, warned = policy_problems(policy, {s.name: (s.role.value, list(s.metrics)) for s in suites}, run=True)
    for line in warned:  # names the gate ignores on this run: said, not refused
        log.warning("%s", line)
    for rule in policy.rules if split is not None else ():
        if rule.split != split:
            found.append(f"rule {rule.name!r} judges split {rule.split!r}, but --split {split} scores only the "
                         f"{split!r} splits: the gate fails it; drop --split (alpha is selected on validation "
                         f"splits and the gate judges test splits)")
    for rule in policy.rules if max_examples is not None else ():
        if rule.kind is RuleKind.MAX_OVERLAP:  # counts rows of the whole split: no sample-size floor
            continue
        for key, need in (("min_n", rule.min_n), ("min_clusters", policy.min_clusters_of(rule))):
            if need is not None and need > max_examples:
                found.append(f"rule {rule.name!r} needs {key} = {need} per split, but --max-examples "
                             f"{max_examples} keeps at most {max_examples} examples per split: the gate fails it; "
                             f"raise --max-examples to at least {need} or lower {key}")
    if found:
        raise SpecError(format_error(
            f"the gate policy cannot pass on these suites ({len(found)} problem{'s' * (len(found) > 1)})",
            where=str(path), got=problem_lines(found),
            fix="edit the policy (or the suites), then check with `harness validate POLICY SUITES...`"))


def _run(request: SweepRequest, timings: dict[str, float], group) -> RunResult:
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(list(request.suites)), request.options)
        overlap, unchecked, overlap_notes = run_overlap(loaded)
    evaluator = BlendEvaluator(request, loaded, timings, group=group)
    try:
        sw = _evaluate_and_select(evaluator, loaded, timings, group)
    finally:
        evaluator.close()
    notes = [*evaluator.notes, *evaluator.scoring.notes, *overlap_notes, *_selection_notes(sw)]
    summary = _sweep_summary(sw, loaded, request, notes, overlap, unchecked)
    res = RunResult(summary=_with_noise(summary, sw, loaded, request), run_dir=None, sweep=sw, timings=timings,
                    model_kind=loaded.model_kind, selection_metrics=selection_metrics(loaded, request.policy),
                    outside_selection=[s.name for s, _ in loaded.suites if not s.in_selection])
    if request.out is not None:
        memory = rank_memory(evaluator.live.model, group)
        if group is None:
            _write_outputs(res, request, loaded, evaluator, timings, memory)
        else:  # rank 0 writes; every rank learns the run directory and the verdict
            res.run_dir, res.verdict = group.decide(
                lambda: _write_outputs(res, request, loaded, evaluator, timings, memory, group))
    return res


def _evaluate_and_select(evaluator: BlendEvaluator, loaded: LoadedSuites, timings: dict[str, float],
                         group=None) -> SweepResult:
    request = evaluator.request
    refs = [sd.ref for sd in loaded.splits]
    own_head = evaluator.base_own_head()
    metrics = selection_metrics(loaded, request.policy)

    def select(pts):
        # every rank holds the same records; rank 0 still decides, so the adaptive search cannot diverge
        pick = lambda: select_points(pts, refs, request.policy, metrics)  # noqa: E731
        return pick() if group is None else group.decide(pick)

    points, selection, search = search_alphas(evaluator.evaluate, request.alphas, select, budget=request.budget)
    by_id = {p.id: p for p in points}
    base_id = "base" if request.head == "shared" else point_of(0.0, request.head)[0]
    ensemble = {}
    if base_id in by_id and "adapted" in by_id:
        prepared = {p.ref: p for p in evaluator.scoring.prepared}
        with stage_timer(timings, "ensemble"):
            ensemble = output_ensembles(
                by_id[base_id], by_id["adapted"], [p.alpha for p in points],
                lambda pred: metrics_for(pred, prepared[pred.ref], loaded_metrics(loaded, pred.ref.suite),
                                         request.options))
    evaluator.engine.apply(selection.chosen_alpha)
    return SweepResult(points=tuple(points), selection=selection, ensemble=ensemble, search=search,
                       own_head_base=own_head)


def _with_noise(summary: Summary, sw: SweepResult, loaded: LoadedSuites, request: SweepRequest) -> Summary:
    """The summary with ``selection_noise``: how stable the alpha choice is under paired resampling of the
    validation splits (:func:`harness.sweep.selection_uncertainty`); a warning when the choice is unstable (the
    policy picks it in fewer than :data:`harness.sweep.STABLE_PICK_RATE` of the resamples)."""
    opts = request.options
    if opts.n_resamples <= 0:
        return summary
    by_id = {p.id: p for p in sw.points}
    pids = {p.alpha: p.id for p in sw.points}
    noise = selection_uncertainty({a: by_id[pid].predictions for a, pid in pids.items()}, sw.selection,
                                  n_resamples=opts.n_resamples, seed=opts.seed, level=opts.confidence,
                                  metric=selection_metrics(loaded, request.policy))
    if noise.warning:
        log.warning("selection: %s", noise.warning)
    return summary.model_copy(update={"selection_noise": noise.entry(pids)})


def selection_metrics(loaded: LoadedSuites, policy: SelectionPolicy) -> dict[str, str]:
    """Suite name -> the metric it selects alpha on: the policy's metric when one is set, else the suite's own;
    suites with ``in_selection: false`` are left out (not selected on)."""
    return {s.name: policy.metric or s.selection_metric for s, _ in loaded.suites if s.in_selection}


def selection_metric_name(loaded: LoadedSuites, policy: SelectionPolicy) -> str:
    """The selection metric recorded in the summary: the policy's, the one all suites share, else the metric of
    the ID suites (each suite's own metric is in ``suites`` of the summary)."""
    metrics = selection_metrics(loaded, policy)
    names = set(metrics.values())
    if len(names) == 1:
        return names.pop()
    return next(metrics[s.name] for s, _ in loaded.suites if s.role.value == "id" and s.name in metrics)


def loaded_metrics(loaded: LoadedSuites, suite: str) -> list[str]:
    """The metric names of a suite of the run."""
    return next(list(s.metrics) for s, _ in loaded.suites if s.name == suite)


def _write_outputs(res: RunResult, request: SweepRequest, loaded: LoadedSuites, evaluator: BlendEvaluator,
                   timings: dict[str, float], memory: dict, group=None) -> tuple:
    """Write the run directory, gate and report; returns ``(run_dir, verdict)``."""
    sw = res.sweep
    manifest = build_manifest(command=request.command, argv=list(request.argv), loaded=loaded, opts=request.options,
                              started=request.started,
                              device=str(evaluator.live.device), timings=timings, models=evaluator.models_info(),
                              extra={"head": request.head, "alphas": sw.alphas, "search": sw.search,
                                     "selection_metrics": res.selection_metrics,
                                     "outside_selection": res.outside_selection,
                                     **evaluator.manifest_extra(), "memory": memory,
                                     "distributed": group_info(group)})
    res.run_dir = write_run(request.out, res.summary, sw.predictions_list(), manifest)
    if request.gate is not None:
        res.verdict = run_gate(res.run_dir, request.gate, baseline=request.baseline, junit=request.junit)
    maybe_report(res.run_dir, request.options, loaded)
    return res.run_dir, res.verdict


def _selection_entry(sw: SweepResult, head: str, metric: str) -> SelectionEntry:
    sel = sw.selection
    pid_of = {a: point_of(a, head)[0] for a in sw.alphas}
    return SelectionEntry(
        policy=sel.policy.name, params=sel.policy.params, metric=metric, selected_on=sel.selected_on,
        chosen_alpha=sel.chosen_alpha, chosen_point=point_of(sel.chosen_alpha, head)[0], tie_break=TIE_BREAK,
        objective={pid_of[a]: (None if v is None or not math.isfinite(v) else float(v))
                   for a, v in sel.objective.items()},
        feasible={pid_of[a]: bool(v) for a, v in sel.feasible.items()},
        pareto=[pid_of[a] for a in sel.pareto], n_evaluations=sw.n_evaluations, search=sw.search)


def run_gate(run_dir: str | Path, policy: str | Path, *, baseline: str | Path | None = None,
             junit: str | Path | None = None):
    """:func:`harness.gate_outputs.run_gate` after checking that a given ``baseline`` folder exists (a missing
    one is unusable input, exit 2, even when no rule reads it)."""
    check_baseline(baseline)
    return _run_gate(run_dir, policy, baseline=baseline, junit=junit)


def _selection_notes(sw: SweepResult) -> list[str]:
    """A note for every evaluated alpha that could not be selected because a metric is NaN (e.g. fp16 overflow)."""
    sel = sw.selection

    def finite(v) -> bool:
        return v is not None and math.isfinite(v)

    nan = sorted(a for a in sel.objective if not (finite(sel.id_score.get(a)) and finite(sel.objective[a])))
    if not nan:
        return []
    note = (f"alphas {', '.join(f'{a:g}' for a in nan)} have NaN selection metrics (non-finite outputs?) and are "
            "infeasible: never chosen")
    log.warning("%s", note)
    return [note]


def _sweep_summary(sw: SweepResult, loaded: LoadedSuites, request: SweepRequest, notes: list[str],
                   overlap: list, unchecked: list) -> Summary:
    head = request.head
    chosen_pid = point_of(sw.selection.chosen_alpha, head)[0]
    points = []
    if sw.own_head_base is not None:
        points.append(PointEntry(id="base", role="base", alpha=0.0, label=sw.own_head_base.label))
    for p in sorted(sw.points, key=lambda p: p.alpha):
        points.append(PointEntry(id=p.id, role=p.role.value, alpha=p.alpha, is_chosen=(p.id == chosen_pid),
                                 label=p.label))
    return Summary(harness_version=harness.__version__, command=request.command, profile=request.profile,
                   notes=[*request.notes, *notes], overlap=overlap, overlap_unchecked=unchecked,
                   points=points,
                   results={pid: nest_results(r) for pid, r in sw.results.items()},
                   ensemble={pid: nest_results(r) for pid, r in sw.ensemble.items()},
                   selection=_selection_entry(sw, head, selection_metric_name(loaded, request.policy)),
                   bootstrap=bootstrap_info(request.options), suites=suite_infos(loaded))
