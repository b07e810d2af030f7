"""``eval``: score one model on suites and write its run directory."""

from __future__ import annotations

import logging
from pathlib import Path

import harness
from harness.pipeline.common import (LoadedSuites, RunOptions, RunResult, Scoring, bootstrap_info, classes_of,
                                     maybe_report, nest_results, suite_infos, build_manifest, load_suites,
                                     prepare_splits, run_overlap, stage_timer)
from harness.pipeline.distributed import group_info, join_group, rank_memory
from harness.pipeline.notes import training_length_notes
from harness.pipeline.runners import load_live, make_runner, make_scorer
from harness.rundir import write_run
from harness.spec.schema import Suite
from harness.summary import PointEntry, Summary

log = logging.getLogger(__name__)



def evaluate_model(model: str | Path, suites: list[str | Path] | list[Suite], *, out: str | Path | None = None,
                   options: RunOptions = RunOptions(), argv: list[str] | None = None) -> RunResult:
    """Score one model on every evaluation split of the suites (``harness eval``).

    Parameters
    ----------
    model : str or Path
        A checkpoint folder or hub id: a sequence classifier for classification suites, a causal language model
        for multiple_choice / generation / perplexity suites (:func:`harness.pipeline.common.model_kind`).
    suites : list
        Suite YAML files (or folders, or Suite objects).
    out : str or Path, default=None
        Run directory to write (summary.json, per_alpha.csv, predictions.parquet, manifest.json, report).
    options : RunOptions
        Device, dtype, batching, bootstrap and safety settings.

    Returns
    -------
    RunResult
        ``summary`` has one point (role ``adapted``, alpha None): the model.

    Raises
    ------
    HarnessError
        For bad specs, data, models or outputs (nothing is written to ``out`` then).
    """
    group, options = join_group(options)  # torchrun / accelerate launch: one rank of a data-parallel run
    try:
        return _evaluate(model, suites, out, options, argv, group)
    finally:
        if group is not None:
            group.close()


def _evaluate(model, suites, out, options: RunOptions, argv, group) -> RunResult:
    from harness.models.sanity import position_limit, require_trained  # torch: imported when a model is scored

    timings: dict[str, float] = {}
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(suites), options)
        overlap, overlap_notes = run_overlap(loaded)
    kind = loaded.model_kind
    with stage_timer(timings, "load_model"):
        live = load_live(model, kind, options)
        if kind == "classification":
            require_trained(live, where=str(model))  # no randomly initialised head is ever scored (issue 17)
        columns = _label_columns(live, loaded, options, str(model)) if kind == "classification" else None
    with stage_timer(timings, "tokenize"):
        scoring = Scoring(live.tokenizer, loaded, options, live.device.type,
                          max_positions=position_limit(live.model), group=group)
    scorer = make_scorer(live, kind, options)
    runner = make_runner(scorer, live, kind, options, columns=columns)
    try:
        with stage_timer(timings, "predict"):
            preds = scoring.score(runner, "model", None, live.fingerprint)
        with stage_timer(timings, "metrics"):
            results = scoring.results(preds)
    finally:
        scoring.close()
    notes = [*live.info.get("notes", ()), *scoring.notes, *overlap_notes,
             *training_length_notes(model, list(scoring.suites.values()))]
    summary = Summary(harness_version=harness.__version__, command="eval", notes=notes, overlap=overlap,
                      points=[PointEntry(id="model", role="adapted", alpha=None, label=str(model))],
                      results={"model": nest_results(results)}, bootstrap=bootstrap_info(options),
                      suites=suite_infos(loaded))
    res = RunResult(summary=summary, run_dir=None, timings=timings)
    if out is not None:
        manifest = build_manifest(command="eval", argv=argv, loaded=loaded, opts=options, device=str(live.device),
                                  timings=timings, models={"model": {"source": str(model), "path": str(live.path),
                                                                     "fingerprint": live.fingerprint}},
                                  extra={"model_kind": kind, "packed_batches": getattr(scorer, "packed", False),
                                         "packed_attention": getattr(scorer, "packing_mode", None),
                                         "compiled": options.compile, "device_map": live.info.get("device_map"),
                                         "memory": rank_memory(live.model, group), "distributed": group_info(group)})

        def write() -> Path:
            run_dir = write_run(out, summary, list(preds.values()), manifest)
            maybe_report(run_dir, options, loaded)
            return run_dir

        res.run_dir = write() if group is None else group.decide(write)  # rank 0 writes; every rank gets the path
    return res


def _label_columns(live, loaded: LoadedSuites, options: RunOptions, where: str):
    """The classifier's logit column of each suite class (classification runs)."""
    from harness.models.load import align_labels  # torch: imported when a model is scored

    return align_labels(live.id2label, classes_of(loaded), options.label_map, where=where)
