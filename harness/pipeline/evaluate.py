"""``eval``: score one model on suites and write its run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import harness
from harness.errors import SpecError, format_error
from harness.models.paths import check_model_path
from harness.pipeline.common import (LoadedSuites, RunOptions, RunResult, Scoring, bootstrap_info, classes_of,
                                     maybe_report, nest_results, suite_infos, build_manifest, load_suites,
                                     check_options_fit, prepare_splits, run_overlap, stage_timer)
from harness.pipeline.distributed import group_info, join_group, rank_memory
from harness.pipeline.notes import training_length_notes
from harness.pipeline.runners import load_live, make_runner, make_scorer, unpacked
from harness.rundir import check_out_dir, write_run
from harness.spec.schema import Suite
from harness.summary import PointEntry, Summary

log = logging.getLogger(__name__)



def evaluate_model(model: str | Path, suites: list[str | Path] | list[Suite], *, out: str | Path | None = None,
                   options: RunOptions = RunOptions(), argv: list[str] | None = None,
                   base: str | Path | None = None) -> RunResult:
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
    base : str or Path, default=None
        When ``model`` is a ReFT folder (:func:`harness.models.reft_io.reft_format`): the base model its
        interventions apply to (default: the base folder ``reft_config.json`` records); the adapted model
        (intervention strength 1) is scored. Refused for any other ``model``.

    Returns
    -------
    RunResult
        ``summary`` has one point (role ``adapted``, alpha None): the model.

    Raises
    ------
    HarnessError
        For bad specs, data, models or outputs (nothing is written to ``out`` then).
    """
    check_model_path(model, "model")  # a mistyped path fails before the data is read
    check_model_path(base, "--base")
    if out is not None:
        check_out_dir(out)  # an --out holding other files fails before any work, and is never replaced
    started = time.time()
    group, options = join_group(options)  # torchrun / accelerate launch: one rank of a data-parallel run
    try:
        return _evaluate(model, suites, out, options, argv, group, base, started)
    finally:
        if group is not None:
            group.close()


def _evaluate(model, suites, out, options: RunOptions, argv, group, base, started: float) -> RunResult:
    from harness.models.sanity import position_limit, require_trained  # torch: imported when a model is scored

    timings: dict[str, float] = {}
    with stage_timer(timings, "data"):
        specs = load_suites(suites)
        check_options_fit(specs, options)
        loaded = prepare_splits(specs, options)
        overlap, unchecked, overlap_notes = run_overlap(loaded)
    kind = loaded.model_kind
    with stage_timer(timings, "load_model"):
        live, engine = _load_scored(model, base, kind, options)
        if kind == "classification":
            require_trained(live, where=str(model))  # no randomly initialised head is ever scored (issue 17)
        columns = _label_columns(live, loaded, options, str(model)) if kind == "classification" else None
    with stage_timer(timings, "tokenize"):
        scoring = Scoring(live.tokenizer, loaded, options, live.device.type,
                          max_positions=position_limit(live.model), group=group)
    scorer = make_scorer(live, kind, options if engine is None else unpacked(options))
    runner = make_runner(scorer, live, kind, options, columns=columns)
    try:
        with stage_timer(timings, "predict"):
            preds = scoring.score(runner, "model", None, live.fingerprint,
                                  blend_path="none" if engine is None else engine.path)
        with stage_timer(timings, "metrics"):
            results = scoring.results(preds)
    finally:
        scoring.close()
        if engine is not None:
            engine.remove()
    notes = [*live.info.get("notes", ()), *scoring.notes, *overlap_notes,
             *training_length_notes(model, list(scoring.suites.values()))]
    summary = Summary(harness_version=harness.__version__, command="eval", notes=notes, overlap=overlap,
                      overlap_unchecked=unchecked,
                      points=[PointEntry(id="model", role="adapted", alpha=None, label=str(model))],
                      results={"model": nest_results(results)}, bootstrap=bootstrap_info(options),
                      suites=suite_infos(loaded))
    res = RunResult(summary=summary, run_dir=None, timings=timings, model_kind=kind)
    if out is not None:
        manifest = build_manifest(command="eval", argv=argv, loaded=loaded, opts=options, device=str(live.device),
                                  started=started,
                                  timings=timings, models={"model": {"source": str(model), "path": str(live.path),
                                                                     "fingerprint": live.fingerprint}},
                                  extra={"model_kind": kind, "intervention": None if engine is None else
                                         engine.manifest(), "packed_batches": getattr(scorer, "packed", False),
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


def _load_scored(model: str | Path, base: str | Path | None, kind: str, options: RunOptions):
    """(live model, None) for a checkpoint; for a PEFT adapter folder, (its base with the adapter merged in, as the
    sweep's alpha 1 has it, None); for a ReFT folder, (the base with its identity replaced by base + adaptation,
    the :class:`~harness.models.reft.InterventionEngine` at strength 1). An adapter's or ReFT folder's base is
    ``base``, else the base folder it records.

    Raises
    ------
    SpecError
        ``base`` given for a model that is neither a ReFT folder nor an adapter, or an adapter or ReFT folder
        whose base is neither given nor recorded as an existing folder.
    """
    from harness.models.adapters import load_reft_adapted  # torch: imported when a model is scored
    from harness.models.reft import InterventionEngine
    from harness.models.reft_io import recorded_base, reft_format

    from harness.models.adapters import adapter_config, load_adapted
    from harness.models.load import is_adapter_dir

    mp = Path(model).expanduser()
    if mp.is_dir() and is_adapter_dir(mp):  # a PEFT adapter (LoRA, DoRA, ...): scored merged into its base

        recorded = adapter_config(mp).get("base_model_name_or_path")
        base = base if base is not None else (recorded if recorded and Path(recorded).expanduser().is_dir()
                                              else None)
        if base is None:
            raise SpecError(format_error("a PEFT adapter needs the base model it adapts", where=str(model),
                                         got=f"recorded base {recorded!r}" if recorded else "none recorded",
                                         fix="pass --base BASE_FOLDER"))
        live = load_live(base, kind, options)
        adapted = load_adapted(live, mp.resolve(), allow_pickle=options.allow_pickle)
        missing, unexpected = live.model.load_state_dict(adapted.state_dict, strict=False)
        if missing or unexpected:  # the merged state is the base's key space: anything else is a bug, not data
            raise RuntimeError(f"merged adapter state does not fit its base: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        live.info["base_fingerprint"] = live.fingerprint
        live.fingerprint = adapted.fingerprint  # the scored model is base + adapter (store keys, manifest)
        return live, None
    if not reft_format(model):
        if base is not None:
            raise SpecError(format_error("--base applies only when --model is a ReFT folder or a PEFT adapter",
                                         where="--base", got=str(base),
                                         fix="drop --base, or pass the ReFT folder or adapter as --model"))
        return load_live(model, kind, options), None
    base = base if base is not None else recorded_base(model)
    if base is None or not Path(base).expanduser().is_dir():
        raise SpecError(format_error("a ReFT folder needs the base model its interventions apply to",
                                     where=str(model), got=f"recorded base {base!r}" if base else "none recorded",
                                     fix="pass --base BASE_FOLDER"))
    live = load_live(base, kind, options)
    adapted = load_reft_adapted(live, Path(model).expanduser().resolve(), allow_pickle=options.allow_pickle,
                                positions=options.reft_positions)
    live.info["base_fingerprint"] = live.fingerprint
    live.fingerprint = adapted.fingerprint  # the scored model is base + adaptation (store keys, manifest)
    return live, InterventionEngine(live.model, adapted.reft, alpha=1.0)
