"""``eval``: score one model on suites and write its run directory."""

from __future__ import annotations

import logging
from pathlib import Path

import harness
from harness.pipeline.common import (RunOptions, RunResult, Scoring, bootstrap_info, classes_of, maybe_report,
                                     nest_results, suite_infos, build_manifest, load_suites, prepare_splits,
                                     run_overlap, stage_timer)
from harness.models.checks import position_limit, require_trained
from harness.models.load import align_labels, load_model
from harness.models.scorer import HFScorer
from harness.predict import ClassifierRunner
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
        A sequence-classification checkpoint folder or hub id.
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
    timings: dict[str, float] = {}
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(suites), options)
        classes = classes_of(loaded)
        overlap, overlap_notes = run_overlap(loaded)
    with stage_timer(timings, "load_model"):
        live = load_model(model, dtype=options.dtype, device=options.device, allow_pickle=options.allow_pickle,
                          trust_remote_code=options.trust_remote_code)
        require_trained(live, where=str(model))  # no randomly initialised head is ever scored (issue 17)
        columns = align_labels(live.id2label, classes, options.label_map, where=str(model))
    suites_by_name = {s.name: s for s, _ in loaded.suites}
    with stage_timer(timings, "tokenize"):
        scoring = Scoring(live.tokenizer, loaded.splits, suites_by_name, options, live.device.type,
                          max_positions=position_limit(live.model))
    scorer = HFScorer(live.model, compile=options.compile)
    runner = ClassifierRunner(scorer, pad_id=int(live.tokenizer.pad_token_id or 0), batch_tokens=options.batch_tokens,
                              columns=columns, progress=options.progress, compiled=options.compile)
    try:
        with stage_timer(timings, "predict"):
            preds = scoring.score(runner, "model", None, live.fingerprint)
        with stage_timer(timings, "metrics"):
            results = scoring.results(preds)
    finally:
        scoring.close()
    notes = [*live.info.get("notes", ()), *scoring.notes, *overlap_notes]
    summary = Summary(harness_version=harness.__version__, command="eval", notes=notes, overlap=overlap,
                      points=[PointEntry(id="model", role="adapted", alpha=None, label=str(model))],
                      results={"model": nest_results(results)}, bootstrap=bootstrap_info(options),
                      suites=suite_infos(loaded))
    res = RunResult(summary=summary, run_dir=None, timings=timings)
    if out is not None:
        manifest = build_manifest(command="eval", argv=argv, loaded=loaded, opts=options, device=str(live.device),
                                  timings=timings, models={"model": {"source": str(model), "path": str(live.path),
                                                                     "fingerprint": live.fingerprint}},
                                  extra={"packed_batches": scorer.packed,
                                         "packed_attention": scorer.packing_mode,
                                         "compiled": options.compile})
        res.run_dir = write_run(out, summary, list(preds.values()), manifest)
        maybe_report(res.run_dir, options, loaded)
    return res


