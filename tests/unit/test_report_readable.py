"""Figures a fresh reader does not misread (issue 19, fresh-user trial 4): the confusion figure names its splits,
the ID-vs-shift rings and caption say what they are on this run, coincident blends share one alpha label, a
feasible alpha under the chosen line stays visible, the bands are named, and the LM before/after reference says
what it is and runs through no label."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from harness.report import plots, plots_preds, render_report
from harness.report.axes import metric_axis


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_readable_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


figs = _load("test_report_figures")  # _capture, _overlaps and the sentence-run fixture (figs.fx.make_run)
lm = _load("test_report_lm")


@pytest.fixture
def figures(monkeypatch):
    return figs._capture(monkeypatch)


def _render(path: Path, make) -> tuple[dict, str]:
    """Render the run ``make`` writes at ``path``: (figures by file name, report.md text)."""
    mp = pytest.MonkeyPatch()
    seen = figs._capture(mp)
    try:
        md = render_report(make(path)).markdown.read_text()
    finally:
        mp.undo()
    return seen, md


@pytest.fixture(scope="module")
def sentence_run(tmp_path_factory):
    """A sentence-classifier sweep with an output-space ensemble and predictions."""
    return _render(tmp_path_factory.mktemp("sentence") / "run", figs.fx.make_run)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """An LM sweep (no ensemble) whose multiple-choice suite has a most frequent gold position."""
    return _render(tmp_path_factory.mktemp("lm") / "run",
                   lambda p: lm.make_lm_run(p, mc_gold=np.array([0, 1, 1, 2, 1, 0])))


def _suptitle(fig) -> str:
    return " ".join(fig._suptitle.get_text().split())


def test_confusion_title_and_headings_name_the_splits(sentence_run):
    fig = sentence_run[0]["confusion.png"]
    assert "on the test splits" in _suptitle(fig)
    headings = [" ".join(sub._suptitle.get_text().split()) for sub in fig.subfigs]
    assert headings and all(h.endswith("(test split: test)") for h in headings), headings


def test_confusion_heading_names_pooled_splits(tmp_path, figures):
    cm = np.array([[3, 1], [0, 4]])
    plots_preds.plot_confusion([("s", [("base", cm)])], {"s": ["neg", "pos"]}, tmp_path / "c.png",
                               splits_of={"s": ["test", "test_hard"]})
    fig = figures["c.png"]
    assert " ".join(fig.subfigs[0]._suptitle.get_text().split()) == "suite: s (test splits pooled: test, test_hard)"


def test_curve_caption_mentions_the_ensemble_only_when_drawn(sentence_run, lm_run):
    assert any(t.get_text() == "output-space ensemble" for t in sentence_run[0]["id_vs_shift.png"].legends[0].texts)
    assert "the ensemble's × are not ringed" in sentence_run[1]
    assert not any(t.get_text() == "output-space ensemble" for t in lm_run[0]["id_vs_shift.png"].legends[0].texts)
    assert "not ringed" not in lm._section(lm_run[1], "ID vs shift along alpha")
    assert "ensemble's ×" not in lm_run[1]


def test_ring_legend_names_the_split_of_its_figure(sentence_run):
    for name, split in (("id_vs_shift.png", "test"), ("id_vs_shift_validation.png", "validation")):
        legend = [t.get_text() for t in sentence_run[0][name].legends[0].get_texts()]
        rings = [t for t in legend if t.startswith("Pareto front")]
        assert rings == [f"Pareto front of the blends on {split} (this panel)"], (name, legend)


def _curve(points: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    rows = [{"panel": "s", "kind": "weights", "point": pid, "alpha": a, "x": x, "x_lo": x - 0.02, "x_hi": x + 0.02,
             "y": y, "y_lo": y - 0.02, "y_hi": y + 0.02} for pid, (a, x, y) in points.items()]
    return pd.DataFrame(rows)


def test_blends_on_the_same_point_share_one_alpha_label(tmp_path, figures):
    """Alpha 0.5 and 0.8 land on the same point (the LM validation figure): one label "0.5, 0.8", not two
    labels read as two points."""
    curve = _curve({"base": (0.0, 0.38, 0.28), "a02": (0.2, 0.44, 0.31), "a05": (0.5, 0.5, 0.25),
                    "a08": (0.8, 0.5, 0.25), "adapted": (1.0, 0.52, 0.27)})
    acc = metric_axis("", "accuracy", True)
    plots.plot_id_vs_shift(curve, tmp_path / "i.png", axes={"s": (acc, acc)}, chosen="adapted", base="base",
                           adapted="adapted", splits_note="validation splits")
    texts = [t.get_text() for ax in figures["i.png"].axes for t in ax.texts if t.get_text()]
    assert "0.5, 0.8" in texts, texts
    assert "0.5" not in texts and "0.8" not in texts
    assert "0.2" in texts  # a point of its own keeps its own label


def test_a_blend_on_an_endpoint_is_named_in_the_endpoint_label(tmp_path, figures):
    """Alpha 0.8 scores as adapted does (the LM test figure): the adapted label names it, as no alpha label
    fits on the adapted marker."""
    curve = _curve({"base": (0.0, 0.53, 0.25), "a05": (0.5, 0.62, 0.233), "a08": (0.8, 0.683, 0.233),
                    "adapted": (1.0, 0.683, 0.233)})
    acc = metric_axis("", "accuracy", True)
    plots.plot_id_vs_shift(curve, tmp_path / "i.png", axes={"s": (acc, acc)}, chosen="adapted", base="base",
                           adapted="adapted", splits_note="test splits")
    texts = [t.get_text() for ax in figures["i.png"].axes for t in ax.texts if t.get_text()]
    assert "adapted (α=1; also α=0.8)" in texts and "base (α=0)" in texts, texts
    assert "0.8" not in texts and "0.5" in texts


def test_feasible_strip_at_the_edge_shows_over_the_chosen_line(tmp_path, figures):
    """Alpha 1 chosen and the only feasible alpha: its strip is drawn over the (thin) chosen line, is wider than
    the line on screen and lies inside the x range; the title names what the shaded bands are."""
    a = np.asarray([0.0, 0.5, 0.8, 1.0])
    line = plots.Line("test split", a, a * 0 + 0.5, a * 0 + 0.4, a * 0 + 0.6, "#1f77b4")
    plots.plot_metric_vs_alpha([("s (id)", [line])], tmp_path / "m.png", metric="acc", alphas=a,
                               feasible=[False, False, False, True], chosen_alpha=1.0)
    fig = figures["m.png"]
    with matplotlib.rc_context(plots._RC):
        fig.draw_without_rendering()
    ax = fig.axes[0]
    strip = next(p for p in ax.patches if isinstance(p, Rectangle) and p.get_label() == plots.FEASIBLE_STRIP)
    chosen = next(ln for ln in ax.get_lines() if ln.get_label().startswith("chosen"))
    assert strip.get_zorder() > chosen.get_zorder()
    band = next(c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection"))
    assert strip.get_zorder() > band.get_zorder()  # not tinted away under the line's band either
    lo, hi = (ax.transData.transform((x, 0))[0] for x in (strip.get_x(), strip.get_x() + strip.get_width()))
    line_px = chosen.get_linewidth() * fig.dpi / 72
    assert hi - lo > 4 * line_px, (hi - lo, line_px)  # strip visible on both sides of the line
    assert ax.get_xlim()[0] < 0.0 and strip.get_x() + strip.get_width() < ax.get_xlim()[1]
    assert plots.BANDS_NOTE in _suptitle(fig)
    box, page = fig._suptitle.get_window_extent(), fig.bbox
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1


def test_lm_before_after_reference_legend_and_labels(lm_run):
    """The dashed reference is named as the split's most frequent gold answer (legend and caption), it runs
    through no bar label, and the title fits the figure."""
    fig = lm_run[0]["before_after.png"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "always the split's most frequent gold answer" in legend
    assert "most frequent choice" not in " ".join(legend)
    assert "always giving the split's most frequent gold answer" in lm._section(lm_run[1], "Before and after")
    box, page = fig._suptitle.get_window_extent(), fig.bbox
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (box, page)


def test_dashed_reference_runs_through_no_bar_label(tmp_path, figures):
    """A reference just above the chosen bars' intervals (the LM BoolQ group): the labels move above it."""
    groups = [plots.Bars("boolq\ntest\nacc", ((0.45, 0.32, 0.58), (0.417, 0.30, 0.533), (0.417, 0.30, 0.533)),
                         0.567, "always the split's most frequent gold answer"),
              plots.Bars("arc\ntest\nacc_norm", ((0.25, 0.15, 0.37), (0.233, 0.13, 0.35), (0.233, 0.13, 0.35)),
                         0.317, "always the split's most frequent gold answer")]
    plots.plot_before_after(groups, ["base", "adapted", "chosen (α=1 = adapted)"], tmp_path / "b.png",
                            metric="value (each suite's own metric)")
    fig = figures["b.png"]
    with matplotlib.rc_context(plots._RC):
        fig.draw_without_rendering()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    segments = [seg for c in ax.collections if type(c).__name__ == "LineCollection" and c.get_linestyle()[0][1]
                for seg in c.get_segments()]
    assert len(segments) == 2
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) == 6
    for t in labels:
        box = t.get_window_extent(r)
        for (x0, y), (x1, _) in segments:
            (px0, py), (px1, _) = ax.transData.transform([(x0, y), (x1, y)])
            crosses = min(box.x1, px1) > max(box.x0, px0) and box.y0 - 1 < py < box.y1 + 1
            assert not crosses, (t.get_text(), box, py)
    box, page = fig._suptitle.get_window_extent(r), fig.bbox
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (box, page)


def test_each_figure_caption_is_written_once_and_its_alt_text_is_its_first_sentence(sentence_run, lm_run):
    """report.md printed every caption twice, once as the image's alt text (report trial); the alt text is now
    the caption's first sentence, and the section headings start with a capital."""
    import re

    for md in (sentence_run[1], lm_run[1]):
        images = re.findall(r"^!\[([^\]]*)\]\(figures/[^)]+\)\n\n(.+)$", md, re.M)
        assert len(images) >= 3
        for alt, caption in images:
            assert caption.startswith(alt) and len(alt) < len(caption) or alt == caption.rstrip("."), (alt, caption)
            assert ". " not in alt.rstrip(".") or not re.search(r"[\w)]\. [A-Z]", alt), alt
        assert all(h[:1].isupper() for h in re.findall(r"^## (.+)$", md, re.M)), re.findall(r"^## (.+)$", md, re.M)
