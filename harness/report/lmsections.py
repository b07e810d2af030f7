"""Report sections for language-model suites: which task each suite runs, the metric each suite is judged on,
the per-task results tables, and (HTML only, opt-in) a few generation outputs beside their prompt and reference.

A suite's task and selection metric are read from ``manifest.json`` (``suites.<name>.task`` and
``selection_metric``, and a sweep's ``selection_metrics``); a run written before these were recorded falls back to
the suite's metric names (each built-in metric belongs to one task, :data:`harness.spec.schema.TASK_METRICS`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

from harness.report.document import Block, Context, Heading, Para, Section, TableBlock
from harness.report.tables import metric_names, report_pairs, split_role, split_table, suite_role, suite_splits
from harness.spec.schema import TASK_METRICS, TASKS

__all__ = ["TASK_TITLES", "suite_task", "suite_metrics", "suite_metric", "is_lm_run", "units_note",
           "task_results", "negative_flips", "generation_examples", "N_GENERATION_EXAMPLES", "PROMPT_TAIL_CHARS"]

logger = logging.getLogger(__name__)

TASK_TITLES = {"classification": "Classification", "multiple_choice": "Multiple choice (log-likelihood)",
               "generation": "Generation (greedy decoding)", "perplexity": "Perplexity (rolling log-likelihood)"}
_TASK_NOTES = {
    "multiple_choice": "acc: the choice with the largest summed log-likelihood is the gold one; acc_norm: the same "
                       "with each choice's log-likelihood divided by its length in characters; acc_bytes: in UTF-8 bytes "
                       "(lm-eval's definitions). "
                       "Fractions in [0, 1], higher is better.",
    "generation": "exact_match and contains after the suite's normalisation; numeric_match: the output's final "
                  "number equals the reference's; f1: token F1 with the reference. Fractions in [0, 1], higher is "
                  "better.",
    "perplexity": "word_perplexity and byte_perplexity: exp of the negative log-likelihood per word / per UTF-8 "
                  "byte (at least 1); bits_per_byte: the negative log2-likelihood per byte. Lower is better for "
                  "all three; intervals resample whole documents (a ratio estimator).",
}
_PREFERRED = {"classification": "accuracy", "multiple_choice": "acc_norm", "perplexity": "bits_per_byte"}
#: Generation examples shown per suite, and characters of each prompt's end shown.
N_GENERATION_EXAMPLES, PROMPT_TAIL_CHARS = 5, 240


def _manifest_suite(ctx: Context, suite: str) -> Mapping:
    suites = ctx.manifest.get("suites")
    info = suites.get(suite) if isinstance(suites, Mapping) else None
    return info if isinstance(info, Mapping) else {}


def suite_metrics(ctx: Context, suite: str) -> list[str]:
    """The suite's metric names: ``summary.suites`` when recorded, else those its results hold (run order)."""
    info = ctx.summary.suites.get(suite)
    if info is not None and info.metrics:
        return list(info.metrics)
    present = {m for splits in ctx.summary.results.values() for e in splits.get(suite, {}).values() for m in e.metrics}
    return [m for m in metric_names(ctx.summary) if m in present]


def suite_task(ctx: Context, suite: str) -> str:
    """``classification``, ``multiple_choice``, ``generation`` or ``perplexity`` (manifest, else metric names)."""
    task = _manifest_suite(ctx, suite).get("task")
    if task in TASKS:
        return str(task)
    metrics = suite_metrics(ctx, suite)
    return next((t for t, names in TASK_METRICS.items() if metrics and set(metrics) <= set(names)),
                "classification")


def suite_metric(ctx: Context, suite: str) -> str:
    """The metric ``suite`` is judged on: the one it selected alpha on (manifest), else the run's selection metric
    when the suite has it, else its task's usual one (acc_norm, bits_per_byte, accuracy), else its first."""
    sel = ctx.manifest.get("selection_metrics")
    recorded = (sel.get(suite) if isinstance(sel, Mapping) else None) or _manifest_suite(ctx, suite).get(
        "selection_metric")
    metrics = suite_metrics(ctx, suite)
    if isinstance(recorded, str) and recorded in metrics:
        return recorded
    if ctx.metric in metrics or not metrics:
        return ctx.metric
    preferred = _PREFERRED.get(suite_task(ctx, suite))
    return preferred if preferred in metrics else metrics[0]


def is_lm_run(ctx: Context) -> bool:
    """Whether any suite of the run is a language-model task."""
    return any(suite_task(ctx, s) != "classification" for s in dict.fromkeys(p[0] for p in suite_splits(ctx.summary)))


def units_note(ctx: Context) -> str:
    """The units sentence of the overview: fractions, except the perplexity metrics and nll, each named only when
    the run has it."""
    names = metric_names(ctx.summary)
    nll = " (nll in nats per example)" if "nll" in names else ""
    if any(m in TASK_METRICS["perplexity"] for m in names):
        return (f"Metric values are fractions in [0, 1]{nll}, except word_perplexity and byte_perplexity (at least 1) "
                "and bits_per_byte (bits per UTF-8 byte); for these three lower is better.")
    return f"Metric values are fractions in [0, 1]{nll}."


def task_results(ctx: Context) -> Section:
    """Per task, one table of every suite's own metrics on each split, for base, adapted and the chosen point,
    each value with its interval, and the differences from base."""
    by_task: dict[str, list[tuple[str, str]]] = {}
    for pair in suite_splits(ctx.summary):
        by_task.setdefault(suite_task(ctx, pair[0]), []).append(pair)
    blocks: list[Block] = []
    for task in [t for t in TASKS if t in by_task]:
        frames = []
        for pair in by_task[task]:
            t = split_table(ctx.summary, ctx.focus, pair)
            role = split_role(ctx.summary, *pair)
            t.insert(0, "split", pair[1] if pair[1] == role else f"{pair[1]} ({role})")
            t.insert(0, "suite", f"{pair[0]} ({suite_role(ctx.summary, pair[0])})")
            frames.append(t)
        blocks.append(Heading(TASK_TITLES[task]))
        if task in _TASK_NOTES:
            blocks.append(Para(_TASK_NOTES[task], "muted"))
        delta = " Δ is the difference from base of the two point estimates." if ctx.focus.compared else ""
        blocks.append(TableBlock(pd.concat(frames, ignore_index=True).fillna("n/a"),
                                 f"Each suite's own metrics (value [95% interval] from summary.json).{delta}",
                                 key_columns=3))
    return Section("Results by task", tuple(blocks))


def negative_flips(ctx: Context) -> Section | None:
    """For a language-model run with a base point: per multiple-choice and generation suite and test split, the
    examples base got right and the chosen point (else the adapted one) gets wrong ("negative flips"), and the
    reverse, by the suite's own metric (its per-example rule: :func:`harness.metrics.registry.examples_right`),
    matched by example id: what the gate's ``negative_flips`` rules count. ``None`` when it does not apply
    (report trial, 2026-12-01: an LM run's report said "No negative flips." from the classifier view while the
    gate counted two)."""
    from harness.metrics.registry import examples_right
    from harness.rundir import predictions_for

    f, frame = ctx.focus, ctx.lm_records
    cand = f.chosen if f.chosen not in (None, f.base) else f.adapted
    if frame is None or frame.empty or f.base is None or cand is None or not is_lm_run(ctx):
        return None
    name = "chosen" if cand == f.chosen else "adapted"
    id_pairs, shift = report_pairs(ctx.summary, "test")
    rows = []
    for suite, split in id_pairs + [p for ps in shift.values() for p in ps]:
        if suite_task(ctx, suite) not in ("multiple_choice", "generation"):
            continue
        metric = suite_metric(ctx, suite)
        sides = [predictions_for(frame, p, suite, split) for p in (f.base, cand)]
        if any(s is None for s in sides):
            continue
        try:
            right = [examples_right(s[2], s[3], metric) for s in sides]
        except (KeyError, ValueError) as e:  # records without a column the metric needs: the view, not the report
            logger.warning("negative flips of %s/%s not counted (%s: %s)", suite, split, type(e).__name__, e)
            continue
        if any(r is None for r in right):
            continue
        at = pd.Index(sides[0][0]).get_indexer(sides[1][0])
        keep = at >= 0
        base_right, cand_right = right[0][at[keep]], right[1][keep]
        n = int(keep.sum())
        neg, pos = int((base_right & ~cand_right).sum()), int((~base_right & cand_right).sum())
        rows.append({"suite": suite, "split": split, "metric": metric, "n": str(n), "negative flips": str(neg),
                     "negative flip rate": f"{neg / n:.3f}" if n else "n/a", "positive flips": str(pos),
                     "net": f"{pos - neg:+d}"})
    if not rows:
        return None
    return Section("Negative flips", (
        Para(f"Per suite, the test examples base got right and the {name} point ({cand}) gets wrong (negative "
             "flips), and the reverse (positive flips), each judged by the suite's own metric and matched by example "
             "id; the rate is negative flips / n, as the gate's negative_flips rules count it. A net change near 0 "
             "can hide many flips both ways.", "muted"),
        TableBlock(pd.DataFrame(rows, dtype=object), key_columns=2)))


def _tail(text: str) -> str:
    return text if len(text) <= PROMPT_TAIL_CHARS else "…" + text[-PROMPT_TAIL_CHARS:]


def _pick(frames: dict[str, pd.DataFrame], order: list[str]) -> list[str]:
    """Up to :data:`N_GENERATION_EXAMPLES` example ids: those whose outputs differ between the first and last
    point first, then the rest, each in stored order."""
    ids = [i for i in order if all(i in f.index for f in frames.values())]
    first, last = frames[next(iter(frames))], frames[list(frames)[-1]]
    differ = [i for i in ids if first.at[i, "output"] != last.at[i, "output"]]
    return (differ + [i for i in ids if i not in set(differ)])[:N_GENERATION_EXAMPLES]


def _suite_examples(ctx: Context, suite: str, split: str, metric: str) -> list[dict[str, str]]:
    rows = ctx.outputs[(ctx.outputs["suite"] == suite) & (ctx.outputs["split"] == split)]
    frames: dict[str, pd.DataFrame] = {}
    names: dict[str, str] = {}  # point id -> column label ("adapted = chosen" when the chosen point is adapted)
    for label, pid in ctx.focus.columns:
        short = label.split(" (")[0]
        if pid in names:
            frames[f"{names[pid]} = {short}"] = frames.pop(names[pid])
            names[pid] = f"{names[pid]} = {short}"
        elif not (r := rows[rows["point"] == pid]).empty:
            frames[short], names[pid] = r.drop_duplicates("example_id").set_index("example_id"), short
    if not frames:
        return []
    ids = _pick(frames, [str(i) for i in rows["example_id"].drop_duplicates()])
    prompts = list(ctx.text_lookup(suite, split, ids))
    golds = list(ctx.gold_lookup(suite, split, ids)) if ctx.gold_lookup is not None else [""] * len(ids)
    if len(prompts) != len(ids) or len(golds) != len(ids):
        logger.warning("examples: a lookup for %s/%s returned the wrong number of texts; not shown", suite, split)
        return []
    out = []
    for i, prompt, gold in zip(ids, prompts, golds):
        row = {"suite": suite, "split": split, "example id": i, "prompt (tail)": _tail(str(prompt)),
               "gold": str(gold) or "(unavailable)"}
        row.update({f"{label} output": str(f.at[i, "output"]) for label, f in frames.items()})
        scores = [f.at[i, metric] if metric in f.columns else None for f in frames.values()]
        row[f"{metric} ({' / '.join(frames)})"] = " / ".join("n/a" if s is None or s != s else f"{s:g}"
                                                            for s in scores)
        out.append(row)
    return out


def generation_examples(ctx: Context) -> Section | None:
    """HTML only, and only with examples on and a text lookup: per generation suite, a few test examples with the
    end of the prompt, the reference answer and each focus point's output (examples where the points disagree
    first). ``None`` when it does not apply."""
    if not ctx.include_examples or ctx.text_lookup is None or ctx.outputs is None or ctx.outputs.empty:
        return None
    id_pairs, shift = report_pairs(ctx.summary, "test")
    rows: list[dict[str, str]] = []
    for suite, split in id_pairs + [p for ps in shift.values() for p in ps]:
        if suite_task(ctx, suite) != "generation":
            continue
        try:
            rows += _suite_examples(ctx, suite, split, suite_metric(ctx, suite))
        except Exception as e:  # the caller's lookups: a failure costs the examples, not the report
            logger.warning("examples: generation outputs of %s/%s not shown (%s: %s)", suite, split,
                           type(e).__name__, e)
    if not rows:
        return None
    return Section("Generation examples", (
        Para(f"At most {N_GENERATION_EXAMPLES} test examples per generation suite (those where the points' outputs "
             f"differ first): the last {PROMPT_TAIL_CHARS} characters of the prompt as the suite's template renders "
             "it (before any few-shot block and chat template), the reference answer and each point's output as "
             "scored. Dataset text and outputs appear only in this local HTML file.", "muted"),
        TableBlock(pd.DataFrame(rows, dtype=object), key_columns=3)), html_only=True)
