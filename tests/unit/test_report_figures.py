"""Figures that cannot mislead (issue 19 item 6, issue 17 items 11 and 13), checked on the matplotlib objects:
the feasible band spans only evaluated alphas, labels do not overlap, the chosen star hides no marker, axis
labels clear the next row's titles, titles fit, an eval report names its model, 41 suites give figures of sane
shape, wide HTML tables are split, and NaN logits raise no numpy warning."""

from __future__ import annotations

from types import SimpleNamespace

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text
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


def _shaded(ax) -> list[tuple[float, float]]:
    return sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if isinstance(p, Rectangle)
                  and p.get_alpha() == pytest.approx(plots._STRIP_ALPHA))


def test_feasible_band_covers_only_evaluated_alphas(tmp_path, figures):
    alphas = [0.0, 0.05, 0.5, 0.55, 1.0]
    feasible = [False, True, True, False, True]
    spans = _feasible_spans(alphas, feasible)
    assert [(lo + hi) / 2 for lo, hi in spans] == pytest.approx([0.05, 0.5, 1.0])  # one strip per feasible alpha
    assert all(hi - lo < 0.05 for lo, hi in spans)  # narrower than the closest pair of evaluated alphas
    assert len(_feasible_spans([0.5, 0.0, 1.0], [True, False, True])) == 2  # order of evaluation
    a = np.asarray(alphas)
    line = Line("test split", a, a * 0 + 0.8, a * 0 + 0.7, a * 0 + 0.9, "#1f77b4")
    plot_metric_vs_alpha([("s (id)", [line])], tmp_path / "m.png", metric="accuracy", alphas=alphas,
                         feasible=feasible, chosen_alpha=0.5)
    ax = figures["m.png"].axes[0]
    shaded = _shaded(ax)
    assert len(shaded) == 3
    for lo, hi in shaded:  # each strip holds exactly one evaluated alpha, a feasible one
        inside = [x for x in alphas if lo <= x <= hi]
        assert len(inside) == 1 and feasible[alphas.index(inside[0])]
    for x in (0.1, 0.3, 0.45, 0.75, 0.9):  # never evaluated: never shaded (the old band covered 0.05 to 0.5)
        assert not any(lo <= x <= hi for lo, hi in shaded), x
    marks = [c for c in ax.collections if c.get_label().startswith("feasible")]
    assert sorted(marks[0].get_offsets()[:, 0]) == [0.05, 0.5, 1.0]  # every feasible alpha marked, 1.0 too


def test_reliability_axis_keeps_rows_whose_classes_tie(tmp_path, figures):
    """Rows whose K classes tie have confidence exactly 1/K, which the ece metric bins in (0.4, 0.5] for K = 2:
    the axis then starts at 0.4 so that bin is drawn, and the axis label says why."""
    from harness.report.predstats import binned_ece, reliability_bins, softmax

    logits = np.zeros((4, 2), np.float32)
    logits[2:, 0] = 2.0
    bins = reliability_bins(softmax(logits), np.array([0, 1, 0, 0]))
    plots_preds.plot_reliability([("ID", {"model": (bins, binned_ece(bins))})], tmp_path / "r.png", n_classes=[2])
    top, bottom = [ax for ax in figures["r.png"].axes if ax.get_visible()]
    assert bottom.get_xlim() == pytest.approx((0.4, 1.0))
    assert "from 0.4" in bottom.get_xlabel() and "tie" in bottom.get_xlabel()
    assert min(b.get_x() for b in bottom.patches if isinstance(b, Rectangle) and b.get_height() > 0) == \
        pytest.approx(0.4)


def test_before_after_legend_names_each_reference_once(tmp_path, figures):
    """Each constant-answer reference drawn, on any row of bars, is named once in the legend by its own text;
    groups without one draw no segment."""
    groups = [plots.Bars(f"s{i}\ntest", ((0.5, 0.4, 0.6),), 0.3 if i % 2 else None,
                         "always the split's most frequent gold answer" if i % 2 else None)
              for i in range(plots.BARS_PER_ROW + 2)]
    plots.plot_before_after(groups, ["model"], tmp_path / "b.png", metric="acc")
    fig = figures["b.png"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["always the split's most frequent gold answer", "model"]
    segments = [c for ax in fig.axes for c in ax.collections if type(c).__name__ == "LineCollection"
                and c.get_linestyle()[0][1] is not None]
    assert sum(len(c.get_segments()) for c in segments) == (plots.BARS_PER_ROW + 2) // 2


def test_feasible_strips_have_a_legend_entry_in_the_png(sweep_figs):
    """The green strips are named in the figure's own legend (a patch of their colour), not only in the report's
    caption, so the PNG reads on its own."""
    from matplotlib.colors import to_rgba

    fig = sweep_figs["metric_vs_alpha.png"]
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert plots.FEASIBLE_STRIP in texts and texts.count(plots.FEASIBLE_STRIP) == 1  # once, not per panel
    patch = legend.legend_handles[texts.index(plots.FEASIBLE_STRIP)]
    assert isinstance(patch, Rectangle)
    assert patch.get_facecolor()[:3] == pytest.approx(to_rgba(plots.COLORS["chosen"])[:3])
    assert patch.get_alpha() == pytest.approx(plots._STRIP_ALPHA)


def test_metric_vs_alpha_lines_only_at_evaluated_alphas(tmp_path, figures):
    """Adaptive search: a split evaluated at fewer alphas gets markers and segments at those only, and its band
    spans only them."""
    alphas = np.asarray([0.0, 0.1, 0.2, 0.3, 0.5, 1.0])
    full = Line("validation split", alphas, 0.7 + 0.1 * alphas, 0.6 + 0.1 * alphas, 0.8 + 0.1 * alphas, "#9467bd",
                dashed=True)
    sparse_v = np.where(np.isin(alphas, [0.0, 0.5, 1.0]), 0.75, np.nan)
    sparse = Line("test split", alphas[::-1], sparse_v[::-1], sparse_v[::-1] - 0.05, sparse_v[::-1] + 0.05, "#1f77b4")
    plot_metric_vs_alpha([("s (id)", [full, sparse])], tmp_path / "m.png", metric="accuracy", alphas=alphas,
                         feasible=[False, False, True, True, True, False], chosen_alpha=0.3)
    ax = figures["m.png"].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["test split"].get_xdata()) == [0.0, 0.5, 1.0]  # sorted, no NaN-padded alphas
    assert np.isfinite(lines["test split"].get_ydata()).all()
    assert list(lines["validation split"].get_xdata()) == list(alphas)
    assert lines["test split"].get_marker() == "o"
    bands = [c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    xs = set(np.round(bands[1].get_paths()[0].vertices[:, 0], 9))
    assert xs <= {0.0, 0.5, 1.0}  # the test split's band has corners at its evaluated alphas only
    assert ax.get_ylim()[1] <= 1.0 + 0.05 * np.ptp(ax.get_ylim())
    assert max(t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]) <= 1.0


def test_metric_vs_alpha_one_panel_per_suite(sweep_figs):
    fig = sweep_figs["metric_vs_alpha.png"]
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["sst_like (id)", "tweets (shift)", "reviews_typos (shift)"]
    assert max(len([c for c in ax.collections if c.get_label().startswith("_")]) for ax in visible) <= 2


def test_metric_vs_alpha_each_columns_last_panel_has_the_alpha_axis(tmp_path, figures):
    """Four suites in a 2 x 3 grid: the top-row panels above an empty slot show alpha ticks and label too."""
    a = np.asarray([0.0, 0.5, 1.0])
    panels = [(f"s{i}", [Line("test split", a, a * 0 + 0.8, a * 0 + 0.7, a * 0 + 0.9, "#1f77b4")]) for i in range(4)]
    plot_metric_vs_alpha(panels, tmp_path / "m.png", metric="accuracy", alphas=a, feasible=None, chosen_alpha=None)
    fig = figures["m.png"]
    fig.draw_without_rendering()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    labelled = [ax.get_title() for ax in visible if ax.get_xlabel()
                and any(t.get_visible() and t.get_text() for t in ax.get_xticklabels())]
    assert labelled == ["s1", "s2", "s3"]  # s0 has s3 below it


def test_id_vs_shift_legend_labels_and_markers(sweep_figs):
    fig = sweep_figs["id_vs_shift.png"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert plots.pareto_label("test") in legend  # the ensemble's × are not ringed
    assert any(t.startswith("chord") and "equal ID" in t for t in legend)  # how to read the dashed line
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


HIGH = {"id-suite": ("id", {"validation": ("validation", 120), "test": ("test", 150)}, 2.0, 4.5),
        "shift-suite": ("shift", {"validation": ("validation", 60), "test": ("test", 110)}, 2.2, 4.0)}


@pytest.fixture(scope="module")
def high_figs(tmp_path_factory):
    """The figures of a sweep whose accuracies and interval ends reach 1.0 and whose points crowd there."""
    mp = pytest.MonkeyPatch()
    seen = _capture(mp)
    try:
        render_report(fx.make_run(tmp_path_factory.mktemp("high") / "run", suites_spec=HIGH))
    finally:
        mp.undo()
    return seen


def _shown_ticks(ax, which: str) -> list[float]:
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if which == "x" else ax.get_yticks()
    return [t for t in ticks if lo - 1e-12 <= t <= hi + 1e-12]


def test_accuracy_axes_stay_within_the_valid_range(high_figs):
    fig = high_figs["id_vs_shift.png"]
    fig.draw_without_rendering()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert max(ax.get_xlim()[1] for ax in axes) > 0.99  # the data does reach 1.0: the clipping is exercised
    for ax in axes:
        for which, (lo, hi) in (("x", ax.get_xlim()), ("y", ax.get_ylim())):
            assert hi <= 1.0 + 0.035 * (hi - lo), (which, lo, hi)  # a small margin only (was margins(0.15))
            assert lo >= -0.035 * (hi - lo)
            shown = _shown_ticks(ax, which)
            assert shown and max(shown) <= 1.0 and min(shown) >= 0.0, (which, shown)
    for name in ("metric_vs_alpha.png", "before_after.png"):
        for ax in [a for a in high_figs[name].axes if a.get_visible()]:
            assert max(_shown_ticks(ax, "y")) <= 1.0, name


def test_crowded_labels_never_overlap_and_ends_stay_labelled(high_figs):
    for name in ("id_vs_shift.png", "id_vs_shift_validation.png"):
        fig = high_figs[name]
        for ax in [a for a in fig.axes if a.get_visible()]:
            labels = [t for t in ax.texts if t.get_text()]
            boxes = _boxes(fig, labels)
            texts = [t.get_text() for t in labels]
            # an endpoint's label also names a blend on its spot: "adapted (α=1; also α=0.9)"
            assert any(t.startswith("base (α=0") for t in texts) and any(t.startswith("adapted (α=1") for t in texts)
            gap = fig.dpi / 72.0  # report trial: "0.5" and "adapted (...)" touched edge to edge; a point apart now
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    assert not _overlaps(boxes[i].expanded(1, 1).padded(gap), boxes[j], tol=0.0), \
                        (name, texts[i], texts[j])


def test_each_shift_panel_on_its_suites_own_metric(tmp_path, figures):
    lm = importlib.util.spec_from_file_location("_lm_fixtures", Path(__file__).with_name("test_report_lm.py"))
    mod = importlib.util.module_from_spec(lm)
    lm.loader.exec_module(mod)
    render_report(mod.make_lm_run(tmp_path / "lm"))  # arc: acc_norm (ID), gsm: exact_match, wiki: bits_per_byte
    fig = figures["id_vs_shift.png"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"mean over shift suites", "shift suite: gsm", "shift suite: wiki"}
    assert {ax.get_xlabel() for ax in panels.values()} == {"ID acc_norm"}
    assert panels["shift suite: gsm"].get_ylabel() == "gsm exact_match"
    assert panels["shift suite: wiki"].get_ylabel() == "wiki bits_per_byte (lower is better)"
    assert "lower-is-better ones negated" in panels["mean over shift suites"].get_ylabel()
    summary = mod.SUITES
    for title, ax in panels.items():  # every panel has its points (acc_norm on gsm/wiki would be all NaN)
        curve = next(ln for ln in ax.get_lines() if ln.get_label().startswith("_") and len(ln.get_xdata()) == 3)
        assert np.isfinite(np.asarray(curve.get_ydata(), dtype=float)).all(), title
    wiki = next(ln for ln in panels["shift suite: wiki"].get_lines() if len(ln.get_xdata()) == 3)
    assert list(wiki.get_ydata()) == pytest.approx([1.21, 1.26, 1.31])  # bits_per_byte on test, not negated
    assert summary["wiki"][3] is True
    alpha_fig = figures["metric_vs_alpha.png"]
    assert [ax.get_ylabel() for ax in alpha_fig.axes if ax.get_visible()] == [
        "acc_norm", "exact_match", "bits_per_byte (lower is better)"]


def test_reliability_bars_fill_their_bins(sweep_figs):
    """Three classes: top-label confidence is at least 1/3, so the axis starts at 1/3 and shows the seven bins of
    the ece metric above it (the first cut at 1/3); each bin's bars fill exactly its drawn edges."""
    fig = sweep_figs["reliability.png"]
    bottoms = [ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel() == "share"]
    assert len(bottoms) == 2
    edges = np.concatenate([[1 / 3], np.linspace(0.4, 1.0, 7)])
    for ax in bottoms:
        assert ax.get_xlim() == pytest.approx((1 / 3, 1.0))
        assert "from 1/K = 0.33 (K = 3 classes)" in ax.get_xlabel()
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == 2 * 7  # base and adapted = chosen, seven bins
        per_bin: dict[int, list[tuple[float, float]]] = {}
        for b in bars:
            x0, x1 = b.get_x(), b.get_x() + b.get_width()
            k = int(np.searchsorted(edges, (x0 + x1) / 2) - 1)
            assert edges[k] - 1e-9 <= x0 < x1 <= edges[k + 1] + 1e-9, (x0, x1)  # inside its own bin
            per_bin.setdefault(k, []).append((x0, x1))
        for k, spans in per_bin.items():  # the bin's bars, side by side, cover exactly its edges
            spans.sort()
            assert spans[0][0] == pytest.approx(edges[k]) and spans[-1][1] == pytest.approx(edges[k + 1])
            assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:]))
        marked = np.concatenate([ax.get_xticks(), ax.get_xticks(minor=True)])
        assert set(np.round(marked, 9)) == set(np.round(edges, 9))  # the grid marks every bin edge
    assert "from 1/K" in fig._suptitle.get_text().replace("\n", " ")


def test_two_class_reliability_starts_at_one_half_and_keeps_the_ece(tmp_path, figures):
    """Two classes: the axis and the bins start at 0.5 (five bins, none empty by construction); the legend's ECE
    is the ece metric's own number from harness.metrics (10 bins on [0, 1]), not one of the drawn bins."""
    from harness.metrics.registry import point_value
    from harness.report.predstats import binned_ece, reliability_bins, softmax

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    logits = (rng.normal(0, 1.5, (400, 2)) + 1.2 * np.eye(2)[labels]).astype(np.float32)
    bins = reliability_bins(softmax(logits), labels)
    ece = binned_ece(bins)
    assert ece == pytest.approx(float(point_value("ece", labels, {"logits": logits})), abs=1e-6)
    plots_preds.plot_reliability([("ID (test), n=400", {"model": (bins, ece)})], tmp_path / "r.png", n_classes=[2])
    fig = figures["r.png"]
    top, bottom = [ax for ax in fig.axes if ax.get_visible()]
    assert top.get_xlim() == pytest.approx((0.5, 1.0)) and bottom.get_xlim() == pytest.approx((0.5, 1.0))
    bars = [p for p in bottom.patches if isinstance(p, Rectangle)]
    assert sorted(round(b.get_x(), 9) for b in bars) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert all(b.get_height() > 0 for b in bars)  # no empty half of the axis
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend == ["perfect calibration", f"model: ECE {fx.fmt_value(ece)}"]
    assert "from 1/K" in fig._suptitle.get_text().replace("\n", " ")
    assert "from 1/K = 0.5 (K = 2 classes)" in bottom.get_xlabel()


def test_base_chosen_keeps_the_base_marker_and_label_visible(tmp_path, figures):
    render_report(fx.make_run(tmp_path / "run", choose="base", alphas=[0.0, 0.5, 1.0]))
    fig = figures["id_vs_shift.png"]
    assert "chosen (α=0 = base)" in [t.get_text() for t in fig.legends[0].get_texts()]
    for ax in [a for a in fig.axes if a.get_visible()]:
        star = next(c for c in ax.collections if c.get_label().startswith("chosen"))
        square = next(c for c in ax.collections if c.get_gid() == "base-marker")
        assert np.allclose(square.get_offsets(), star.get_offsets())
        assert square.get_zorder() > star.get_zorder() and star.get_sizes()[0] > 4 * square.get_sizes()[0]
        label = next(t for t in ax.texts if t.get_text() == "base (α=0)")
        assert label.get_visible() and label.get_zorder() > square.get_zorder()
        px = ax.transData.transform(label.xy)
        box = _boxes(fig, [label])[0]
        assert np.hypot(max(box.x0 - px[0], 0, px[0] - box.x1), max(box.y0 - px[1], 0, px[1] - box.y1)) < 40


def test_pareto_front_per_direction():
    x, y = [0.1, 0.5, 0.4, np.nan], [0.9, 0.5, 0.4, 1.0]
    assert list(pareto_front(x, y)) == [True, True, False, False]
    assert list(pareto_front(x, y, higher_is_better=False)) == [True, False, True, False]
    # x higher is better, y lower is better (ID accuracy against shift perplexity)
    assert list(pareto_front(x, y, higher_is_better=(True, False))) == [False, True, True, False]


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


def test_one_shift_suite_gets_no_mean_panel(high_figs):
    for name in ("id_vs_shift.png", "id_vs_shift_validation.png"):
        titles = [ax.get_title() for ax in high_figs[name].axes if ax.get_visible()]
        assert titles == ["shift suite: shift-suite"], (name, titles)  # the mean would repeat this panel
        fig = high_figs[name]
        r = fig.canvas.get_renderer()
        page = fig.bbox
        for part in (fig.legends[0], fig._suptitle):  # one panel: title and legend still fit the figure
            box = part.get_window_extent(r)
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (name, box, page)


def test_metric_vs_alpha_markers_at_the_ends_are_whole(tmp_path, figures):
    a = np.asarray([0.0, 0.5, 1.0])
    line = Line("test split", a, a * 0 + 0.8, a * 0 + 0.7, a * 0 + 0.9, "#1f77b4")
    plot_metric_vs_alpha([("s (id)", [line])], tmp_path / "m.png", metric="accuracy", alphas=a,
                         feasible=[True, False, True], chosen_alpha=1.0)
    fig = figures["m.png"]
    fig.draw_without_rendering()
    ax = fig.axes[0]
    box = ax.get_window_extent()
    tri = next(c for c in ax.collections if c.get_gid() == "feasible-marker")
    half = np.sqrt(tri.get_sizes()[0]) * fig.dpi / 72 / 2  # marker size s is in points squared
    for x, y in tri.get_offset_transform().transform(tri.get_offsets()):
        assert box.x0 <= x - half and x + half <= box.x1, (x, half, box)  # alpha 0 and 1 both whole
        assert box.y0 <= y - half and y + half <= box.y1, (y, half, box)  # above the x axis, not across it
    chosen = next(ln for ln in ax.get_lines() if ln.get_label().startswith("chosen"))
    cx = ax.transData.transform((chosen.get_xdata()[0], 0.8))[0]
    assert box.x0 + chosen.get_linewidth() < cx < box.x1 - chosen.get_linewidth()  # not on the frame
    for c in ax.patches:  # the feasible strips at 0 and 1 lie inside the x range too
        lo, hi = c.get_x(), c.get_x() + c.get_width()
        assert ax.get_xlim()[0] <= lo and hi <= ax.get_xlim()[1]


def test_reliability_draws_one_curve_for_adapted_chosen(sweep_figs):
    fig = sweep_figs["reliability.png"]
    for ax in [a for a in fig.axes if a.get_visible() and a.get_ylabel() == "accuracy in bin"]:
        curves = [ln.get_label() for ln in ax.get_lines() if ln.get_label() != "perfect calibration"]
        assert [c.split(":")[0] for c in curves] == ["base", "adapted = chosen (α=1)"]  # none hidden under another
        legend = [t.get_text().split(":")[0] for t in ax.get_legend().get_texts()]
        assert legend == ["perfect calibration", "base", "adapted = chosen (α=1)"]


def _drawn_markers(ax) -> list[tuple[float, float, float]]:
    """(x, y, radius) in display pixels of every marker drawn on an ID-vs-shift panel: blend points, ensemble ×,
    base/adapted, the chosen star and the Pareto rings."""
    pt = ax.figure.dpi / 72.0
    out = []
    for ln in ax.get_lines():
        if ln.get_marker() not in (None, "None", "", " ", "|", "_") and ln.get_visible():  # not the bars' caps
            for x, y in ax.transData.transform(ln.get_xydata()):
                out.append((x, y, ln.get_markersize() * pt / 2))
    for c in ax.collections:
        if type(c).__name__ == "PathCollection" and c.get_visible():
            sizes = c.get_sizes()
            for k, (x, y) in enumerate(c.get_offset_transform().transform(c.get_offsets())):
                out.append((x, y, np.sqrt(sizes[k % len(sizes)]) * pt / 2))
    return [m for m in out if np.isfinite(m[0]) and np.isfinite(m[1])]


def _box_distance(box, x: float, y: float) -> float:
    return float(np.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1)))


def _check_alpha_labels(fig) -> int:
    import matplotlib

    with matplotlib.rc_context(plots._RC):  # the layout the labels were placed in
        fig.draw_without_rendering()
    r = fig.canvas.get_renderer()
    n = 0
    for ax in [a for a in fig.axes if a.get_visible()]:
        markers = _drawn_markers(ax)
        chord = next((ln for ln in ax.get_lines() if ln.get_label().startswith("chord")), None)
        for t in [t for t in ax.texts if t.get_text() and t.get_text()[0].isdigit()]:
            box = Text.get_window_extent(t, r)  # the text's box, not its leader line
            own = ax.transData.transform(t.xy)
            for x, y, rad in markers:  # no label over a marker (its own included)
                assert _box_distance(box, x, y) >= rad - 1.0, (t.get_text(), x, y, rad, box)
            # the marker closest to the label is its own point
            dist = sorted((_box_distance(box, x, y), np.hypot(x - own[0], y - own[1])) for x, y, _ in markers)
            others = [d for d, off in dist if off > 0.5]
            mine = min(d for d, off in dist if off <= 0.5)
            assert not others or mine < min(others), (t.get_text(), mine, min(others))
            if chord is not None:  # not on the chord either
                (x0, y0), (x1, y1) = ax.transData.transform(chord.get_xydata())
                for s in np.linspace(0, 1, 200):
                    px, py = x0 + s * (x1 - x0), y0 + s * (y1 - y0)
                    assert not (box.x0 + 1 < px < box.x1 - 1 and box.y0 + 1 < py < box.y1 - 1), t.get_text()
            n += 1
    return n


def test_alpha_labels_sit_nearest_their_own_point_and_over_no_marker(sweep_figs, high_figs):
    drawn = 0
    for figs in (sweep_figs, high_figs):
        for name in ("id_vs_shift.png", "id_vs_shift_validation.png"):
            drawn += _check_alpha_labels(figs[name])
    assert drawn >= 20  # most alphas keep their label


def test_id_vs_shift_title_says_alpha_labels_only_where_they_fit(high_figs):
    """Crowded alpha labels are left out (harness.report.labels): the title must not claim every point is
    numbered by alpha, and must say where every alpha is listed."""
    left_out = 0
    for name in ("id_vs_shift.png", "id_vs_shift_validation.png"):
        fig = high_figs[name]
        for ax in [a for a in fig.axes if a.get_visible()]:
            blend = next(c for c in ax.containers if c.get_label().startswith("weight-space blend"))
            n_points = len(blend.lines[0].get_xdata())
            alpha_texts = [t for t in ax.texts if t.get_text() and t.get_text()[0].isdigit()]
            left_out += n_points - 2 - len(alpha_texts)  # base and adapted carry their own labels
        title = " ".join(fig._suptitle.get_text().split())
        assert "numbers next to points are alpha" not in title
        assert "where it fits" in title and "the tables list every alpha" in title, title
    assert left_out > 0  # the crowded run does leave some labels out: the wording is exercised


def test_curve_caption_says_the_mean_panel_bars_are_not_an_interval_of_the_mean():
    from harness.report.curve import MEAN_PANEL
    from harness.report.sections import _curve_caption

    ax = SimpleNamespace(metric="accuracy", label="accuracy", higher_is_better=True)
    axes = {MEAN_PANEL: (ax, ax), "s1": (ax, ax), "s2": (ax, ax)}
    assert "not an interval of the mean" in _curve_caption(axes, "the test splits")
    assert "not an interval" not in _curve_caption({MEAN_PANEL: (ax, ax), "s1": (ax, ax)}, "the test splits")


def test_a_placed_label_keeps_a_margin_the_next_label_does_not_touch():
    """Report trial (2026-12-01): "0.5" was placed edge to edge with "adapted (α=1; also α=0.75)" and read as
    "0.5adapted". A second label whose first place starts exactly where the first label ends moves on."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness.report.labels import PointLabel, place_labels

    fig = Figure(figsize=(4, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    fig.draw_without_rendering()
    r = fig.canvas.get_renderer()
    probe = ax.text(0, 0, "adapted (α=1)", fontsize=8)
    width = probe.get_window_extent(r).width
    probe.remove()
    pt = fig.dpi / 72.0
    px, _ = ax.transData.transform((2.0, 5.0))
    # the first label goes right-above its point (5 pt right): it ends at px + 5 pt + width; the second point sits
    # so that its own first place (5 pt right of it) starts exactly there
    x2 = ax.transData.inverted().transform((px + width, 0))[0]
    anns = place_labels(ax, [PointLabel(2.0, 5.0, "adapted (α=1)", {"fontsize": 8}, True),
                             PointLabel(x2, 5.0, "0.5", {"fontsize": 8}, False)], [])
    boxes = [a.get_window_extent(r) for a in anns]
    assert len(boxes) == 2 and boxes[0].x0 == pytest.approx(px + 5 * pt, abs=0.5)
    assert not _overlaps(boxes[0].padded(2 * pt), boxes[1], tol=0.0), boxes
