"""Render a :class:`~harness.report.document.Document` as Markdown (``report.md``).

Figures are referenced by relative path (``figures/NAME.png``). Sections marked ``html_only`` (dataset text) are
never written here. Cell text is escaped for pipe tables, and ``<`` is written as ``&lt;`` so that no text is read
as raw HTML by a Markdown viewer.
"""

from __future__ import annotations

import logging

import pandas as pd

from harness.report.document import Document, FigureBlock, Heading, Para, Section, TableBlock

__all__ = ["render_markdown"]

logger = logging.getLogger(__name__)


def _text(s: object) -> str:
    return str(s).replace("<", "&lt;")


def _cell(s: object) -> str:
    return _text(s).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["(none)"]
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return lines


def _section(sec: Section, figure_dir: str) -> list[str]:
    out = [f"## {_text(sec.title)}", ""]
    for b in sec.blocks:
        if isinstance(b, Heading):
            out += [f"### {_text(b.text)}", ""]
        elif isinstance(b, Para):
            out += [f"> **Note:** {_text(b.text)}" if b.style == "note" else _text(b.text), ""]
        elif isinstance(b, TableBlock):
            out += _table(b.frame) + [""]
            if b.caption:
                out += [_text(b.caption), ""]
        elif isinstance(b, FigureBlock):
            alt = _text(b.alt).replace("[", "(").replace("]", ")")
            out += [f"![{alt}]({figure_dir}/{b.path.name})", "", _text(b.caption), ""]
    return out


def render_markdown(doc: Document, figure_dir: str = "figures") -> str:
    """The Markdown text of ``doc``.

    Parameters
    ----------
    doc : Document
        The assembled report.
    figure_dir : str, default="figures"
        Folder of the PNGs, relative to the Markdown file.

    Returns
    -------
    str
        Markdown ending in a newline; notes come first as block quotes.
    """
    out = [f"# {_text(doc.title)}", ""]
    for note in doc.notes:
        out += [f"> **Note:** {_text(note)}", ""]
    for sec in doc.sections:
        if not sec.html_only:
            out += _section(sec, figure_dir)
    return "\n".join(out).rstrip() + "\n"
