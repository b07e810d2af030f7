"""The only module that knows the order of the stages: spec -> data -> tokens -> model/blend -> predictions ->
metrics -> selection -> gate -> report, for ``eval``, ``sweep`` and ``blend``. The CLI and the Python API call
these functions with explicit arguments (never an argparse Namespace)."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

import harness
from harness.errors import HarnessError, OutputError, SpecError, format_error
from harness.records import (PointRole, Predictions, SplitData, SplitRef, SplitResult, TokenizedSplit,
                             canonical_alpha, point_id)
from harness.rundir import write_run
from harness.spec.load import load_suite, spec_hash
from harness.spec.schema import Suite
from harness.summary import BootstrapInfo, MetricEntry, PointEntry, Selection as SelectionEntry, SplitEntry, \
    SuiteInfo, Summary

__all__ = ["RunOptions", "LoadedSuites", "RunResult", "load_suites", "prepare_splits", "evaluate_model",
           "sweep_models", "write_blend", "write_run", "stage_timer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Settings shared by eval and sweep (every field has a CLI flag of the same name).

    ``batch_tokens`` is the token budget per batch (rows x padded length; default by device, see
    :func:`harness.predict.default_batch_tokens`); ``n_resamples``/``seed``/``confidence``
    configure the bootstrap; ``use_store`` reads and writes the results store under ``HARNESS_CACHE``;
    ``compile`` compiles each encoder layer with ``torch.compile`` (:func:`harness.models.scorer.compile_layers`).
    """

    device: str | None = None
    dtype: str = "fp32"
    batch_tokens: int | None = None
    compile: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    label_map: dict[str, str] | None = None
    split: str | None = None
    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    use_store: bool = True
    progress: bool = True
    max_examples: int | None = None
    max_length: int | None = None
    report: bool = True

    def __post_init__(self) -> None:
        def bad(flag: str, expected: str, got: Any) -> SpecError:
            return SpecError(format_error(f"bad value for {flag}", where=flag, expected=expected, got=got))

        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise bad("--dtype", "fp32, bf16 or fp16", self.dtype)
        if self.batch_tokens is not None and (not isinstance(self.batch_tokens, int) or self.batch_tokens < 1):
            raise bad("--batch-tokens", "a positive number of tokens per batch (e.g. 16384)", self.batch_tokens)
        if not isinstance(self.n_resamples, int) or self.n_resamples < 10:
            raise bad("--n-resamples", "at least 10 bootstrap resamples (1000 recommended)", self.n_resamples)
        if not 0.5 <= self.confidence < 1.0:
            raise bad("confidence", "a fraction in [0.5, 1)", self.confidence)
        if self.max_examples is not None and self.max_examples < 1:
            raise bad("max_examples", "a positive number of examples", self.max_examples)
        if self.max_length is not None and self.max_length < 8:
            raise bad("max_length", "at least 8 tokens", self.max_length)


@dataclass
class LoadedSuites:
    """Suites with their files and the splits to evaluate (``SplitData`` in suite, split order)."""

    suites: list[tuple[Suite, Path | None]]
    splits: list[SplitData]


@dataclass
class RunResult:
    """What eval and sweep return: the summary, the run directory, and (for a gated sweep) the verdict."""

    summary: Summary
    run_dir: Path | None
    verdict: Any = None
    sweep: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_pandas(self) -> pd.DataFrame:
        """The per-alpha, per-suite table (one row per point, suite, split and metric; see per_alpha.csv)."""
        from harness.rundir import per_alpha_frame

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
                from harness.spec.load import read_yaml

                if read_yaml(f).get("kind") != "suite":
                    continue
            out.append((load_suite(f), f.resolve()))
    if not out:
        raise SpecError(format_error("no suite given", where="--suite", fix="pass one or more suite YAML files"))
    names = [s.name for s, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(format_error("two suites share a name", where=", ".join(dup),
                                     fix="give every suite a unique name:"))
    return out


def _apply_overrides(suite: Suite, opts: RunOptions) -> Suite:
    upd: dict[str, Any] = {}
    if opts.max_length is not None:
        upd["max_length"] = int(opts.max_length)
    if opts.max_examples is not None and suite.splits:
        upd["splits"] = [s.model_copy(update={"max_examples": min(s.max_examples or opts.max_examples,
                                                                   opts.max_examples)}) for s in suite.splits]
    return suite.model_copy(update=upd) if upd else suite


def prepare_splits(suites: list[tuple[Suite, Path | None]], opts: RunOptions) -> LoadedSuites:
    """Load the evaluation splits of every suite (``train`` splits are skipped; ``opts.split`` keeps one name).

    Raises
    ------
    SpecError, DataError
        For unknown split names and data problems.
    """
    from harness.data.sources import load_splits, sibling_resolver

    suites = [(_apply_overrides(s, opts), p) for s, p in suites]
    known = {s.name: (s, p) for s, p in suites}
    splits: list[SplitData] = []
    for suite, path in suites:
        siblings = sibling_resolver(path)

        def resolve(name: str, _siblings=siblings) -> tuple[Suite, Path | None]:
            # suites given together first (with the run's overrides), then the files beside this one
            return known[name] if name in known else _siblings(name)

        names = [opts.split] if opts.split is not None else None
        loaded = load_splits(suite, suite_path=path, split_names=names, resolve=resolve)
        for sd in loaded.values():
            if sd.ref.role.value == "train" and names is None:
                continue
            splits.append(sd)
    if not splits:
        raise SpecError(format_error("the suites define no validation or test split to evaluate",
                                     fix="add splits with role validation or test"))
    return LoadedSuites(suites=suites, splits=splits)


# ------------------------------------------------------------------------------------------------ scoring --

def _metrics_for(pred: Predictions, tok: TokenizedSplit, metrics: list[str], opts: RunOptions) -> SplitResult:
    from harness.metrics import compute_metrics

    values = compute_metrics(pred.labels, pred.logits, pred.source_ids, metrics, n_resamples=opts.n_resamples,
                             seed=opts.seed, confidence=opts.confidence)
    return SplitResult(n=pred.n, n_truncated=tok.n_truncated, n_dropped=tok.n_dropped, metrics=values)


class _Scoring:
    """Tokenized splits + store + scorer for one live model; scores (point, alpha) on every split."""

    def __init__(self, live, splits: list[SplitData], suites: dict[str, Suite], opts: RunOptions,
                 columns: np.ndarray | None) -> None:
        from harness.models.scorer import HFScorer
        from harness.store import ResultsStore
        from harness.tokcache import tokenize_split

        self.live, self.opts, self.columns = live, opts, columns
        self.suites = suites
        self.toks = [tokenize_split(sd, live.tokenizer, suites[sd.ref.suite].max_length) for sd in splits]
        self.scorer = HFScorer(live.model, compile=opts.compile)
        self.store = ResultsStore() if opts.use_store else None  # compare with None: a store has a length
        self.pad_id = int(live.tokenizer.pad_token_id or 0)
        self.n_computed = 0

    def score(self, point: str, alpha: float | None, model_fp: str, head: str = "shared",
              blend_path: str = "none") -> dict[SplitRef, Predictions]:
        from harness.predict import predict
        from harness.store import prediction_key

        out: dict[SplitRef, Predictions] = {}
        for tok in self.toks:
            key = prediction_key(model_fp=model_fp, alpha=alpha, split_key=tok.cache_key, dtype=self.opts.dtype,
                                 device_type=self.live.device.type, head=head, blend_path=blend_path,
                                 harness_version=harness.__version__,
                                 extra={"columns": None if self.columns is None else self.columns.tolist(),
                                        "packed": self.scorer.packed, "compiled": self.opts.compile})
            logits = self.store.get(key, n=len(tok)) if self.store is not None else None
            if logits is None:
                pred = predict(self.scorer, tok, point=point, alpha=alpha, batch_tokens=self.opts.batch_tokens,
                               pad_id=self.pad_id, progress=self.opts.progress, columns=self.columns)
                self.n_computed += 1
                if self.store is not None:
                    self.store.put(key, pred.logits, {"point": point, "split": tok.ref.key})
            else:
                pred = Predictions(ref=tok.ref, point=point, alpha=alpha, example_ids=tok.example_ids,
                                   source_ids=tok.source_ids, labels=tok.labels, logits=logits)
            out[tok.ref] = pred
        return out

    def results(self, preds: dict[SplitRef, Predictions]) -> dict[SplitRef, SplitResult]:
        by_ref = {t.ref: t for t in self.toks}
        return {ref: _metrics_for(p, by_ref[ref], self.suites[ref.suite].metrics, self.opts)
                for ref, p in preds.items()}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# ------------------------------------------------------------------------------------------------ summary --

def _entry(r: SplitResult) -> SplitEntry:
    return SplitEntry(n=r.n, n_truncated=r.n_truncated, n_dropped=r.n_dropped,
                      metrics={k: MetricEntry(value=v.value, ci_low=v.ci_low, ci_high=v.ci_high,
                                              higher_is_better=v.higher_is_better) for k, v in r.metrics.items()})


def _nest(results: dict[SplitRef, SplitResult]) -> dict[str, dict[str, SplitEntry]]:
    out: dict[str, dict[str, SplitEntry]] = {}
    for ref, r in results.items():
        out.setdefault(ref.suite, {})[ref.split] = _entry(r)
    return out


def _suite_infos(loaded: LoadedSuites) -> dict[str, SuiteInfo]:
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
                   opts: RunOptions, device: str, timings: dict[str, float], extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The manifest.json content of a run (:func:`harness.report.manifest.build_manifest`) from its options."""
    from harness.predict import default_batch_tokens
    from harness.report.manifest import build_manifest as build

    return build(command=command, argv=argv, models=models, suites=loaded.suites, splits=loaded.splits,
                 seed=opts.seed, n_resamples=opts.n_resamples, dtype=opts.dtype,
                 batch_tokens=opts.batch_tokens or default_batch_tokens(device.split(":")[0]), device=device,
                 timings=timings, extra=extra)


def _bootstrap_info(opts: RunOptions) -> BootstrapInfo:
    return BootstrapInfo(n_resamples=opts.n_resamples, seed=opts.seed, confidence=opts.confidence)


def _classes_of(loaded: LoadedSuites) -> list[str]:
    classes = {tuple(sd.classes) for sd in loaded.splits}
    if len(classes) != 1:
        raise SpecError(format_error("suites evaluated together must share their classes", got=sorted(classes),
                                     fix="evaluate suites with different classes in separate runs"))
    return list(classes.pop())


# ------------------------------------------------------------------------------------------------- eval --

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
    from harness.models.load import align_labels, load_model

    timings: dict[str, float] = {}
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(suites), options)
        classes = _classes_of(loaded)
    with stage_timer(timings, "load_model"):
        live = load_model(model, dtype=options.dtype, device=options.device, allow_pickle=options.allow_pickle,
                          trust_remote_code=options.trust_remote_code)
        columns = align_labels(live.id2label, classes, options.label_map, where=str(model))
    suites_by_name = {s.name: s for s, _ in loaded.suites}
    with stage_timer(timings, "tokenize"):
        scoring = _Scoring(live, loaded.splits, suites_by_name, options, columns)
    try:
        with stage_timer(timings, "predict"):
            preds = scoring.score("model", None, live.fingerprint)
        with stage_timer(timings, "metrics"):
            results = scoring.results(preds)
    finally:
        scoring.close()
    summary = Summary(harness_version=harness.__version__, command="eval",
                      points=[PointEntry(id="model", role="adapted", alpha=None, label=str(model))],
                      results={"model": _nest(results)}, bootstrap=_bootstrap_info(options),
                      suites=_suite_infos(loaded))
    res = RunResult(summary=summary, run_dir=None, timings=timings)
    if out is not None:
        manifest = build_manifest(command="eval", argv=argv, loaded=loaded, opts=options, device=str(live.device),
                                  timings=timings, models={"model": {"source": str(model), "path": str(live.path),
                                                                     "fingerprint": live.fingerprint}},
                                  extra={"packed_batches": scoring.scorer.packed, "compiled": options.compile})
        res.run_dir = write_run(out, summary, list(preds.values()), manifest)
        _maybe_report(res.run_dir, options, loaded)
    return res


def _text_lookup(loaded: LoadedSuites):
    frames = {(sd.ref.suite, sd.ref.split): sd.frame.set_index("example_id")["text"] for sd in loaded.splits}

    def lookup(suite: str, split: str, example_ids) -> list[str]:
        s = frames.get((suite, split))
        return ["" if s is None else str(s.get(e, "")) for e in example_ids]

    return lookup


def _maybe_report(run_dir: Path, options: RunOptions, loaded: LoadedSuites | None) -> None:
    if not options.report:
        return
    from harness.report import render_report

    render_report(run_dir, include_examples=loaded is not None,
                  text_lookup=_text_lookup(loaded) if loaded is not None else None)


# ------------------------------------------------------------------------------------------------ sweep --

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
    from harness.store import blend_fingerprint
    from harness.sweep import SelectionPolicy, SweepResult, adaptive_alphas, parse_alphas, select_alpha, \
        validation_scores

    timings: dict[str, float] = {}
    policy = SelectionPolicy(name=select, metric=select_metric, tolerance=tolerance, weight=weight)
    grid = parse_alphas(alphas)
    if gate is not None:
        from harness.spec.load import load_spec

        load_spec(gate, kind="policy")  # fail on a bad policy before any model is loaded
    with stage_timer(timings, "data"):
        loaded = prepare_splits(load_suites(suites), options)
        classes = _classes_of(loaded)
    pair = _load_pair(base, adapted, classes, head, options, timings)
    live = pair.live
    suites_by_name = {s.name: s for s, _ in loaded.suites}
    with stage_timer(timings, "tokenize"):
        scoring = _Scoring(live, loaded.splits, suites_by_name, options, pair.blend_columns)
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
                                     "packed_batches": scoring.scorer.packed, "compiled": options.compile})
    res.run_dir = write_run(out, summary, sw.predictions_list(), manifest)
    if gate is not None:
        res.verdict = run_gate(res.run_dir, gate, baseline=baseline, junit=junit)
    _maybe_report(res.run_dir, options, loaded)
    return res


def _ensembles(sw, scoring: _Scoring, head: str) -> None:
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
            res[ref] = _metrics_for(pred, by_ref[ref], scoring.suites[ref.suite].metrics, scoring.opts)
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
                   points=points, results={pid: _nest(r) for pid, r in sw.results.items()},
                   ensemble={pid: _nest(r) for pid, r in sw.ensemble.items()}, selection=selection,
                   bootstrap=_bootstrap_info(options), suites=_suite_infos(loaded))


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
    write_gate_outputs(run_dir, verdict, junit_path=junit)
    return verdict


# ------------------------------------------------------------------------------------------------ blend --

def write_blend(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, *, head: str = "shared",
                options: RunOptions = RunOptions()) -> Path:
    """Write the blend at ``alpha`` as a safetensors checkpoint loadable with
    ``AutoModelForSequenceClassification.from_pretrained`` (after ``harness.register()`` for harness model
    classes), with provenance (base and adapted fingerprints, alpha, head) in its config under ``harness_blend``.

    Raises
    ------
    HarnessError
        ModelError/BlendError for unusable models, OutputError when ``out`` cannot be written.
    """
    from harness.errors import BlendError
    from harness.models.adapters import load_adapted
    from harness.models.blend import head_keys, interpolate, resize_head
    from harness.rundir import swap_dir
    from harness.models.load import load_model

    try:
        alpha = canonical_alpha(alpha)
    except ValueError as e:
        raise BlendError(str(e)) from e
    live = load_model(base, dtype=options.dtype, device="cpu", allow_pickle=options.allow_pickle,
                      trust_remote_code=options.trust_remote_code)
    adp = load_adapted(live, adapted, allow_pickle=options.allow_pickle, trust_remote_code=options.trust_remote_code)
    base_sd = live.model.state_dict()
    heads = head_keys(base_sd, getattr(live.model, "base_model_prefix", None)) if head == "adapted" else None
    blended = interpolate(base_sd, adp.state_dict, alpha, head=head, head_names=heads)
    params = dict(live.model.named_parameters())
    for name in heads or ():
        if name in params and params[name].shape != blended[name].shape:
            resize_head(live.model, name, params[name], blended[name])  # a new head with another label count
    live.model.load_state_dict(blended, strict=True)
    if head == "adapted":
        live.model.config.num_labels = len(adp.id2label)
    if head == "adapted" or alpha == 1.0:
        live.model.config.id2label = dict(adp.id2label)
        live.model.config.label2id = {v: k for k, v in adp.id2label.items()}
    live.model.config.harness_blend = {"base": str(base), "adapted": str(adapted), "alpha": alpha, "head": head,
                                       "base_fingerprint": live.fingerprint,
                                       "adapted_fingerprint": adp.fingerprint, "adapted_kind": adp.kind,
                                       "harness_version": harness.__version__}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(format_error("--out names a file", where=str(out), fix="choose a folder"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        live.model.save_pretrained(str(tmp), safe_serialization=True)
        live.tokenizer.save_pretrained(str(tmp))
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
