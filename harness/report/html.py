"""Render a :class:`~harness.report.document.Document` as one self-contained HTML page (``report.html``).

Figures are embedded as base64 PNG data URIs and the CSS is inline; the page has no script and no external
reference, and its Content-Security-Policy forbids loading anything but ``data:`` images, so it opens offline.
Every piece of text, dataset text included, goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import logging
import re

import pandas as pd

from harness.report.document import Document, FigureBlock, Heading, Para, Section, TableBlock

__all__ = ["render_html", "CSP", "PAGE_WIDTH_PX", "table_chunks"]

logger = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: "DejaVu Sans", Verdana, Arial, sans-serif; font-size: 14px; line-height: 1.45;
       color: #1b1b1b; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 24px; margin: 0 0 12px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d0d0; }
h3 { font-size: 15px; margin: 20px 0 6px; }
nav ol { columns: 2; margin: 8px 0 0; padding-left: 22px; }
nav a, nav a:visited { color: #1f5fa8; text-decoration: none; }
.note { background: #fff6d6; border-left: 5px solid #e0a800; padding: 8px 12px; margin: 10px 0; }
.muted { color: #5a5a5a; }
.caption { color: #4a4a4a; font-size: 12.5px; margin: 4px 0 14px; }
.table-wrap { overflow-x: auto; margin: 6px 0; scrollbar-width: thin; scrollbar-color: #9a9a9a #eeeeee; }
.cont { color: #5a5a5a; font-size: 12px; margin: 10px 0 0; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #d6d6d6; padding: 3px 8px; vertical-align: top; }
td { overflow-wrap: anywhere; }
td.tok { white-space: nowrap; }
th { background: #f1f3f5; text-align: left; min-width: 3em; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.pass { color: #11692a; font-weight: bold; }
td.fail { color: #b3161b; font-weight: bold; }
td.text { min-width: 280px; max-width: 520px; white-space: pre-wrap; word-break: break-word; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #4a4a4a; font-size: 12.5px; margin-top: 4px; }
"""

# Width of main's content box (max-width 1180 px; the 28 px paddings lie outside it, so a 1280 px window shows all
# of it), less a margin for font differences.
PAGE_WIDTH_PX = 1140
_CHAR_PX, _HEAD_CHAR_PX, _CELL_PAD_PX, _TEXT_CHARS, _TOKEN_CHARS = 7.6, 8.6, 18, 40, 24
_TEXT_COLUMNS = ("text", "prompt (tail)", "gold")  # free text (dataset rows, model outputs): wraps, keeps newlines
_NUM = re.compile(r"^[+-]?(\d+(\.\d+)?|n/a)( \[[^\]]*\])?$")


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _cell_class(col: str, value: str) -> str:
    if value in ("PASS", "FAIL"):
        return value.lower()
    if col in _TEXT_COLUMNS or col.endswith(" output"):
        return "text"
    if _NUM.match(value):
        return "num"
    return "tok" if len(value) <= _TOKEN_CHARS and " " not in value else ""


def _col_width(col: str, values: list[str]) -> float:
    """Estimated narrowest rendered width (px) of a column, the least the browser can shrink it to: headers break
    at spaces and after "/", numbers and short tokens (a point id) never wrap, other text wraps between words
    (its longest word, at most ``_TEXT_CHARS`` characters, sets the width). A table is split only when even
    these widths do not fit: the browser's table layout narrows wrapping columns as needed."""
    head = max((len(w) for w in re.split(r"[ /]", col)), default=0) * _HEAD_CHAR_PX
    cells = [len(v) if _cell_class(col, v) in ("num", "pass", "fail", "tok")
             else min(max((len(w) for w in v.split()), default=0), _TEXT_CHARS) for v in values]
    return max([head] + [c * _CHAR_PX for c in cells]) + _CELL_PAD_PX


def table_chunks(frame: pd.DataFrame, key_columns: int = 1, width_px: float = PAGE_WIDTH_PX) -> list[pd.DataFrame]:
    """Split a table wider than ``width_px`` into tables of consecutive columns that each fit, every one of
    them repeating the first ``key_columns`` columns, so no column is ever cut off at the page edge.

    Widths are estimates (:func:`_col_width`); a single column wider than the page still gets its own table,
    whose wrapper scrolls with a visible scrollbar.
    """
    cols = [str(c) for c in frame.columns]
    frame = frame.set_axis(cols, axis=1)
    widths = {c: _col_width(c, [str(v) for v in frame[c]]) for c in cols}
    keys, rest = cols[:key_columns], cols[key_columns:]
    base = sum(widths[c] for c in keys)
    chunks: list[list[str]] = []
    used = width_px  # forces a new chunk for the first column
    for c in rest:
        if used + widths[c] > width_px and (not chunks or len(chunks[-1]) > 0):
            chunks.append([])
            used = base
        chunks[-1].append(c)
        used += widths[c]
    return [frame[keys + chunk] for chunk in chunks] or [frame]


def _head_cell(col: str) -> str:
    return "<th>" + "/<wbr>".join(_e(part) for part in col.split("/")) + "</th>"


def _one_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    head = "".join(_head_cell(c) for c in cols)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for col, v in zip(cols, row):
            cls = _cell_class(col, str(v))
            cells.append(f'<td class="{cls}">{_e(v)}</td>' if cls else f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def _table(frame: pd.DataFrame, key_columns: int = 1, split: bool = True) -> str:
    if frame.empty:
        return '<p class="muted">(none)</p>'
    chunks = table_chunks(frame, key_columns) if split else [frame]
    out = [_one_table(chunks[0])]
    keys = ", ".join(str(c) for c in frame.columns[:key_columns])
    for i, chunk in enumerate(chunks[1:], start=2):
        out.append(f'<p class="cont">Table continued ({i} of {len(chunks)}; {_e(keys)} repeated):</p>')
        out.append(_one_table(chunk))
    return "\n".join(out)


def _figure(b: FigureBlock) -> str:
    data = base64.b64encode(b.path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(b.alt)}">'
            f"<figcaption>{_e(b.caption)}</figcaption></figure>")


def _section(sec: Section) -> str:
    out = [f'<section id="{_e(sec.anchor)}">', f"<h2>{_e(sec.title)}</h2>"]
    for b in sec.blocks:
        if isinstance(b, Heading):
            out.append(f"<h3>{_e(b.text)}</h3>")
        elif isinstance(b, Para):
            cls = {"note": "note", "muted": "muted"}.get(b.style)
            out.append(f'<p class="{cls}">{_e(b.text)}</p>' if cls else f"<p>{_e(b.text)}</p>")
        elif isinstance(b, TableBlock):
            out.append(_table(b.frame, b.key_columns, b.split))
            if b.caption:
                out.append(f'<p class="caption">{_e(b.caption)}</p>')
        elif isinstance(b, FigureBlock):
            out.append(_figure(b))
    out.append("</section>")
    return "\n".join(out)


def render_html(doc: Document) -> str:
    """The self-contained HTML page of ``doc`` (every section, ``html_only`` ones included).

    Parameters
    ----------
    doc : Document
        The assembled report; its figures are read from disk and embedded.

    Returns
    -------
    str
        A complete HTML5 document.
    """
    toc = "".join(f'<li><a href="#{_e(s.anchor)}">{_e(s.title)}</a></li>' for s in doc.sections)
    notes = "".join(f'<div class="note"><strong>Note:</strong> {_e(n)}</div>' for n in doc.notes)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{_e(doc.title)}</h1>", notes, f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>"]
    parts += [_section(s) for s in doc.sections]
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
