"""What eval, sweep and blend share: run options, loading suites and splits, scoring a live model on every
split (with the results store), summary pieces and the manifest."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

import harness
from harness.errors import SpecError, format_error
from harness.metrics import compute_metrics
from harness.pipeline.notes import (cap_note, count_nonfinite, nonfinite_note, regex_misses, regex_note,
                                    whitespace_matches, whitespace_note)
from harness.records import Predictions, SplitData, SplitRef, SplitResult
from harness.progress import command_wall_time, track
from harness.settings import Settings
from harness.data.check import missing_class_notes, missing_classes
from harness.data.lm_rows import checked_rows
from harness.data.sources import load_splits, load_splits_or_problems, sibling_resolver
from harness.data.splits import run_suite
from harness.rundir import per_alpha_frame
from harness.spec.load import load_suite, read_yaml, spec_hash, suite_name_clashes
from harness.store import ResultsStore, prediction_key
from harness.tasks import task_for
from harness.tasks.base import merge_records
from harness.spec.schema import Suite
from harness.summary import BootstrapInfo, MetricEntry, SplitEntry, SuiteInfo, Summary

__all__ = ["RunOptions", "LoadedSuites", "RunResult", "Scoring", "stage_timer", "load_suites", "prepare_splits",
           "build_manifest", "bootstrap_info", "classes_of", "maybe_report", "metrics_for", "nest_results",
           "suite_infos", "model_kind", "run_overlap", "check_baseline", "check_options_fit", "batch_tokens_used"]

log = logging.getLogger(__name__)


RunOptions = Settings
"""The run settings (:class:`harness.settings.Settings`; the historical name, kept for callers)."""


@dataclass
class LoadedSuites:
    """Suites with their files, the splits to evaluate (``SplitData`` in suite, split order) and, per
    language-model suite with a few-shot block, the rows of its few-shot split."""

    suites: list[tuple[Suite, Path | None]]
    splits: list[SplitData]
    fewshot: dict[str, SplitData] = field(default_factory=dict)
    train: list[SplitData] = field(default_factory=list)  # ID suites' train splits (overlap checks only)
    unread_train: dict[str, str] = field(default_factory=dict)  # suite/split -> why it could not be read
    notes: list[str] = field(default_factory=list)  # train splits that could not be read (run notes)

    @property
    def model_kind(self) -> str:
        """``classification`` (a sequence classifier scores every suite) or ``causal_lm`` (a language model)."""
        return model_kind([s for s, _ in self.suites])

    def suite(self, name: str) -> Suite:
        """The run's suite called ``name``."""
        return next(s for s, _ in self.suites if s.name == name)


def model_kind(suites: list[Suite]) -> str:
    """The kind of model a set of suites needs: ``classification`` or ``causal_lm``.

    Raises
    ------
    SpecError
        When classification suites and language-model suites are mixed (one model cannot serve both).
    """
    kinds = {"classification" if s.task_name == "classification" else "causal_lm" for s in suites}
    if len(kinds) > 1:
        names = {k: [s.name for s in suites if (s.task_name == "classification") == (k == "classification")]
                 for k in kinds}
        raise SpecError(format_error("classification suites and language-model suites cannot share a run",
                                     got=f"classification: {names['classification']}; language-model tasks: "
                                         f"{names['causal_lm']}",
                                     fix="a sequence classifier scores classification suites and a causal "
                                         "language model scores multiple_choice/generation/perplexity suites: "
                                         "run them separately"))
    return kinds.pop()


@dataclass
class RunResult:
    """What eval and sweep return: the summary, the run directory, and (for a gated sweep) the verdict."""

    summary: Summary
    run_dir: Path | None
    verdict: Any = None
    sweep: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    model_kind: str = "classification"  # of the suites scored (LoadedSuites.model_kind): what was cached
    selection_metrics: dict[str, str] = field(default_factory=dict)  # sweep: suite -> its selection metric
    outside_selection: list[str] = field(default_factory=list)  # sweep: suites with in_selection: false

    def to_pandas(self) -> pd.DataFrame:
        """The per-alpha, per-suite table (one row per point, suite, split and metric; see per_alpha.csv)."""
        return per_alpha_frame(self.summary)


@contextmanager
def stage_timer(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block (seconds) to ``timings[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------- suites --

def load_suites(paths: list[str | Path] | list[Suite]) -> list[tuple[Suite, Path | None]]:
    """Load suite files (or accept Suite objects); a folder means every suite file in it.

    Raises
    ------
    SpecError
        If a file is invalid or not a suite, or two suites share a name.
    """
    out: list[tuple[Suite, Path | None]] = []
    for p in paths:
        if isinstance(p, Suite):
            out.append((p, None))
            continue
        p = Path(p)
        files = sorted(q for q in p.glob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            if p.is_dir():
                if read_yaml(f).get("kind") != "suite":
                    continue
            out.append((load_suite(f), f.resolve()))
    if not out:
        raise SpecError(format_error("no suite given", where="--suite", fix="pass one or more suite YAML files"))
    clashes = suite_name_clashes((s.name, f) for s, f in out)
    if clashes:  # names both files (trial: the message ended at "give every suite a unique name:")
        raise SpecError("\n".join(clashes.values()))
    names = [s.name for s, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # the same file twice
        raise SpecError(format_error("a suite is given twice", where=", ".join(dup),
                                     fix="pass each suite file (or folder) once"))
    return out


def _apply_overrides(suite: Suite, opts: RunOptions) -> Suite:
    return run_suite(suite, max_examples=opts.max_examples, max_length=opts.max_length)


def prepare_splits(suites: list[tuple[Suite, Path | None]], opts: RunOptions) -> LoadedSuites:
    """Load the evaluation splits of every suite (``opts.split`` keeps one name, else the validation and test
    splits), each few-shot split, and the train splits of ID suites for the overlap check only (read with the
    other splits, each file once; under ``--max-examples`` read again whole, since a sample of them would
    undercount the evaluated rows they hold, while few-shot examples still come from the capped read): a train
    split that cannot be read (a missing file) is recorded in ``LoadedSuites.unread_train`` with a run note, never
    an error, since nothing is scored on it; its overlap pairs are then recorded as unchecked and a
    ``max_overlap`` gate rule fails on them (:func:`run_overlap`).

    Raises
    ------
    SpecError, DataError
        For unknown split names and data problems of the splits scored or read for few-shot examples.
    """
    given = {s.name: s for s, _ in suites}  # as written: a capped run's overlap check reads ID train splits whole
    suites = [(_apply_overrides(s, opts), p) for s, p in suites]
    known = {s.name: (s, p) for s, p in suites}
    splits: list[SplitData] = []
    train: list[SplitData] = []  # for the overlap check: whole under --max-examples
    fewshot_pool: list[SplitData] = []  # read with the run's overrides, as the few-shot examples are drawn
    unread: dict[str, str] = {}
    for suite, path in suites:
        siblings = sibling_resolver(path)

        def resolve(name: str, _siblings=siblings) -> tuple[Suite, Path | None]:
            # suites given together first, then the files beside this one: both with the run's overrides (a
            # derived suite's rows are its parent's, so --max-examples caps them through the parent)
            if name in known:
                return known[name]
            parent, parent_path = _siblings(name)
            return _apply_overrides(parent, opts), parent_path

        if opts.split is not None:
            splits += load_splits(suite, suite_path=path, split_names=[opts.split], resolve=resolve).values()
            continue
        roles = ("train", "validation", "test") if suite.role.value == "id" else ("validation", "test")
        read, problems = load_splits_or_problems(suite, suite_path=path, resolve=resolve, roles=roles)
        splits += [sd for sd in read.values() if sd.ref.role.value != "train"]
        read_train = [sd for sd in read.values() if sd.ref.role.value == "train"]
        fewshot_pool += read_train
        if read_train and opts.max_examples is not None:
            # a sample of the train rows would undercount the evaluated rows found in them (max_overlap rules)
            whole, more = load_splits_or_problems(run_suite(given[suite.name], max_length=opts.max_length),
                                                  suite_path=path, resolve=resolve, roles=("train",))
            read_train = list(whole.values())
            problems = {**problems, **more}
        train += read_train
        unread.update({f"{suite.name}/{name}": _one_line(e) for name, e in problems.items()})
    if not splits:
        raise SpecError(format_error("the suites define no validation or test split to evaluate",
                                     fix="add splits with role validation or test"))
    model_kind([s for s, _ in suites])
    notes = [unread_train_note(key, problem) for key, problem in unread.items()]
    return LoadedSuites(suites=suites, splits=splits, fewshot=_fewshot_splits(suites, [*splits, *fewshot_pool]),
                        train=train, unread_train=unread, notes=notes)


def _one_line(err: Exception) -> str:
    """An error message (:func:`harness.errors.format_error`: one clause per line) as one line."""
    first, *rest = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
    return first.rstrip(".") + (f" ({'; '.join(rest)})" if rest else "")


def unread_train_note(key: str, problem: str) -> str:
    """The run note for an ID train split (``suite/split``) that could not be read."""
    return (f"train split {key} was not read, so the overlap of the evaluated splits with it is not checked "
            f"(summary.json lists those pairs under overlap_unchecked, and a max_overlap gate rule fails on them: "
            f"never a pass without data); scoring does not read it. The problem: {problem}")


def _fewshot_splits(suites: list[tuple[Suite, Path | None]], read: list[SplitData]) -> dict[str, SplitData]:
    """The few-shot split of every language-model suite whose prompt has a few-shot block (from ``read``, the
    splits already loaded, when there; any problem of reading it raises)."""
    have = {sd.ref.key: sd for sd in read}
    out: dict[str, SplitData] = {}
    for suite, path in suites:
        fs = getattr(getattr(suite.task, "prompt", None), "fewshot", None)
        if fs is not None:
            key = f"{suite.name}/{fs.split}"
            out[suite.name] = have[key] if key in have else load_splits(suite, suite_path=path,
                                                                        split_names=[fs.split])[fs.split]
    return out


def run_overlap(loaded: LoadedSuites) -> tuple[list, list, list[str]]:
    """(overlap entries, unchecked pairs, notes) of the run's splits (:mod:`harness.data.overlap`): the pairs of
    an ID train split that could not be read are unchecked; each note is also warned."""
    from harness.data.overlap import overlap_notes, split_overlaps, unchecked_pairs

    entries = split_overlaps(loaded.train, loaded.splits, {s.name: s for s, _ in loaded.suites})
    unchecked = unchecked_pairs(loaded.unread_train, loaded.splits)
    notes = [*loaded.notes, *overlap_notes(entries)]
    for n in notes:
        log.warning("%s", n)
    return entries, unchecked, notes


# ------------------------------------------------------------------------------------------------ scoring --

def metrics_for(pred: Predictions, prepared, metrics: list[str], opts: RunOptions) -> SplitResult:
    """Metrics with cluster-bootstrap intervals of one point's records on one prepared split."""
    values = compute_metrics(pred.labels, pred.outputs, pred.source_ids, metrics, n_resamples=opts.n_resamples,
                             seed=opts.seed, confidence=opts.confidence)
    return SplitResult(n=pred.n, n_truncated=prepared.n_truncated, n_dropped=prepared.n_dropped, metrics=values,
                       n_nonfinite=count_nonfinite(pred.outputs))


class Scoring:
    """Every split prepared by its suite's task, plus the results store; scores one runner on all of them.

    Holds no model: a runner (:mod:`harness.predict`) is passed to each :meth:`score` call, so one
    ``Scoring`` serves the base's own head and the blends without any field being swapped.

    ``group`` (a :class:`harness.pipeline.distributed.DistGroup`, default ``None``): this process is one rank of a
    data-parallel run; it scores its share of each split's rows, all-gathers the records, and only rank 0 opens
    the results store (its lookups are broadcast, its writes follow each gather).
    """

    def __init__(self, tokenizer, loaded: LoadedSuites, opts: RunOptions, device_type: str,
                 max_positions: int | None = None, group=None) -> None:
        self.notes: list[str] = []  # run notes (harness.pipeline.notes), read into the summary
        self._whitespace_noted: set[str] = set()  # generation suites already noted (whitespace_note)
        self._regex_noted: set[str] = set()  # generation suites already noted (regex_note)
        self.opts, self.device_type = opts, device_type
        self.group = group  # harness.pipeline.distributed.DistGroup of a data-parallel run, else None
        self.suites = {s.name: self._capped(s, max_positions) for s, _ in loaded.suites}
        pools = {name: checked_rows(self.suites[name].task, sd, scored=False) for name, sd in loaded.fewshot.items()}
        self.tasks = {name: task_for(suite, pools.get(name)) for name, suite in self.suites.items()}
        splits = track(loaded.splits, len(loaded.splits), "tokenizing", opts.progress, log, unit="split",
                       label=lambda sd: sd.ref.key)
        self.prepared = [self.tasks[sd.ref.suite].prepare(sd, tokenizer) for sd in splits]
        by_suite: dict[str, dict[str, tuple[str, ...]]] = {}
        for sd in loaded.splits:
            by_suite.setdefault(sd.ref.suite, {})[sd.ref.split] = missing_classes(sd)
        for name, missing in by_suite.items():  # one note per suite and set of missing classes, naming the splits
            for note in missing_class_notes(name, missing, len(self.suites[name].classes or ())):
                self.notes.append(note)
                log.warning("%s", note)
        # one writer: only rank 0 of a data-parallel run opens the store (compare with None: a store has a length)
        main = group is None or group.is_main
        self.store = ResultsStore() if opts.use_store and main else None
        self.n_computed = 0

    def score(self, runner, point: str, alpha: float | None, model_fp: str, head: str = "shared",
              blend_path: str = "none", as_model: bool = False) -> dict[SplitRef, Predictions]:
        """The records of one model (or blend) on every split: from the store where present, else computed (in a
        data-parallel run, each rank computes its share of the examples and the records are all-gathered).

        ``as_model``: the blend at ``alpha`` computes exactly what ``harness eval`` computes for the model
        ``model_fp`` (a sweep's alpha 0 under a weight lerp or an intervention:
        :meth:`harness.pipeline.evaluator.BlendEvaluator.evaluate`), so its records are stored under that
        evaluation's key (alpha ``None``) and an earlier ``eval`` of the same model, suites and settings is
        reused, and the other way round."""
        out: dict[SplitRef, Predictions] = {}
        key_alpha = None if as_model else alpha
        for prep in self.prepared:
            task = self.tasks[prep.ref.suite]
            outputs = None
            if self.store is not None:
                outputs = self.store.get_outputs(self._store_key(prep, runner, model_fp, key_alpha, head,
                                                                 blend_path), n=len(prep))
            if self.group is not None:  # rank 0's lookup decides for every rank
                outputs = self.group.broadcast(outputs)
            if outputs is not None:
                outputs = task.stored(prep, outputs)
            else:
                outputs = self._compute(task, prep, runner, point, alpha)
                self.n_computed += 1
                if self.store is not None:  # keyed after scoring: a first-batch fallback to padded changes the key
                    self.store.put_outputs(self._store_key(prep, runner, model_fp, key_alpha, head, blend_path),
                                           outputs, {"point": point, "split": prep.ref.key})
            self._check_finite(point, prep, outputs)
            self._check_generation(point, prep, outputs)
            out[prep.ref] = Predictions(ref=prep.ref, point=point, alpha=alpha, example_ids=prep.example_ids,
                                        source_ids=prep.source_ids, labels=prep.labels, outputs=outputs,
                                        task=task.name)
        return out

    def _compute(self, task, prep, runner, point: str, alpha: float | None) -> dict[str, np.ndarray]:
        """The records of one split: the whole split, or this rank's rows merged with the other ranks'. A runner
        that says which rows each of its batches holds (``row_batches``) gets whole batches of the one-process
        plan, so its outputs are those of one process bit for bit; otherwise the rows are dealt one by one."""
        if self.group is None:
            return task.records(prep, runner.run(prep, point=point, alpha=alpha))
        plan = getattr(runner, "row_batches", None)  # a runner whose batches are rows: deal whole batches
        batches = plan(prep) if plan is not None else None
        rows = self.group.shard(len(prep)) if batches is None else self.group.deal(batches)
        part = None
        if len(rows):
            sub = task.subset(prep, rows)
            part = task.records(sub, runner.run(sub, point=point, alpha=alpha))
        parts = self.group.all_gather((rows, part))
        return merge_records(len(prep), [(i, r) for i, r in parts if r is not None])

    def _capped(self, suite: Suite, limit: int | None) -> Suite:
        """The suite with ``max_length`` capped at the model's position table (issue 17), with a note; a
        perplexity window longer than the table is refused (:class:`SpecError`)."""
        if limit is not None and suite.task_name == "perplexity":
            window = suite.task.max_length
            if window is not None and window > limit:
                raise SpecError(format_error(
                    "the perplexity window is longer than the model's position table", where=f"suite "
                    f"{suite.name!r}: task.max_length", expected=f"at most {limit} tokens (the model's "
                    "max_position_embeddings)", got=window,
                    fix=f"set task.max_length to {limit} or less, or leave it out to use the model's length"))
        if limit is None or suite.task_name != "classification" or suite.max_length <= limit:
            return suite
        self.notes.append(cap_note(suite.name, suite.max_length, limit))
        return suite.model_copy(update={"max_length": int(limit)})

    def _check_generation(self, point: str, prep, outputs) -> None:
        """Note, once per suite, a generation suite whose exact_match misses answers only by whitespace, and
        once per suite one whose ``answer_regex`` did not match some outputs (new-user trial: a regex for the
        dataset's ``#### 42`` matched none of a model's outputs and every metric was 0 with no word)."""
        suite = self.suites[prep.ref.suite]
        if suite.task_name != "generation":
            return
        pattern = suite.task.answer_regex
        n_missed = regex_misses(outputs, pattern)
        if n_missed and prep.ref.suite not in self._regex_noted:
            self._regex_noted.add(prep.ref.suite)
            self.notes.append(regex_note(prep.ref.suite, prep.ref.key, point, n_missed, len(prep), pattern))
        n_close = 0 if prep.ref.suite in self._whitespace_noted else \
            whitespace_matches(outputs, prep.info.get("gold", ()), suite.task.normalize.model_dump())
        if n_close:
            self._whitespace_noted.add(prep.ref.suite)
            self.notes.append(whitespace_note(prep.ref.suite, prep.ref.key, point, n_close, len(prep)))

    def _check_finite(self, point: str, prep, outputs) -> None:
        n_bad = count_nonfinite(outputs)
        if n_bad:
            self.notes.append(nonfinite_note(point, prep.ref.key, n_bad, len(prep), self.opts.dtype))

    def _store_key(self, prep, runner, model_fp: str, alpha: float | None, head: str, blend_path: str) -> str:
        return prediction_key(model_fp=model_fp, alpha=alpha, split_key=prep.cache_key, dtype=self.opts.dtype,
                              device_type=self.device_type, head=head, blend_path=blend_path,
                              harness_version=harness.__version__, extra=runner.store_extra())

    def results(self, preds: dict[SplitRef, Predictions]) -> dict[SplitRef, SplitResult]:
        """Metrics of every split's records (each suite's metrics, intervals by the run's bootstrap)."""
        by_ref = {p.ref: p for p in self.prepared}
        return {ref: metrics_for(p, by_ref[ref], self.suites[ref.suite].metrics, self.opts)
                for ref, p in preds.items()}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# ------------------------------------------------------------------------------------------------ summary --

def _entry(r: SplitResult) -> SplitEntry:
    return SplitEntry(n=r.n, n_truncated=r.n_truncated, n_dropped=r.n_dropped, n_nonfinite=r.n_nonfinite,
                      metrics={k: MetricEntry(value=v.value, ci_low=v.ci_low, ci_high=v.ci_high,
                                              higher_is_better=v.higher_is_better) for k, v in r.metrics.items()})


def nest_results(results: dict[SplitRef, SplitResult]) -> dict[str, dict[str, SplitEntry]]:
    out: dict[str, dict[str, SplitEntry]] = {}
    for ref, r in results.items():
        out.setdefault(ref.suite, {})[ref.split] = _entry(r)
    return out


def suite_infos(loaded: LoadedSuites) -> dict[str, SuiteInfo]:
    infos: dict[str, SuiteInfo] = {}
    for suite, _ in loaded.suites:
        infos[suite.name] = SuiteInfo(name=suite.name, version=suite.version, spec_hash=spec_hash(suite),
                                      role=suite.role.value,
                                      shift_type=suite.shift_type.value if suite.shift_type else None,
                                      metrics=list(suite.metrics))
    for sd in loaded.splits:
        infos[sd.ref.suite].splits[sd.ref.split] = {"role": sd.ref.role.value, "fingerprint": sd.ref.fingerprint,
                                                    "n": len(sd), "n_dropped": sd.n_dropped,
                                                    "drop_reasons": dict(sd.drop_reasons)}
    return infos


def build_manifest(*, command: str, argv: list[str] | None, models: dict[str, Any], loaded: LoadedSuites,
                   opts: RunOptions, device: str, timings: dict[str, float], started: float,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest.json content of a run (:func:`harness.report.manifest.build_manifest`) from its options;
    ``started`` is ``time.time()`` at the run's API call (``command_wall_s``: :func:`command_wall_time`)."""
    from harness.report.manifest import build_manifest as build  # matplotlib: the report package draws figures

    return build(command=command, argv=argv, models=models, suites=loaded.suites, splits=loaded.splits,
                 seed=opts.seed, n_resamples=opts.n_resamples, dtype=opts.dtype,
                 batch_tokens=batch_tokens_used(opts, device, loaded.model_kind), device=device,
                 timings=timings, extra={"settings": opts.manifest(), "command_wall_s": command_wall_time(started),
                                         **(extra or {})})


def check_options_fit(suites: list[tuple[Suite, Path | None]], opts: RunOptions) -> None:
    """Refuse, before any model is loaded, an option the run's model kind does not read: ``--label-map`` names a
    classifier's labels, so with language-model suites it would be ignored silently (trial).

    Raises
    ------
    SpecError
        Naming the option and the suites' tasks.
    """
    if opts.label_map and model_kind([s for s, _ in suites]) == "causal_lm":
        tasks = ", ".join(f"{s.name} ({s.task_name})" for s, _ in suites)
        raise SpecError(format_error("--label-map applies to classification suites only", where="--label-map",
                                     got=f"language-model suites: {tasks}",
                                     fix="drop --label-map: a language model's answers are scored through the "
                                         "suite's choices and gold, not through label names"))


def batch_tokens_used(opts: RunOptions, device: str, kind: str) -> int:
    """The token budget per batch a run's scorer takes: ``--batch-tokens``, else the default of the model kind on
    the device (a language model's: :func:`harness.pipeline.runners.causal_scorer_defaults`, else
    :data:`harness.models.causal.DEFAULT_BATCH_TOKENS`; a classifier's:
    :func:`harness.predict.default_batch_tokens`). What the manifest records (trial: an LM run on a CPU recorded
    the classifier's 1,024 while it batched 512)."""
    if opts.batch_tokens:
        return int(opts.batch_tokens)
    device_type = device.split(":")[0]
    if kind == "causal_lm":
        from harness.models.causal import DEFAULT_BATCH_TOKENS  # torch: a model is loaded whenever a manifest is built
        from harness.pipeline.runners import causal_scorer_defaults

        return int(causal_scorer_defaults(device_type).get("batch_tokens", DEFAULT_BATCH_TOKENS))
    from harness.predict import default_batch_tokens  # torch: a model is loaded whenever a manifest is built

    return default_batch_tokens(device_type)


def check_baseline(baseline: str | Path | None) -> None:
    """A ``--baseline`` that is not an existing folder is unusable input, whether or not a rule reads it.

    Raises
    ------
    SpecError
        If ``baseline`` is given and is not a folder.
    """
    if baseline is not None and not Path(baseline).is_dir():
        path = Path(baseline)
        what = "is a file, not a folder" if path.exists() else "does not exist"
        hint = f"pass the folder that holds it ({path.parent}), " if path.is_file() and path.parent.is_dir() else \
            "pass the folder of the baseline run (e.g. reports/baselines/<name>), "
        raise SpecError(format_error(f"the --baseline run directory {what}", where=str(baseline),
                                     expected="a run directory (summary.json, predictions.parquet) of an earlier run",
                                     fix=f"{hint}or drop --baseline"))


def bootstrap_info(opts: RunOptions) -> BootstrapInfo:
    return BootstrapInfo(n_resamples=opts.n_resamples, seed=opts.seed, confidence=opts.confidence)


def classes_of(loaded: LoadedSuites) -> list[str]:
    classes = {tuple(sd.classes) for sd in loaded.splits}
    if len(classes) != 1:
        raise SpecError(format_error("suites evaluated together must share their classes", got=sorted(classes),
                                     fix="evaluate suites with different classes in separate runs"))
    return list(classes.pop())


def maybe_report(run_dir: Path, options: RunOptions, loaded: LoadedSuites | None) -> None:
    if not options.report:
        return
    from harness.report import render_report  # matplotlib: only when a report is rendered
    from harness.report.texts import loaded_lookups

    text, gold = (loaded_lookups({s.name: s for s, _ in loaded.suites}, loaded.splits) if loaded is not None
                  else (None, None))
    render_report(run_dir, include_examples=loaded is not None, text_lookup=text, gold_lookup=gold,
                  progress=options.progress)


