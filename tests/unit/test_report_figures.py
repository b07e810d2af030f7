"""Figures that cannot mislead (issue 19 item 6, issue 17 items 11 and 13), checked on the matplotlib objects:
the feasible band spans only evaluated alphas, labels do not overlap, the chosen star hides no marker, axis
labels clear the next row's titles, titles fit, an eval report names its model, 41 suites give figures of sane
shape, wide HTML tables are split, and NaN logits raise no numpy warning."""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from harness.report import plots, plots_preds, render_report
from harness.report.html import PAGE_WIDTH_PX, _col_width, table_chunks
from harness.report.plots import Line, _feasible_spans, pareto_front, plot_metric_vs_alpha


def _fixtures():
    spec = importlib.util.spec_from_file_location("_report_fixtures", Path(__file__).with_name("test_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fx = _fixtures()


def _capture(mp: pytest.MonkeyPatch) -> dict:
    """Keep every figure the report draws, by file name, alive after it was saved."""
    seen = {}
    real = plots._figure

    @contextmanager
    def capture(path, width, height):
        with real(path, width, height) as fig:
            seen[Path(path).name] = fig
            yield fig

    mp.setattr(plots, "_figure", capture)
    mp.setattr(plots_preds, "_figure", capture)
    return seen


@pytest.fixture
def figures(monkeypatch):
    return _capture(monkeypatch)


@pytest.fixture(scope="module")
def sweep_figs(tmp_path_factory):
    """The figures of a sweep report whose chosen point is the adapted model (alpha 1)."""
    mp = pytest.MonkeyPatch()
    seen = _capture(mp)
    try:
        render_report(fx.make_run(tmp_path_factory.mktemp("adapted-chosen") / "run", choose="adapted"))
    finally:
        mp.undo()
    return seen


def _boxes(fig, artists):
    r = fig.canvas.get_renderer()
    return [a.get_window_extent(r) for a in artists if a.get_visible() and a.get_text()]


def _overlaps(a, b, tol: float = 1.0) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def test_feasible_spans_only_over_evaluated_alphas(tmp_path, figures):
    alphas = [0.0, 0.05, 0.5, 0.55, 1.0]
    feasible = [False, True, True, False, True]
    assert _feasible_spans(alphas, feasible) == [(0.05, 0.5), (1.0, 1.0)]
    assert _feasible_spans([0.5, 0.0, 1.0], [True, False, True]) == [(0.5, 1.0)]  # order of evaluation
    a = np.asarray(alphas)
    line = Line("test split", a, a * 0 + 0.8, a * 0 + 0.7, a * 0 + 0.9, "#1f77b4")
    plot_metric_vs_alpha([("s (id)", [line])], tmp_path / "m.png", metric="accuracy", alphas=alphas,
                         feasible=feasible, chosen_alpha=0.5)
    ax = figures["m.png"].axes[0]
    spans = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if isinstance(p, Rectangle)
             and p.get_alpha() == pytest.approx(0.12)]
    assert spans == [pytest.approx((0.05, 0.5))]  # nothing shaded towards 0, 0.55 or the isolated 1.0
    marks = [c for c in ax.collections if c.get_label().startswith("feasible")]
    assert sorted(marks[0].get_offsets()[:, 0]) == [0.05, 0.5, 1.0]  # every feasible alpha marked, 1.0 too


def test_metric_vs_alpha_one_panel_per_suite(sweep_figs):
    fig = sweep_figs["metric_vs_alpha.png"]
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["sst_like (id)", "tweets (shift)", "reviews_typos (shift)"]
    assert max(len([c for c in ax.collections if c.get_label().startswith("_")]) for ax in visible) <= 2


def test_id_vs_shift_legend_labels_and_markers(sweep_figs):
    fig = sweep_figs["id_vs_shift.png"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Pareto front of the points in this panel" in legend
    assert "chosen (α=1 = adapted)" in legend
    for ax in [a for a in fig.axes if a.get_visible()]:
        star = next(c for c in ax.collections if c.get_label().startswith("chosen"))
        tri = next(c for c in ax.collections if c.get_gid() == "adapted-marker")
        assert np.allclose(tri.get_offsets(), star.get_offsets())  # alpha 1 chosen: same point
        assert tri.get_zorder() > star.get_zorder()  # the adapted marker is drawn over the star, not hidden
        labels = [t for t in ax.texts if t.get_text()]
        boxes = _boxes(fig, labels)
        assert len(boxes) >= 11
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not _overlaps(boxes[i], boxes[j]), (labels[i].get_text(), labels[j].get_text())
        adapted = next(t for t in labels if t.get_text() == "adapted (α=1)")
        px = ax.transData.transform(adapted.xy)
        box = _boxes(fig, [adapted])[0]
        gap = np.hypot(max(box.x0 - px[0], 0, px[0] - box.x1), max(box.y0 - px[1], 0, px[1] - box.y1))
        assert gap < 40, gap  # the label sits at its point


def test_pareto_front_per_direction():
    x, y = [0.1, 0.5, 0.4, np.nan], [0.9, 0.5, 0.4, 1.0]
    assert list(pareto_front(x, y)) == [True, True, False, False]
    assert list(pareto_front(x, y, higher_is_better=False)) == [True, False, True, False]


def test_confusion_axis_labels_clear_next_titles(sweep_figs):
    fig = sweep_figs["confusion.png"]
    r = fig.canvas.get_renderer()
    xlabels = [ax.xaxis.label.get_window_extent(r) for ax in fig.axes if ax.get_visible()]
    titles = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_visible()]
    titles += [sub._suptitle.get_window_extent(r) for sub in fig.subfigs if sub._suptitle is not None]
    assert len(fig.subfigs) == 3
    for lab in xlabels:
        for t in titles:
            assert not _overlaps(lab, t)
            assert not (0 <= t.y0 - lab.y1 < 4)  # not just touching: a gap below the next row's heading


def test_single_suite_eval_report_fits_and_names_the_model(tmp_path, figures):
    only = {"sst_like": fx.SUITES["sst_like"]}
    run = fx.make_run(tmp_path / "eval", kind="eval", suites_spec=only)
    paths = render_report(run)
    fig = figures["reliability.png"]
    r = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(r)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width and title.y1 <= fig.bbox.height
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("model: ECE") for t in legend) and not any("adapted" in t for t in legend)
    headline = paths.markdown.read_text().split("## Headline")[1].split("\n## ")[0]
    header = next(line for line in headline.splitlines() if line.startswith("| suite"))
    assert header.endswith("| model |") and "adapted" not in headline


def _many_suites(n_shift: int) -> dict:
    spec = {"id-suite": ("id", {"validation": ("validation", 40), "test": ("test", 40)}, 1.2, 2.6)}
    for i in range(n_shift):
        spec[f"shift-domain-{i:02d}"] = ("shift", {"test": ("test", 30)}, 1.4, 0.9 + 0.02 * i)
    return spec


@pytest.mark.slow  # renders 41 suites (about a minute on an idle core)
def test_41_suites_give_figures_of_sane_shape_and_split_tables(tmp_path):
    run = fx.make_run(tmp_path / "wide", suites_spec=_many_suites(40), alphas=[0.0, 0.5, 1.0])
    paths = render_report(run)
    for fig in paths.figures:
        w, h = Image.open(fig).size
        assert w <= 2600 and 0.3 <= w / h <= 4.0, (fig.name, w, h)  # was 8676 x 484 for the bar chart
    page = paths.html.read_text()
    assert "Table continued" in page


def test_table_chunks_fit_the_page_and_repeat_keys():
    frame = pd.DataFrame([[f"{a:g}", f"alpha={a:g}"] + ["0.873"] * 41 for a in (0.0, 0.5, 1.0)],
                         columns=["α", "point"] + [f"shift-domain-{i:02d}/test" for i in range(41)], dtype=object)
    chunks = table_chunks(frame, key_columns=2)
    assert len(chunks) > 1
    for c in chunks:
        assert list(c.columns[:2]) == ["α", "point"]
        assert sum(_col_width(col, list(c[col])) for col in c.columns) <= PAGE_WIDTH_PX
    assert [col for c in chunks for col in c.columns[2:]] == list(frame.columns[2:])
    narrow = frame.iloc[:, :6]
    assert len(table_chunks(narrow, 2)) == 1


def test_nan_logits_raise_no_numpy_warning(tmp_path):
    run = fx.make_run(tmp_path / "nan", nan_rows=7, alphas=[0.0, 0.5, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = render_report(run)
    assert paths.html.is_file()
