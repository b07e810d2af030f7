"""Sections of the report built from summary.json, verdict.json and manifest.json, and :func:`build_document`,
which assembles them with the prediction-based sections of :mod:`harness.report.predsections`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.progress import track
from harness.report import honesty, lmsections, plots, predsections
from harness.report.axes import metric_axis
from harness.report.curve import MEAN_PANEL, chord_table, curve_axes, curve_frame
from harness.report.document import (FIGURES, Block, Context, Document, FigureBlock, Heading, Para, Section,
                                     TableBlock)
from harness.report.predstats import majority_rate
from harness.report.tables import (alpha_points, alpha_table, bootstrap_table, counts_table, entry_value,
                                   fmt_alpha, fmt_delta, headline_table, higher_is_better, manifest_table, report_pairs,
                                   selection_table, split_role, split_table, suite_role, suite_splits, verdict_table)
from harness.summary import MetricEntry

__all__ = ["build_document"]

logger = logging.getLogger(__name__)

_SPLIT_COLORS = {False: plots.SUITE_COLORS[0], True: plots.SUITE_COLORS[2]}  # test blue, validation purple


def _triple(m: MetricEntry | None) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) with NaN for anything missing."""
    if m is None:
        return (np.nan, np.nan, np.nan)
    return tuple(np.nan if x is None else float(x) for x in (m.value, m.ci_low, m.ci_high))


def _split_label(name: str, role: str) -> str:
    return f"{name} split" if name == role else f"{name} ({role} split)"


def alpha_meaning(manifest: dict) -> str:
    """What alpha is in this run: the fraction of adapted weights, or a ReFT intervention's strength."""
    if (manifest or {}).get("blend_kind") == "intervention":
        return ("alpha is the strength of the ReFT intervention (h <- h + alpha * edit(h); no weight is blended): "
                "0 = base, 1 = adapted.")
    return "alpha is the fraction of adapted weights: 0 = base, 1 = adapted."


def curve_label(manifest: dict) -> str:
    """Legend text of the alpha curve."""
    return ("intervention strength" if (manifest or {}).get("blend_kind") == "intervention"
            else "weight-space blend")


def wall_time_text(manifest: dict) -> str | None:
    """The command's wall time (manifest ``command_wall_s``: from the start of the command or API call to writing
    the run directory) and, apart, the sum of the stage times (``timings_s``, largest first); ``None`` when the
    manifest records neither."""
    cmd = manifest.get("command_wall_s")
    whole = (f"{float(cmd['seconds']):.1f} s from {cmd.get('from', 'the start of the command')} to writing the run "
             "directory (the gate and this report came after)"
             if isinstance(cmd, dict) and isinstance(cmd.get("seconds"), (int, float)) else None)
    t = manifest.get("timings_s") or manifest.get("wall_time_s")
    stages = sorted(((str(k), float(v)) for k, v in t.items() if isinstance(v, (int, float))),
                    key=lambda kv: -kv[1]) if isinstance(t, dict) else []
    if not stages:
        return whole
    parts = (f"stage times sum to {sum(v for _, v in stages):.1f} s ("
             + ", ".join(f"{k} {v:.1f} s" for k, v in stages) + ")")
    if whole is None:
        return "the whole command's time was not recorded; " + parts
    return f"{whole}; {parts}"


def _overview(ctx: Context) -> Section:
    s, sel = ctx.summary, ctx.summary.selection
    b = s.bootstrap
    rows = [("command", s.command)] + ([("profile", s.profile)] if s.profile else []) + \
        [("harness version", s.harness_version)] + _model_rows(ctx.manifest) + \
        [("points", ", ".join(p.id + (f" ({p.label})" if p.label else "") for p in s.points)),
            ("suites", ", ".join(f"{n} ({i.role})" for n, i in s.suites.items()))]
    if ctx.sweep:
        rows.append(("selection metric", selection_metric_text(_metric_of(ctx))))
    if sel is not None:
        rows += [("chosen alpha", f"{fmt_alpha(sel.chosen_alpha)} (policy {sel.policy})"),
                 ("alpha selected on", ", ".join(sel.selected_on) or "none recorded")]
    if ctx.verdict is not None:
        rows.append(("gate", "PASS" if ctx.verdict.get("passed") else "FAIL"))
    rows.append(("wall time", wall_time_text(ctx.manifest) or "not recorded (no timings in manifest.json)"))
    blocks: list[Block] = [TableBlock(pd.DataFrame(rows, columns=["field", "value"], dtype=object))]
    blocks.append(Para(f"{lmsections.units_note(ctx)} Intervals are "
                       f"{b.confidence:.0%} bootstrap intervals ({b.n_resamples} resamples of {b.cluster_key}, "
                       f"seed {b.seed})." + (f" {alpha_meaning(ctx.manifest)}" if ctx.sweep else "")))
    if not ctx.sweep:
        blocks.append(Para("Single-model evaluation: one model's scores per suite and split; no base, blend or "
                           "selection, so there is no alpha curve and nothing is compared.", "muted"))
    return Section("Overview", tuple(blocks))


def _model_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Overview rows naming the models compared (report trial: they were only deep in the manifest table): each
    of ``base``, ``adapted`` and an eval run's ``model`` with where it was read from and, for an adapter, its
    kind and rank."""
    out = []
    for role in ("base", "adapted", "model"):
        m = (manifest.get("models") or {}).get(role)
        if not isinstance(m, Mapping):
            continue
        where = str(m.get("source") or m.get("path") or "n/a")
        kind = str(m.get("kind") or "")
        name = {"lora": "LoRA", "reft": "ReFT"}.get(kind, kind)
        detail = f"{name} adapter, rank {m['r']}" if m.get("r") else name
        out.append(("model" if role == "model" else f"{role} model", where + (f" ({detail})" if detail else "")))
    return out


def selection_metric_text(metric_of: dict[str, str]) -> str:
    """The overview's selection metric: the one metric every suite selects on, else each suite's own, named."""
    names = set(metric_of.values())
    if len(names) == 1:
        return names.pop()
    return "each suite's own: " + ", ".join(f"{suite} {m}" for suite, m in metric_of.items())


def in_short(ctx: Context, own: Mapping[str, str]) -> str | None:
    """The headline's answer in words, for a sweep with base, adapted and a chosen point: on the test splits,
    what fine-tuning changed on each ID and shift suite (each on its own metric) and what the chosen blend keeps,
    as differences of point estimates from base, with n (report trial: the answer had to be worked out from a
    ten-column table). ``None`` when the run has no such points or no test numbers."""
    f = ctx.focus
    if not ctx.sweep or f.base is None or f.adapted is None or f.chosen is None:
        return None
    id_pairs, shift = report_pairs(ctx.summary, "test")
    parts: dict[str, list[str]] = {"ID": [], "shift": []}
    ns = []
    for role, pairs in (("ID", id_pairs), ("shift", [p for ps in shift.values() for p in ps])):
        for pair in pairs:
            metric = own.get(pair[0], ctx.metric)
            base, adapted, chosen = (entry_value(ctx.summary.results, pid, pair, metric)
                                     for pid in (f.base, f.adapted, f.chosen))
            if base is None or adapted is None or chosen is None:
                continue
            split_entry = ctx.summary.results.get(f.base, {}).get(pair[0], {}).get(pair[1])
            if split_entry is not None:
                ns.append(int(split_entry.n))
            lower = "" if base.higher_is_better else " (lower is better)"
            parts[role].append(f"{pair[0]} {metric}{lower} {fmt_delta(adapted.value - base.value)} (adapted), "
                               f"{fmt_delta(chosen.value - base.value)} (chosen)")
    if not parts["ID"] and not parts["shift"]:
        return None
    chosen_alpha = next((p.alpha for p in ctx.summary.points if p.id == f.chosen), None)
    text = (f"In short, against base on the test splits (differences of point estimates; chosen: α = "
            f"{fmt_alpha(chosen_alpha) if chosen_alpha is not None else f.chosen}): "
            + "; ".join(f"{role} {', '.join(items)}" for role, items in parts.items() if items) + ".")
    if ns:
        text += (f" Each rests on {min(ns)}–{max(ns)} examples" if min(ns) != max(ns) else
                 f" Each rests on {ns[0]} examples") + (
            "; the gate's paired bounds say which differences the data supports." if ctx.verdict is not None else
            "; the intervals below say how far each value is known.")
    return text


def _headline(ctx: Context) -> Section:
    suites = dict.fromkeys(p[0] for p in suite_splits(ctx.summary))
    own = {s: lmsections.suite_metric(ctx, s) for s in suites}
    short = in_short(ctx, own)
    lead: tuple[Block, ...] = (Para(short),) if short else ()
    delta = " Δ is the difference of the two point estimates" if ctx.focus.compared else ""
    if all(m == ctx.metric for m in own.values()):
        return Section(f"Headline: {ctx.metric}", lead + (TableBlock(
            headline_table(ctx.summary, ctx.focus, ctx.metric),
            "Each cell is the split's number in summary.json (value [95% interval])." + (delta and delta + "."),
            key_columns=2),))
    which = "it selects alpha on" if ctx.sweep else "of its task"
    return Section("Headline: each suite's " + ("selection metric" if ctx.sweep else "own metric"), lead + (TableBlock(
        headline_table(ctx.summary, ctx.focus, ctx.metric, metric_of=own),
        f"Each suite on the metric {which} (metric column); each cell is the split's number in summary.json "
        "(value [95% interval])." + (delta and delta + " (for a metric where lower is better, a negative Δ is an "
                                     "improvement)."), key_columns=2),))


def against_text(reference: object) -> str:
    """What a verdict's rules compare the candidate with, in words: ``verdict.json``'s ``reference`` (reference
    point ids joined by ", ", ``absolute`` for floors and ceilings) as "point base and absolute thresholds"."""
    if not isinstance(reference, str) or reference in ("", "(none)"):
        return "no reference"
    words = ["absolute thresholds" if r == "absolute" else f"point {r}" for r in reference.split(", ")]
    return " and ".join(words)


def _verdict(ctx: Context) -> Section | None:
    v = ctx.verdict
    if v is None:
        return None
    head = (f"Gate {'PASSED' if v.get('passed') else 'FAILED'}: policy \"{v.get('policy', 'n/a')}\"; candidate "
            f"point {v.get('candidate', 'n/a')} judged against {against_text(v.get('reference'))} (confidence "
            f"{v.get('confidence', 'n/a')}, {v.get('n_resamples', 'n/a')} resamples, seed {v.get('seed', 'n/a')}).")
    return Section("Gate verdict", (Para(head, "p"), TableBlock(
        verdict_table(v), "value: the judged statistic: for a delta rule the candidate's gain over the reference "
                          "in the metric's good direction (for a lower-is-better metric such as bits_per_byte, "
                          "reference minus candidate: a positive value is an improvement), for a floor or ceiling "
                          "the level, for a class recall floor the recall, for negative flips and overlap a rate; "
                          "bound: its one-sided confidence bound (bound "
                          "mode); margin: distance inside (+) or outside (-) the threshold.", split=False)))


def _metric_of(ctx: Context) -> dict[str, str]:
    """Suite -> the metric it is judged on (its selection metric; :func:`lmsections.suite_metric`)."""
    suites = dict.fromkeys(p[0] for p in suite_splits(ctx.summary))
    return {suite: lmsections.suite_metric(ctx, suite) for suite in suites}


def _mean_over(ctx: Context) -> list[str] | None:
    """The shift suites the curve's mean panel averages: those that selected alpha (the manifest's
    ``selection_metrics``; a suite with ``in_selection: false`` is not averaged), ``None`` (all) for runs that do
    not record it."""
    sel = ctx.manifest.get("selection_metrics")
    return list(sel) if isinstance(sel, dict) and sel else None


def _curve_caption(axes: dict, role_note: str, left_out: list[str] = ()) -> str:
    x, y = axes[MEAN_PANEL]
    per_suite = {panel: ys.metric for panel, (_, ys) in axes.items() if panel != MEAN_PANEL}
    what = (f"shift {x.metric}" if set(per_suite.values()) == {x.metric} else "each shift suite's own metric ("
            + ", ".join(f"{k}: {v}" for k, v in per_suite.items()) + ")")
    negated = ", lower-is-better ones negated" if "negated" in y.label else ""
    mean = f" (the mean of each suite's own metric{negated})" if y.metric == "score" else ""
    if left_out:
        mean += f" over the suites that select alpha ({', '.join(left_out)}: in_selection: false, own panel only)"
    panels = (f"Panel 1: {MEAN_PANEL}{mean}, whose bars are the mean of the suites' 95% interval endpoints "
              "(conservative), not an interval of the mean; then one panel per shift suite." if len(per_suite) > 1
              else "One shift suite, so one panel (the mean over shift suites would repeat it).")
    return (f"ID {x.metric} (x) against {what} (y) on {role_note}, one point per alpha. {panels} Axes stay within "
            "each metric's valid range; lower-is-better axes say so.")


_ENSEMBLE_NOT_RINGED = "; the ensemble's × are not ringed"


def _has_ensemble(curve: pd.DataFrame) -> bool:
    """Whether the ID-vs-shift figure draws an output-space ensemble point (a row of kind ``ensemble`` with both
    coordinates finite), so that its caption mentions the ensemble's × only when there are some."""
    ens = curve[curve["kind"] == "ensemble"]
    return bool(np.isfinite(ens[["x", "y"]].to_numpy(dtype=float)).all(axis=1).any())


def _curve(ctx: Context) -> Section | None:
    if not ctx.sweep:
        return None
    s, f = ctx.summary, ctx.focus
    metric_of = _metric_of(ctx)
    mean_over = _mean_over(ctx)
    shift_suites = {p[0] for p in suite_splits(s) if suite_role(s, p[0]) == "shift"}
    left_out = [str(x) for x in ctx.manifest.get("outside_selection") or [] if x in shift_suites]
    curve = curve_frame(s, metric_of, "test", mean_over)
    if curve.empty:
        return Section("ID vs shift along alpha", (Para("Not drawn: the run needs an ID suite and a shift suite "
                                                        "with results at two or more alphas.", "muted"),))
    axes = curve_axes(s, metric_of, "test", mean_over)
    blocks: list[Block] = [FigureBlock(plots.plot_id_vs_shift(
        curve, ctx.figdir / FIGURES[0], axes=axes, chosen=f.chosen, base=f.base, adapted=f.adapted,
        splits_note="test splits", curve_label=curve_label(ctx.manifest)),
        _curve_caption(axes, "the test splits", left_out) + " Rings: the Pareto front of the weight-space blends in each panel "
        f"(test splits{_ENSEMBLE_NOT_RINGED if _has_ensemble(curve) else ''}); the selection's own Pareto set, on "
        "validation splits, is listed in the tables. The dashed chord joins base and adapted: a point on it is "
        "what answering each example with base or adapted at random would score, so read a blend against it at "
        "equal ID (vertically); the table's 'over chord' compares at equal alpha instead, which can differ in sign.")]
    val = curve_frame(s, metric_of, "validation", mean_over)
    if s.selection is not None and not val.empty:
        blocks.append(FigureBlock(plots.plot_id_vs_shift(
            val, ctx.figdir / FIGURES[1], axes=curve_axes(s, metric_of, "validation", mean_over), chosen=f.chosen,
            base=f.base,
            adapted=f.adapted, splits_note="the validation splits that selected alpha",
            curve_label=curve_label(ctx.manifest), split="validation"),
            "The same curve on the validation splits that selected alpha (what the selection policy saw)."))
    blocks.append(Para(
        "Gain over the chord: the chord is the straight mix of the endpoints' scores at the same alpha, "
        "(1 - alpha) * y(base) + alpha * y(adapted); a blend's gain is y(alpha) minus the chord (negated for a "
        "metric where lower is better), so a positive shift gain is robustness that neither endpoint, nor a "
        "linear mix of their scores, gives. This is at the same alpha, not at the same ID value as the figure's "
        "dashed chord: a blend whose ID is above the chord's at its alpha can sit under the dashed line and still "
        "gain here. Pareto: the selection's Pareto set (validation splits, ID vs mean shift)."))
    blocks.append(TableBlock(chord_table(s, curve, f, axes),
                             "Test splits. Where a column averages several suites or splits, the interval is "
                             "the mean of their interval endpoints (conservative).", key_columns=2))
    return Section("ID vs shift along alpha", tuple(blocks))


#: Metric -> (legend text, caption text) of the constant-answer reference drawn on its bars: the majority-class
#: rate for classification accuracy; for multiple-choice accuracies (labels are gold choice indices) always
#: answering the most frequent gold position (the same under acc, acc_norm and acc_bytes: none rescores a fixed
#: position). Other metrics have no constant-answer reference here.
CONSTANT_ANSWER = {
    "accuracy": ("majority-class rate", "the majority-class rate (accuracy of always predicting the split's most "
                                        "frequent label)"),
    **{m: ("always the split's most frequent gold answer",
           "the accuracy of always giving the split's most frequent gold answer (the gold choice position most "
           "frequent among that split's labels)") for m in ("acc", "acc_norm", "acc_bytes")},
}


def _reference_note(drawn: dict[str, list[str]], missing: list[str], has_preds: bool) -> str:
    """The before/after caption's sentence on dashed reference segments: which groups have which, and why the
    others have none (``drawn``: the reference's caption text -> its groups; ``missing``: groups without a
    line)."""
    if len(drawn) > 1:
        note = "Dashed segments: " + "; ".join(f"{what} on {', '.join(groups)}" for what, groups in drawn.items()) + "."
    else:
        note = "".join(f"The dashed segment is {what}." for what in drawn)
    if missing:
        why = ("their metric has no constant-answer reference (one is drawn for accuracy and for "
               "multiple-choice acc, acc_norm and acc_bytes)" if has_preds else
               "predictions.parquet is absent, so the split's labels are unknown")
        note += f" No reference line for {', '.join(missing)}: {why}."
    return note.strip()


def _before_after(ctx: Context) -> Section:
    s, f = ctx.summary, ctx.focus
    metric_of = _metric_of(ctx)
    id_pairs, shift = report_pairs(s, "test")
    pairs = id_pairs + [p for ps in shift.values() for p in ps]
    names = set(metric_of[p[0]] for p in pairs) or {ctx.metric}
    mixed = len(names) > 1
    metric = "value (each suite's own metric)" if mixed else next(iter(names))
    groups, drawn, missing = [], {}, []
    for pair in pairs:
        name = metric_of[pair[0]]
        vals = [_triple(entry_value(s.results, pid, pair, name)) for _, pid in f.columns]
        labels = ctx.preds.labels(pair) if ctx.preds is not None and name in CONSTANT_ANSWER else None
        ref = majority_rate(labels) if labels is not None else None
        if ref is not None and np.isfinite(ref):
            drawn.setdefault(CONSTANT_ANSWER[name][1], []).append(f"{pair[0]}/{pair[1]}")
        else:
            missing.append(f"{pair[0]}/{pair[1]} ({name})")
        groups.append(plots.Bars(f"{pair[0]}\n{pair[1]}" + (f"\n{name}" if mixed else ""), tuple(vals), ref,
                                 CONSTANT_ANSWER[name][0] if name in CONSTANT_ANSWER else None))
    note = _reference_note(drawn, missing, ctx.preds is not None)
    path = plots.plot_before_after(groups, [label for label, _ in f.columns], ctx.figdir / FIGURES[2],
                                   metric=metric)
    bar_note = " Bar labels: the base value, and each other bar's difference from base." if f.compared else ""
    what = ("Each suite on the metric it selects alpha on (named under its bars: "
            + ", ".join(f"{k} {v}" for k, v in metric_of.items()) + "), per test split") if mixed else (
        f"{metric} per suite and test split")
    title = "Before and after" if f.compared else "Scores per suite"
    return Section(title, (FigureBlock(path, f"{what}, with 95% intervals." + bar_note + " " + note),))


def _alpha(ctx: Context) -> Section | None:
    if not ctx.sweep:
        return None
    s, sel = ctx.summary, ctx.summary.selection
    pts = alpha_points(s)
    alphas = np.asarray([a for _, a in pts])
    metric_of = _metric_of(ctx)
    panels: dict[str, list[plots.Line]] = {}
    ys: dict[str, object] = {}
    for pair in suite_splits(s):
        name = metric_of[pair[0]]
        arr = np.asarray([_triple(entry_value(s.results, pid, pair, name)) for pid, _ in pts], dtype=float)
        ys.setdefault(f"{pair[0]} ({suite_role(s, pair[0])})", metric_axis("", name, higher_is_better(s, name)))
        val = split_role(s, *pair) == "validation"
        panels.setdefault(f"{pair[0]} ({suite_role(s, pair[0])})", []).append(plots.Line(
            _split_label(pair[1], "validation" if val else "test"), alphas, arr[:, 0], arr[:, 1], arr[:, 2],
            _SPLIT_COLORS[val], dashed=val))
    feasible = [bool(sel.feasible.get(pid, False)) for pid, _ in pts] if sel is not None and sel.feasible else None
    chosen_alpha = s.point(ctx.focus.chosen).alpha if ctx.focus.chosen else None
    own = len(set(metric_of.values())) > 1
    path = plots.plot_metric_vs_alpha(list(panels.items()), ctx.figdir / FIGURES[3],
                                      metric="each suite's selection metric" if own else ctx.metric, alphas=alphas,
                                      feasible=feasible, chosen_alpha=chosen_alpha, panel_axes=list(ys.values()))
    title = "Each suite's selection metric along alpha" if own else f"Selection metric along alpha: {ctx.metric}"
    return Section(title, (
        FigureBlock(path, "One panel per suite" + (", each on its own selection metric" if own else "") + ". "
                          "Markers: the alphas evaluated for each split, connected in order. Green triangles and "
                          "narrow strips: evaluated alphas feasible under the selection policy (nothing is shaded "
                          "between evaluated alphas), drawn over the thin vertical line of the chosen alpha; "
                          f"{plots.BANDS_NOTE}."),
        TableBlock(alpha_table(s, metric_of), "Point estimates from summary.json; objective and feasible as "
                                               "recorded by the selection policy.", key_columns=2)))


def _results(ctx: Context) -> Section:
    if lmsections.is_lm_run(ctx):
        return lmsections.task_results(ctx)
    blocks: list[Block] = []
    for pair in suite_splits(ctx.summary):
        blocks.append(Heading(f"{pair[0]} / {pair[1]} ({suite_role(ctx.summary, pair[0])} suite, "
                              f"{split_role(ctx.summary, *pair)} split)"))
        blocks.append(TableBlock(split_table(ctx.summary, ctx.focus, pair)))
    return Section("Results by suite and split", tuple(blocks))


def _selection(ctx: Context) -> Section:
    blocks: list[Block] = []
    if ctx.summary.selection is not None:
        blocks.append(Para("Only validation splits select alpha; test splits are reported, never used to choose."))
        blocks.append(TableBlock(selection_table(ctx.summary, _metric_of(ctx))))
        blocks.append(Heading("Bootstrap"))
    blocks.append(TableBlock(bootstrap_table(ctx.summary)))
    return Section("Selection" if ctx.summary.selection is not None else "Bootstrap", tuple(blocks))


def _counts(ctx: Context) -> Section:
    return Section("Examples evaluated", (TableBlock(
        counts_table(ctx.summary), "n_truncated: examples cut to max_length; n_dropped: rows of the split not "
                                   "evaluated, by reason (cap: left out by --max-examples or the split's "
                                   "max_examples; the others: removed by the suite spec, e.g. a missing text); "
                                   "fingerprint: the split's content hash."),))


def _manifest(ctx: Context) -> Section:
    if not ctx.manifest:
        return Section("Run manifest", (Para("The run directory has no manifest.json.", "muted"),))
    return Section("Run manifest", (TableBlock(manifest_table(ctx.manifest)),))


def build_document(ctx: Context, progress: bool = False) -> Document:
    """Draw the figures into ``ctx.figdir`` and assemble the report's sections in reading order (``progress``: a
    bar over the sections on a terminal, an INFO line per section otherwise; :func:`harness.progress.track`).

    Returns
    -------
    Document
        Sections that do not apply to the run (no alpha curve, no predictions, no verdict) are left out or say
        why; ``figures`` lists the PNGs written.
    """
    builders = (_overview, _headline, _verdict, _curve, _before_after, _alpha, _results, _selection,
                honesty.selection_honesty, predsections.calibration, honesty.calibration_estimators,
                predsections.per_class, lmsections.negative_flips, predsections.examples,
                lmsections.generation_examples, _counts, _manifest)
    steps = track(builders, len(builders), "rendering the report", progress, logger, unit="section",
                  label=lambda build: build.__name__.strip("_").replace("_", " "))
    sections = tuple(sec for build in steps if (sec := build(ctx)) is not None)
    figures = tuple(b.path for sec in sections for b in sec.blocks if isinstance(b, FigureBlock))
    title = f"Robustness report: {ctx.summary.command}"
    if ctx.focus.chosen is not None:
        title += f" (chosen α={fmt_alpha(ctx.summary.point(ctx.focus.chosen).alpha)})"
    return Document(title=title, notes=tuple(ctx.summary.notes), sections=sections, figures=figures)
