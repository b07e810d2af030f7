"""The report as a renderer-neutral document: sections of headings, paragraphs, tables and figures.

:mod:`harness.report.sections` builds a :class:`Document` from a :class:`Context`;
:mod:`harness.report.markdown` and :mod:`harness.report.html` render it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd

from harness.report.predstats import PredIndex
from harness.report.tables import Focus, alpha_points
from harness.summary import Summary

__all__ = ["Heading", "Para", "TableBlock", "FigureBlock", "Block", "Section", "Document", "Context",
           "FIGURES"]

logger = logging.getLogger(__name__)

FIGURES = ("id_vs_shift.png", "id_vs_shift_validation.png", "before_after.png", "metric_vs_alpha.png",
           "reliability.png", "confusion.png")


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section (level 3)."""

    text: str


@dataclass(frozen=True)
class Para:
    """Plain text (never markup); ``style`` is ``p``, ``note`` (shown prominently) or ``muted``."""

    text: str
    style: str = "p"


@dataclass(frozen=True)
class TableBlock:
    """A table of preformatted string cells; the first ``key_columns`` columns identify a row and are repeated
    when the HTML page splits a table too wide for the page into several (see :mod:`harness.report.html`);
    ``split=False`` keeps it whole (a gate table, whose rows are read whole: its text columns wrap instead)."""

    frame: pd.DataFrame
    caption: str = ""
    key_columns: int = 1
    split: bool = True


@dataclass(frozen=True)
class FigureBlock:
    """A PNG in the figures folder, referenced as ``figures/<name>``."""

    path: Path
    caption: str

    @property
    def alt(self) -> str:
        """The image's alternative text: the caption's first sentence (the whole caption follows the image, so
        a screen reader or a raw Markdown view does not read it twice; report trial)."""
        return re.split(r"(?<=[\w)])\. (?=[A-Z])", self.caption.strip(), maxsplit=1)[0].rstrip(".")


Block = Union[Heading, Para, TableBlock, FigureBlock]


@dataclass(frozen=True)
class Section:
    """A level-2 section; ``html_only`` sections (dataset text) never reach the Markdown report."""

    title: str
    blocks: tuple[Block, ...]
    html_only: bool = False

    @property
    def anchor(self) -> str:
        return "sec-" + "".join(ch if ch.isalnum() else "-" for ch in self.title.lower()).strip("-")


@dataclass(frozen=True)
class Document:
    """Title, notes (shown at the top), and sections in order."""

    title: str
    notes: tuple[str, ...]
    sections: tuple[Section, ...]
    figures: tuple[Path, ...] = field(default=())


@dataclass(frozen=True)
class Context:
    """Everything a section builder reads: the parsed run files and where figures go. ``text_lookup`` and
    ``gold_lookup`` (``(suite, split, example_ids) -> texts``) are the only way dataset text gets in."""

    summary: Summary
    focus: Focus
    metric: str
    manifest: Mapping[str, Any]
    verdict: Mapping[str, Any] | None
    preds: PredIndex | None
    figdir: Path
    include_examples: bool = True
    text_lookup: Callable[[str, str, list[str]], list[str]] | None = None
    gold_lookup: Callable[[str, str, list[str]], list[str]] | None = None
    outputs: pd.DataFrame | None = None  # generation records of predictions.parquet (point, suite, split, output...)
    lm_records: pd.DataFrame | None = None  # every language-model record of predictions.parquet (no class logits)

    @property
    def sweep(self) -> bool:
        """Whether the run has an alpha curve (at least two points with an alpha)."""
        return len(alpha_points(self.summary)) >= 2
