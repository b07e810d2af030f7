"""Stage 9, the report: renders a stored run directory as ``report.md``, a self-contained ``report.html`` and
``figures/*.png``.

The report loads no model and imports neither torch nor transformers. It reads ``summary.json``,
``predictions.parquet``, ``manifest.json`` and ``verdict.json`` (the last three when present) and draws them;
the only numbers it derives from predictions are views of the stored logits (reliability bins, confusion
matrices, per-class recall, negative flips, majority-class rates). Every file is written atomically.

Dataset text reaches the HTML page only, and only through the caller's ``text_lookup`` (and ``gold_lookup``);
the report never loads data itself. Generation outputs, stored in ``predictions.parquet``, reach the HTML page
only under the same switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.io import atomic_write_text, ensure_dir
from harness.report.document import FIGURES, Context
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.predstats import PredIndex
from harness.report.sections import build_document
from harness.report.tables import focus_points, metric_names, selection_metric
from harness.rundir import PREDICTIONS, read_manifest, read_predictions, read_summary, read_verdict

__all__ = ["ReportPaths", "render_report", "REPORT_MD", "REPORT_HTML", "FIGURE_DIR"]

logger = logging.getLogger(__name__)

REPORT_MD, REPORT_HTML, FIGURE_DIR = "report.md", "report.html", "figures"

TextLookup = Callable[[str, str, Sequence[str]], Sequence[str]]


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`render_report` wrote the report."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def render_report(run_dir: str | Path, *, include_examples: bool = True,
                  text_lookup: TextLookup | None = None, gold_lookup: TextLookup | None = None,
                  progress: bool = False) -> ReportPaths:
    """Render the report of a stored run directory into that directory.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        A run directory written by ``harness eval`` or ``harness sweep`` (``summary.json`` required;
        ``predictions.parquet``, ``manifest.json`` and ``verdict.json`` used when present).
    include_examples : bool, default=True
        Show the largest negative flips with their dataset text in ``report.html``. ``False`` (used for the
        committed sample report) keeps every output free of dataset text.
    text_lookup : callable, default=None
        ``text_lookup(suite, split, example_ids) -> list[str]``, the text of each example id in order. Without
        it no dataset text is shown. A failing lookup costs the examples (logged), never the report. For a
        language-model suite the text is the row's rendered prompt.
    gold_lookup : callable, default=None
        ``gold_lookup(suite, split, example_ids) -> list[str]``, the reference answer of each language-model
        example, shown beside the generation examples (which need ``include_examples`` and ``text_lookup``).
    progress : bool, default=False
        A bar over the report's sections on a terminal, one INFO line per section otherwise
        (:func:`harness.progress.track`).

    Returns
    -------
    ReportPaths
        Paths of ``report.md``, ``report.html`` and the figures written.

    Raises
    ------
    harness.errors.DataError
        If ``summary.json`` or ``predictions.parquet`` is missing or unreadable (predictions only when present).
    harness.errors.OutputError
        If the run directory is not writable.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    frame = read_predictions(run_dir) if (run_dir / PREDICTIONS).is_file() else None
    preds = PredIndex(frame) if frame is not None else None
    outputs = frame[frame["output"].notna()] if frame is not None and "output" in frame.columns else None
    lm_records = (frame[frame["logits"].isna()] if "logits" in frame.columns else frame) if frame is not None else None
    if preds is None:
        logger.warning("%s has no %s; calibration and per-class views are left out", run_dir, PREDICTIONS)
    figdir = ensure_dir(run_dir / FIGURE_DIR)
    ctx = Context(summary=summary, focus=focus_points(summary),
                  metric=selection_metric(summary, metric_names(summary)), manifest=read_manifest(run_dir),
                  verdict=read_verdict(run_dir), preds=preds, figdir=figdir, include_examples=include_examples,
                  text_lookup=text_lookup, gold_lookup=gold_lookup, outputs=outputs, lm_records=lm_records)
    doc = build_document(ctx, progress)
    for name in FIGURES:  # a figure of an earlier render that no longer applies would be stale
        if (figdir / name).exists() and figdir / name not in doc.figures:
            (figdir / name).unlink()
    md = atomic_write_text(run_dir / REPORT_MD, render_markdown(doc, FIGURE_DIR))
    page = atomic_write_text(run_dir / REPORT_HTML, render_html(doc))
    logger.info("wrote %s, %s and %d figures", md, page, len(doc.figures))
    return ReportPaths(markdown=md, html=page, figures=doc.figures)
