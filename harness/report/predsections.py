"""Report sections drawn from the stored predictions: calibration, per-class view and negative flips, and (HTML
only) the largest negative flips with their dataset text.

Each builder takes a :class:`harness.report.document.Context` and returns a section, or a short note when the
run directory has no predictions.
"""

from __future__ import annotations

import logging
import pandas as pd

from harness.report import plots_preds
from harness.report.document import FIGURES, Context, FigureBlock, Heading, Para, Section, TableBlock
from harness.report.predstats import (Pooled, binned_ece, confusion_matrix, finite_mean, flip_counts,
                                      largest_flips, per_class_recall, reliability_bins)
from harness.report.lmsections import suite_task
from harness.report.tables import fmt_alpha, fmt_delta, fmt_value, report_pairs, suite_splits

__all__ = ["calibration", "per_class", "examples"]

logger = logging.getLogger(__name__)

_NO_PREDS = "predictions.parquet is absent or holds none of these points, so this view is not drawn."
_NO_CLASSES = ("Not applicable: this view needs class probabilities, and the run's suites are language-model tasks "
               "(multiple choice, generation, perplexity), whose records are log-likelihoods and texts.")


def _not_drawn(ctx: Context) -> str:
    """Why a class-probability view is empty: the run has no classification suite, or no stored predictions."""
    suites = dict.fromkeys(p[0] for p in suite_splits(ctx.summary))
    if suites and all(suite_task(ctx, s) != "classification" for s in suites):
        return _NO_CLASSES
    return _NO_PREDS
Pair = tuple[str, str]


def _by_suite(ctx: Context) -> dict[str, list[Pair]]:
    id_pairs, shift = report_pairs(ctx.summary, "test")
    out: dict[str, list[Pair]] = {}
    for p in id_pairs:
        out.setdefault(p[0], []).append(p)
    out.update(shift)
    return out


def _class_names(ctx: Context, suite: str, n_classes: int) -> list[str]:
    """Class names from the manifest's suite entry (``classes``) when it has them, else ``0``, ``1``, ..."""
    suites = ctx.manifest.get("suites")
    info = None
    if isinstance(suites, dict):
        info = suites.get(suite)
    elif isinstance(suites, list):
        info = next((x for x in suites if isinstance(x, dict) and x.get("name") == suite), None)
    classes = info.get("classes") if isinstance(info, dict) else None
    if isinstance(classes, list) and len(classes) == n_classes:
        return [str(c) for c in classes]
    return [str(i) for i in range(n_classes)]


def distinct_columns(ctx: Context) -> list[tuple[str, str]]:
    """The focus columns, one per point: a chosen point that is base or adapted joins that column, labelled
    ``adapted = chosen (α=1)``, so that a figure draws one curve for it rather than one hidden under another."""
    labels: dict[str, str] = {}
    for label, pid in ctx.focus.columns:
        if pid in labels:
            labels[pid] += f" = chosen (α={fmt_alpha(ctx.summary.point(pid).alpha)})"
        else:
            labels[pid] = label
    return [(label, pid) for pid, label in labels.items()]


def _pooled(ctx: Context, pairs: list[Pair], columns: list[tuple[str, str]] | None = None) -> dict[str, Pooled]:
    """Each focus column's predictions on ``pairs`` (columns without predictions left out); ``columns``: other
    ``(label, point id)`` columns than the focus ones."""
    if ctx.preds is None:
        return {}
    out = {label: ctx.preds.pooled(pid, pairs) for label, pid in (columns or ctx.focus.columns)}
    return {k: v for k, v in out.items() if v is not None}


def calibration(ctx: Context) -> Section:
    """Reliability diagrams and binned ECE on the ID test splits and on the pooled shift test splits."""
    id_pairs, shift = report_pairs(ctx.summary, "test")
    panels, rows, n_classes = [], [], []
    for title, pairs in (("ID (test)", id_pairs), ("shift suites pooled (test)",
                                                   [p for ps in shift.values() for p in ps])):
        curves, pooled_all = {}, _pooled(ctx, pairs, distinct_columns(ctx))
        for label, pooled in pooled_all.items():
            bins = reliability_bins(pooled.probs, pooled.labels)
            curves[label] = (bins, binned_ece(bins))
            rows.append({"splits": title, "point": label, "n": str(pooled.n),
                         "mean confidence": fmt_value(finite_mean(pooled.probs.max(axis=1))),
                         "accuracy": fmt_value(finite_mean(pooled.correct)), "binned ECE": fmt_value(curves[label][1])})
        if curves:
            first = next(iter(pooled_all.values()))
            panels.append((f"{title}, n={first.n}", curves))
            n_classes.append(int(first.probs.shape[1]))
    if not panels:
        return Section("Calibration", (Para(_not_drawn(ctx), "muted"),))
    note = ("Binned ECE is biased upward on small n: with few examples in a bin, sampling noise alone separates "
            "accuracy from confidence, so even a calibrated model shows ECE > 0. Compare points on the same "
            "splits rather than reading the level; summary.json's ece metric, with its interval, is the "
            "reference number per split. The numbers below are recomputed from the stored predictions "
            "(the ece metric's 10 equal-width bins of top-label confidence on [0, 1], test splits pooled).")
    path = plots_preds.plot_reliability(panels, ctx.figdir / FIGURES[4], n_classes)
    return Section("Calibration", (FigureBlock(path, "Reliability diagrams: accuracy against confidence per bin; "
                                                     "the lower panels show the share of examples per bin. With K "
                                                     "classes the top-label confidence is at least 1/K, so each "
                                                     "confidence axis starts at 1/K and shows only the bins above "
                                                     "it (for 2 classes, the five bins from 0.5); the bins are the "
                                                     "ece metric's, so the legend's ECE is unchanged."),
                                   Para(note, "note"), TableBlock(pd.DataFrame(rows, dtype=object))))


def per_class(ctx: Context) -> Section:
    """Confusion matrices and per-class recall per suite (test splits pooled), and negative flips vs base."""
    fig_rows, names_of, recall_rows, flip_rows = [], {}, [], []
    for suite, pairs in _by_suite(ctx).items():
        pooled = _pooled(ctx, pairs)
        if not pooled:
            continue
        c = max(p.probs.shape[1] for p in pooled.values())
        names_of[suite] = _class_names(ctx, suite, c)
        mats = [(label, confusion_matrix(p.labels, p.pred, c)) for label, p in pooled.items()]
        fig_rows.append((suite, mats))
        recalls = {label: per_class_recall(cm) for label, cm in mats}
        for k in range(c):
            row = {"suite": suite, "class": names_of[suite][k], "n": str(int(mats[0][1][k].sum()))}
            row.update({label: fmt_value(r[k]) for label, r in recalls.items()})
            if "base" in recalls:
                row.update({f"Δ {label.split(' (')[0]}": fmt_delta(r[k] - recalls["base"][k])
                            for label, r in recalls.items() if label != "base"})
            recall_rows.append(row)
        for label, p in pooled.items():
            if label != "base" and "base" in pooled:
                fc = flip_counts(pooled["base"], p)
                flip_rows.append({"suite": suite, "comparison": f"{label} vs base", "n": str(fc["n"]),
                                  "negative flips": str(fc["negative"]),
                                  "negative flip rate": fmt_value(fc["negative_rate"]),
                                  "positive flips": str(fc["positive"])})
    if not fig_rows:
        return Section("Per-class view", (Para(_not_drawn(ctx), "muted"),))
    splits_of = {suite: [split for _, split in pairs] for suite, pairs in _by_suite(ctx).items()}
    path = plots_preds.plot_confusion(fig_rows, names_of, ctx.figdir / FIGURES[5], splits_of=splits_of)
    many = (f" With more than {plots_preds.MANY_SUITES} suites only the chosen (last) point's matrix is drawn; "
            "the per-class recall table has every point." if len(fig_rows) > plots_preds.MANY_SUITES else "")
    blocks = [FigureBlock(path, "Confusion matrices per suite (test splits pooled)." + many),
              Heading("Per-class recall"),
              TableBlock(pd.DataFrame(recall_rows, dtype=object), "Recomputed from the stored predictions.",
                         key_columns=2)]
    if flip_rows:
        blocks += [Heading("Negative flips"),
                   TableBlock(pd.DataFrame(flip_rows, dtype=object),
                              "Negative flip: base right, the other point wrong (matched by example id); "
                              "positive flip: the reverse. Rate = negative flips / n.")]
    return Section("Per-class view", tuple(blocks))


def _texts(ctx: Context, top: pd.DataFrame) -> list[str]:
    """Dataset text of the rows of ``top`` from ``ctx.text_lookup`` (one call per split)."""
    texts = ["(text unavailable)"] * len(top)
    for (suite, split), rows in top.groupby(["suite", "split"], sort=False):
        ids = [str(x) for x in rows["example_id"]]
        try:
            got = list(ctx.text_lookup(suite, split, ids))
        except Exception as e:  # the caller's lookup: a failure costs the examples, not the report
            logger.warning("text_lookup(%r, %r, ...) failed (%s); examples shown without text", suite, split,
                           type(e).__name__)
            continue
        if len(got) != len(ids):
            logger.warning("text_lookup(%r, %r, ...) returned %d texts for %d ids; examples shown without text",
                           suite, split, len(got), len(ids))
            continue
        for pos, text in zip(rows.index, got):
            texts[top.index.get_loc(pos)] = str(text)
    return texts


def examples(ctx: Context) -> Section | None:
    """HTML only: per suite, the negative flips (base right, candidate wrong) with the largest drop in the
    probability of the true label, with their text. ``None`` unless examples are on and a lookup was given."""
    f = ctx.focus
    cand = f.chosen if f.chosen not in (None, f.base) else f.adapted
    if not ctx.include_examples or ctx.text_lookup is None or ctx.preds is None or f.base is None or cand is None:
        return None
    if not any(ctx.preds.has(f.base, [p]) for ps in _by_suite(ctx).values() for p in ps):
        return None  # no class logits (a language-model run): lmsections.negative_flips counts its flips
    cand_name = "chosen" if cand == f.chosen else "adapted"
    rows = []
    for suite, pairs in _by_suite(ctx).items():
        ref, other = ctx.preds.pooled(f.base, pairs), ctx.preds.pooled(cand, pairs)
        if ref is None or other is None:
            continue
        top = largest_flips(ref, other, k=5)
        if top.empty:
            continue
        names = _class_names(ctx, suite, ref.probs.shape[1])
        for (_, r), text in zip(top.iterrows(), _texts(ctx, top)):
            rows.append({"suite": suite, "split": r["split"], "example id": str(r["example_id"]),
                         "true class": names[r["label"]],
                         "base: pred (p)": f"{names[r['ref_pred']]} ({r['ref_conf']:.3f})",
                         f"{cand_name}: pred (p)": f"{names[r['cand_pred']]} ({r['cand_conf']:.3f})",
                         "Δ p(true)": fmt_delta(-r["drop"]), "text": text})
    blocks = [Para(f"Examples the base model got right and the {cand_name} point got wrong, with the largest drop "
                   "in the probability of the true label (at most 5 per suite). Dataset text appears only in this "
                   "local HTML file.", "muted")]
    blocks.append(TableBlock(pd.DataFrame(rows, dtype=object)) if rows else Para("No negative flips.", "muted"))
    return Section("Largest negative flips", tuple(blocks), html_only=True)
