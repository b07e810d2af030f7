"""``sweep``: evaluate base, adapted and blends over alpha, select alpha, write the run directory; ``gate`` on a
stored run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import harness
from harness.errors import HarnessError, format_error
from harness.pipeline.common import (LoadedSuites, RunOptions, RunResult, Scoring, bootstrap_info, classes_of,
                                     maybe_report, metrics_for, nest_results, suite_infos, build_manifest,
                                     load_suites, prepare_splits, stage_timer)
from harness.records import PointRole, Predictions, point_id
from harness.rundir import write_run
from harness.spec.schema import Suite
from harness.summary import PointEntry, Selection as SelectionEntry, Summary

log = logging.getLogger(__name__)



@dataclass
class _Pair:
    """Loaded base + adapted side of a blend, with label columns per point kind."""

    live: Any
    adapted: Any
    base_sd: dict
    base_columns: np.ndarray | None
    blend_columns: np.ndarray
    head: str


def _load_pair(base: str | Path, adapted: str | Path, classes: list[str], head: str, options: RunOptions,
               timings: dict[str, float]) -> _Pair:
    from harness.errors import BlendError, ModelError
    from harness.models.adapters import load_adapted
    from harness.models.load import align_labels, load_model
    from harness.tokcache import tokenizer_fingerprint

    with stage_timer(timings, "load_model"):
        live = load_model(base, dtype=options.dtype, device=options.device, allow_pickle=options.allow_pickle,
                          trust_remote_code=options.trust_remote_code)
        base_sd = {k: v.detach().to("cpu").clone() for k, v in live.model.state_dict().items()}
        adp = load_adapted(live, adapted, allow_pickle=options.allow_pickle,
                           trust_remote_code=options.trust_remote_code)
    if adp.tokenizer is not None and tokenizer_fingerprint(adp.tokenizer) != tokenizer_fingerprint(live.tokenizer):
        raise BlendError(format_error("base and adapted models use different tokenizers", where=str(adapted),
                                      expected=f"the base tokenizer ({len(live.tokenizer)} tokens)",
                                      got=f"a tokenizer of {len(adp.tokenizer)} tokens",
                                      fix="blend models that share a tokenizer (a resized vocabulary cannot be "
                                          "interpolated)"))
    b_names = [live.id2label[i] for i in sorted(live.id2label)]
    a_names = [adp.id2label[i] for i in sorted(adp.id2label)]
    if head == "shared":
        generic = all(n.startswith("LABEL_") for n in b_names + a_names)
        if len(b_names) != len(a_names) or (b_names != a_names and not generic):
            raise BlendError(format_error("base and adapted heads have different labels", where="head",
                                          expected=f"base labels {b_names}", got=f"adapted labels {a_names}",
                                          fix="interpolating heads with different labels mixes classes; use "
                                              "--head adapted to keep the adapted head and blend only the backbone"))
    blend_columns = align_labels(adp.id2label, classes, options.label_map, where=f"adapted model {adapted}")
    try:
        base_columns = align_labels(live.id2label, classes, options.label_map, where=f"base model {base}")
    except ModelError:
        if head == "shared":
            raise
        base_columns = _base_columns_by_name(b_names, classes)
        if base_columns is None:
            log.warning("--head adapted: the base model's labels %s cannot score classes %s; the true base is not "
                        "evaluated as its own point", b_names, classes)
        else:
            log.info("--head adapted: the true base model's labels %s are mapped by name to %s", b_names, classes)
    return _Pair(live=live, adapted=adp, base_sd=base_sd, base_columns=base_columns, blend_columns=blend_columns,
                 head=head)


def _base_columns_by_name(names: list[str], classes: list[str]) -> np.ndarray | None:
    """Columns of a reference base whose real label names are the classes in another order (else None)."""
    lower = [n.lower() for n in names]
    if sorted(lower) != sorted(c.lower() for c in classes):
        return None
    return np.array([lower.index(c.lower()) for c in classes], dtype=np.int64)


def _point_of(alpha: float, head: str) -> tuple[str, str, str]:
    """(point id, role, label) of a blend alpha."""
    if head == "shared" and alpha == 0.0:
        return "base", "base", ""
    if alpha == 1.0:
        return "adapted", "adapted", ""
    label = "base backbone + adapted head" if (head == "adapted" and alpha == 0.0) else ""
    return point_id(PointRole.BLEND, alpha), "blend", label


def sweep_models(base: str | Path, adapted: str | Path, suites: list[str | Path] | list[Suite], *,
                 alphas: str | list[float] | None = None, select: str = "max-shift-within-id",
                 select_metric: str = "accuracy", tolerance: float = 0.01, weight: float = 0.5,
                 head: str = "shared", gate: str | Path | None = None, baseline: str | Path | None = None,
                 out: str | Path | None = None, options: RunOptions = RunOptions(), argv: list[str] | None = None,
                 command: str = "sweep", profile: str | None = None, notes: list[str] | None = None,
                 junit: str | Path | None = None, budget: int = 6) -> RunResult:
    """Evaluate base, adapted and blends over alpha, select alpha on validation splits, optionally gate, write
    the run directory and the report (``harness sweep``).

    Parameters
    ----------
    base, adapted : str or Path
        Base checkpoint; adapted checkpoint (full fine-tune) or PEFT adapter folder.
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
    from harness.models.blend import BlendEngine
    from harness.models.trunk import TrunkCache, budget_bytes_from_env, frozen_depth
    from harness.store import blend_fingerprint
    from harness.sweep import SelectionPolicy, SweepResult, adaptive_alphas, parse_alphas, select_alpha, \
        validation_scores

    timings: dict[str, float] = {}
    policy = SelectionPolicy(name=select, metric=select_metric, tolerance=tolerance, weight=weight)
    grid = parse_alphas(alphas)
    trunk_budget = budget_bytes_from_env()  # a bad HARNESS_TRUNK_CACHE_GIB fails before any model is loaded
    if gate is not None:
        from harness.spec.load import load_spec

        load_spec(gate, kind="policy")  # fail on a bad policy before any model is loaded
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(suites), options)
        classes = classes_of(loaded)
    pair = _load_pair(base, adapted, classes, head, options, timings)
    live = pair.live
    suites_by_name = {s.name: s for s, _ in loaded.suites}
    with stage_timer(timings, "tokenize"):
        scoring = Scoring(live, loaded.splits, suites_by_name, options, pair.blend_columns)
    sw = SweepResult(alphas=[])
    refs = [sd.ref for sd in loaded.splits]
    by_alpha: dict[float, dict] = {}
    try:
        if head == "adapted" and pair.base_columns is not None:
            with stage_timer(timings, "predict"):
                scoring.columns = pair.base_columns
                preds = scoring.score("base", 0.0, live.fingerprint, head="own", blend_path="none")
                scoring.columns = pair.blend_columns
            with stage_timer(timings, "metrics"):
                sw.results["base"], sw.predictions["base"] = scoring.results(preds), preds
        with stage_timer(timings, "blend_setup"):
            engine = BlendEngine(live.model, pair.base_sd, pair.adapted.state_dict, head=head)
            pair.base_sd.clear()
            pair.adapted.state_dict.clear()
            frozen = frozen_depth(live.model, engine.changed_names()) if trunk_budget > 0 else 0
            if frozen:
                scoring.trunk = TrunkCache(live.model, frozen, trunk_budget)

        def evaluate(alpha: float) -> None:
            pid, _, _ = _point_of(alpha, head)
            if alpha == 0.0 and head == "shared":
                fp, path = live.fingerprint, "none"
            elif alpha == 1.0:
                fp, path = pair.adapted.fingerprint, "none"
            else:
                fp, path = blend_fingerprint(live.fingerprint, pair.adapted.fingerprint, alpha, head), "merged"
            with stage_timer(timings, "blend"):
                engine.apply(alpha)
            with stage_timer(timings, "predict"):
                preds = scoring.score(pid, alpha, fp, head=head, blend_path=path)
            with stage_timer(timings, "metrics"):
                res = scoring.results(preds)
            sw.results[pid], sw.predictions[pid] = res, preds
            by_alpha[alpha] = res
            sw.alphas.append(alpha)

        def current_selection():
            ids, shifts, on = validation_scores(by_alpha, refs, policy.metric)
            return select_alpha(ids, shifts, policy, on)

        if grid == "adaptive":
            sw.search = "adaptive"
            adaptive_alphas(evaluate, current_selection, budget=budget)
        else:
            for a in grid:
                evaluate(a)
        sw.n_evaluations = len(sw.alphas)
        sw.selection = current_selection()
        with stage_timer(timings, "ensemble"):
            _ensembles(sw, scoring, head)
        engine.apply(sw.selection.chosen_alpha)
    finally:
        scoring.close()
    summary = _sweep_summary(sw, loaded, options, head, command, profile, notes)
    # gate-stats: how stable the alpha choice is under resampling of the validation splits (optional summary field)
    if options.n_resamples > 0:
        from harness.sweep import selection_uncertainty
        pids = {a: _point_of(a, head)[0] for a in sw.alphas}
        noise = selection_uncertainty({a: sw.predictions[pid] for a, pid in pids.items()}, sw.selection,
                                      n_resamples=options.n_resamples, seed=options.seed, level=options.confidence)
        if noise.warning:
            log.warning("selection: %s", noise.warning)
        summary = summary.model_copy(update={"selection_noise": noise.entry(pids)})
    # gate-stats: end
    res = RunResult(summary=summary, run_dir=None, sweep=sw, timings=timings)
    if out is None:
        return res
    models = {"base": {"source": str(base), "path": str(live.path), "fingerprint": live.fingerprint},
              "adapted": {"source": str(adapted), "fingerprint": pair.adapted.fingerprint,
                          "kind": pair.adapted.kind, **pair.adapted.info}}
    manifest = build_manifest(command=command, argv=argv, loaded=loaded, opts=options, device=str(live.device),
                              timings=timings, models=models,
                              extra={"head": head, "alphas": sw.alphas, "search": sw.search,
                                     "store_computed_splits": scoring.n_computed,
                                     "packed_batches": scoring.scorer.packed,
                                     "packed_attention": scoring.scorer.packing_mode, "compiled": options.compile,
                                     "trunk_reuse": None if scoring.trunk is None else {
                                         "frozen_layers": scoring.trunk.k, "replayed_passes": scoring.trunk.n_replayed,
                                         "stored_gib": round(scoring.trunk.n_bytes / 2**30, 4)}})
    res.run_dir = write_run(out, summary, sw.predictions_list(), manifest)
    if gate is not None:
        res.verdict = run_gate(res.run_dir, gate, baseline=baseline, junit=junit)
    maybe_report(res.run_dir, options, loaded)
    return res


def _ensembles(sw, scoring: Scoring, head: str) -> None:
    from harness.sweep import ensemble_logits

    base_id = "base" if head == "shared" else point_id(PointRole.BLEND, 0.0)
    if base_id not in sw.predictions or "adapted" not in sw.predictions:
        return
    by_ref = {t.ref: t for t in scoring.toks}
    for alpha in sorted(sw.alphas):
        pid = point_id(PointRole.BLEND, alpha)
        res = {}
        for ref, pb in sw.predictions[base_id].items():
            pa = sw.predictions["adapted"][ref]
            logits = ensemble_logits(pb.logits, pa.logits, alpha)
            pred = Predictions(ref=ref, point=f"ensemble@{pid}", alpha=alpha, example_ids=pb.example_ids,
                               source_ids=pb.source_ids, labels=pb.labels, logits=logits)
            res[ref] = metrics_for(pred, by_ref[ref], scoring.suites[ref.suite].metrics, scoring.opts)
        sw.ensemble[pid] = res


def _sweep_summary(sw, loaded: LoadedSuites, options: RunOptions, head: str, command: str, profile: str | None,
                   notes: list[str] | None) -> Summary:
    from harness.sweep import TIE_BREAK

    sel = sw.selection
    chosen_pid = _point_of(sel.chosen_alpha, head)[0]
    points = []
    if head == "adapted" and "base" in sw.results:
        points.append(PointEntry(id="base", role="base", alpha=0.0, label="base model (its own head)"))
    for a in sorted(sw.alphas):
        pid, role, label = _point_of(a, head)
        points.append(PointEntry(id=pid, role=role, alpha=a, is_chosen=(pid == chosen_pid), label=label))
    pid_of = {a: _point_of(a, head)[0] for a in sw.alphas}
    selection = SelectionEntry(
        policy=sel.policy.name, params=sel.policy.params, metric=sel.policy.metric, selected_on=sel.selected_on,
        chosen_alpha=sel.chosen_alpha, chosen_point=chosen_pid, tie_break=TIE_BREAK,
        objective={pid_of[a]: (None if v is None or not math.isfinite(v) else float(v))
                   for a, v in sel.objective.items()},
        feasible={pid_of[a]: bool(v) for a, v in sel.feasible.items()},
        pareto=[pid_of[a] for a in sel.pareto], n_evaluations=sw.n_evaluations, search=sw.search)
    return Summary(harness_version=harness.__version__, command=command, profile=profile, notes=list(notes or []),
                   points=points, results={pid: nest_results(r) for pid, r in sw.results.items()},
                   ensemble={pid: nest_results(r) for pid, r in sw.ensemble.items()}, selection=selection,
                   bootstrap=bootstrap_info(options), suites=suite_infos(loaded))


def run_gate(run_dir: str | Path, policy: str | Path, *, baseline: str | Path | None = None,
             junit: str | Path | None = None):
    """Judge a stored run with a gate policy and write verdict.json, junit.xml and the Markdown summary.

    Returns
    -------
    harness.records.Verdict
    """
    from harness.gate import RunView, judge
    from harness.gate_outputs import write_gate_outputs
    from harness.spec.load import load_spec

    pol = load_spec(policy, kind="policy")
    cand = RunView.from_dir(run_dir)
    base_view, base_error = None, None
    if baseline is not None:
        try:
            base_view = RunView.from_dir(baseline)
        except HarnessError as e:  # a missing or unreadable baseline fails the rules that need it (exit 1)
            base_error = str(e)
    verdict = judge(cand, pol, base_view, baseline_error=base_error)
    # gate-stats: count this gate's use of the run's test splits in the store (selection honesty; the report shows it)
    from harness.gate import note_split_uses
    note_split_uses(verdict, cand)
    write_gate_outputs(run_dir, verdict, junit_path=junit)
    return verdict


