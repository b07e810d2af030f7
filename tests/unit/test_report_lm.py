"""The report of a language-model run (synthetic run directories, no model): per-task tables with each suite's
own metrics and intervals for base, adapted and the chosen point; the headline on each suite's selection metric;
generation examples (prompt tail, reference, outputs) in the local HTML only, escaped, and only when examples are
on; never in a committed sample report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import rundir
from harness.demo.run import refresh_sample_report
from harness.records import Predictions, SplitRef, SplitRole, SuiteRole
from harness.report import render_report
from harness.report.tables import fmt_interval
from harness.summary import BootstrapInfo, MetricEntry, PointEntry, Selection, SplitEntry, SuiteInfo, Summary

SCRIPT = "<script>alert(1)</script>"
POINTS = {"base": 0.0, "alpha=0.5": 0.5, "adapted": 1.0}
# suite -> (role, task, metrics (selection metric first), lower is better)
SUITES = {
    "arc": ("id", "multiple_choice", ["acc_norm", "acc"], False),
    "gsm": ("shift", "generation", ["exact_match", "numeric_match", "f1"], False),
    "wiki": ("shift", "perplexity", ["bits_per_byte", "word_perplexity", "byte_perplexity"], True),
}
N = 6


def _entry(value: float, lower: bool) -> MetricEntry:
    return MetricEntry(value=value, ci_low=value - 0.05, ci_high=value + 0.05, higher_is_better=not lower)


def _value(suite: str, metric: str, pid: str, split: str) -> float:
    base = {"acc_norm": 0.4, "acc": 0.35, "exact_match": 0.3, "numeric_match": 0.32, "f1": 0.5,
            "bits_per_byte": 1.2, "word_perplexity": 40.0, "byte_perplexity": 2.3}[metric]
    return base + 0.1 * POINTS[pid] + (0.01 if split == "test" else 0.0)


def _gen_outputs(pid: str) -> dict[str, np.ndarray]:
    out = np.array([f"{pid} says {i} {SCRIPT}" if i % 2 else f"same {i}" for i in range(N)])
    em = np.array([float(i % 3 == 0) for i in range(N)])
    return {"output": out, "answer": out, "exact_match": em, "numeric_match": em, "f1": em}


def make_lm_run(path: Path, *, record_tasks: bool = True, mc_gold: np.ndarray | None = None) -> Path:
    """A sweep run over a multiple-choice ID suite, a generation and a perplexity shift suite; the chosen point
    is alpha=0.5. ``record_tasks=False`` writes a manifest without ``task``/``selection_metric`` (older runs);
    ``mc_gold``: the multiple-choice suite's gold choice indices (N,) (default all 0)."""
    results: dict = {}
    preds = []
    infos = {}
    for suite, (role, task, metrics, lower) in SUITES.items():
        infos[suite] = SuiteInfo(name=suite, version="1", spec_hash=f"h-{suite}", role=role, metrics=metrics,
                                 shift_type=None if role == "id" else "natural",
                                 splits={s: {"role": s, "fingerprint": f"{suite}-{s}", "n": N}
                                         for s in ("validation", "test")})
        for split in ("validation", "test"):
            ref = SplitRef(suite, split, SplitRole(split), SuiteRole(role), fingerprint=f"{suite}-{split}")
            ids = np.array([str(i) for i in range(N)])
            for pid, alpha in POINTS.items():
                results.setdefault(pid, {}).setdefault(suite, {})[split] = SplitEntry(
                    n=N, metrics={m: _entry(_value(suite, m, pid, split), lower) for m in metrics})
                outputs = (_gen_outputs(pid) if task == "generation" else
                           {"loglik": np.zeros((N, 3)), "choice_len": np.ones((N, 3)), "choice_bytes": np.ones((N, 3))}
                           if task == "multiple_choice" else
                           {"doc_loglik": np.full(N, -10.0), "bytes": np.full(N, 20.0)})
                gold = mc_gold if task == "multiple_choice" and mc_gold is not None else np.zeros(N, np.int64)
                preds.append(Predictions(ref, pid, alpha, ids, ids, gold, outputs, task=task))
    selection = Selection(policy="max-shift-within-id", params={"tolerance": 0.01}, metric="acc_norm",
                          selected_on=[f"{s}/validation" for s in SUITES], chosen_alpha=0.5, chosen_point="alpha=0.5",
                          tie_break="smallest alpha", objective={p: 0.0 for p in POINTS},
                          feasible={p: True for p in POINTS}, pareto=list(POINTS), n_evaluations=3, search="grid")
    points = [PointEntry(id=p, role="base" if a == 0 else "adapted" if a == 1 else "blend", alpha=a,
                         is_chosen=p == "alpha=0.5") for p, a in POINTS.items()]
    summary = Summary(harness_version="0.1.0", command="sweep", points=points, results=results, selection=selection,
                      bootstrap=BootstrapInfo(n_resamples=100, seed=0), suites=infos)
    path.mkdir(parents=True, exist_ok=True)
    rundir.write_summary(path, summary)
    rundir.write_predictions(path, preds)
    suites = {s: {"classes": [], **({"task": t, "selection_metric": m[0]} if record_tasks else {})}
              for s, (_, t, m, _) in SUITES.items()}
    manifest = {"harness_version": "0.1.0", "suites": suites, "model_kind": "causal_lm"}
    if record_tasks:
        manifest["selection_metrics"] = {s: m[0] for s, (_, _, m, _) in SUITES.items()}
    rundir.write_manifest(path, manifest)
    return path


def prompts(suite: str, split: str, ids) -> list[str]:
    return [f"{'long context ' * 40}Question {i} {SCRIPT} & more?\nAnswer:" for i in ids]


def golds(suite: str, split: str, ids) -> list[str]:
    return [f"#### {i} {SCRIPT}" for i in ids]


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def lm_report(tmp_path_factory):
    run = make_lm_run(tmp_path_factory.mktemp("lm") / "run")
    return run, render_report(run, text_lookup=prompts, gold_lookup=golds)


def test_results_by_task_show_each_suites_own_metrics_with_intervals(lm_report):
    run, paths = lm_report
    md = paths.markdown.read_text()
    results = _section(md, "Results by task")
    assert "Results by suite and split" not in md
    summary = rundir.read_summary(run)
    for title, suite in (("Multiple choice", "arc"), ("Generation", "gsm"), ("Perplexity", "wiki")):
        block = results[results.index(f"### {title}"):]
        block = block[:block.find("\n### ", 1) if "\n### " in block[1:] else None]
        rows = [ln for ln in block.splitlines() if ln.startswith(f"| {suite} (")]
        metrics = SUITES[suite][2]
        assert len(rows) == 2 * len(metrics)  # validation and test, each metric of the suite and no other
        assert {ln.split(" | ")[2] for ln in rows} == set(metrics)
        header = next(ln for ln in block.splitlines() if ln.startswith("| suite |"))
        assert "| base | adapted | chosen (α=0.5) |" in header
        for pid in POINTS:
            for m in metrics:
                e = summary.results[pid][suite]["test"].metrics[m]
                assert fmt_interval(e.value, e.ci_low, e.ci_high) in block, (suite, pid, m)
        better = "lower" if SUITES[suite][3] else "higher"
        assert all(f"| {better} |" in ln for ln in rows)
    assert "n/a" not in results


def test_headline_shows_each_suite_on_its_selection_metric(lm_report):
    _, paths = lm_report
    head = _section(paths.markdown.read_text(), "Headline")
    assert "each suite's selection metric" in head
    for suite, (_, _, metrics, _) in SUITES.items():
        assert f"| {suite} | test | " in head and f"| {metrics[0]} |" in head
    assert "n/a" not in head
    assert "word_perplexity and byte_perplexity (at least 1)" in _section(paths.markdown.read_text(), "Overview")


def test_tasks_are_inferred_from_metric_names_for_runs_without_them(tmp_path):
    run = make_lm_run(tmp_path / "old", record_tasks=False)
    paths = render_report(run)  # and without lookups: no examples
    md = paths.markdown.read_text()
    assert "### Multiple choice" in md and "### Generation" in md and "### Perplexity" in md
    assert "| gsm | test | shift / test | 6 | exact_match |" in md
    assert "Generation examples" not in paths.html.read_text()


def test_generation_examples_are_html_only_and_escaped(lm_report):
    _, paths = lm_report
    page, md = paths.html.read_text(), paths.markdown.read_text()
    assert "Generation examples" in page and "Generation examples" not in md
    section = page[page.index("Generation examples</h2>"):]
    section = section[:section.index("<h2")] if "<h2" in section else section
    assert SCRIPT not in page and "<script" not in page.lower()
    assert "Question 1 &lt;script&gt;alert(1)&lt;/script&gt; &amp; more?" in section  # the prompt's end
    assert "…" in section and "long context " * 40 not in section  # only the tail of a long prompt
    assert "#### 1 &lt;script&gt;" in section  # the reference answer
    assert "alpha=0.5 says 1 &lt;script&gt;" in section and "base says 1" in section  # outputs of each point
    assert "exact_match (base / adapted / chosen)" in section.replace("<wbr>", "")
    first_table = section[:section.index("</table>")]
    assert first_table.count("<tr><td") == 5  # at most five examples per suite (the table may be split in parts)
    assert first_table.index(">1</td>") < first_table.index(">0</td>")  # where the outputs differ comes first
    for text in ("alert(1)", "says", "Question 1", "#### 1"):
        assert text not in md


def test_no_examples_without_the_switch(tmp_path):
    paths = render_report(make_lm_run(tmp_path / "run"), include_examples=False, text_lookup=prompts,
                          gold_lookup=golds)
    for f in (paths.markdown, paths.html, *paths.figures):
        data = f.read_bytes()
        assert b"alert" not in data and b"says" not in data and b"Question" not in data, f.name


def test_the_committed_sample_never_holds_generation_text(tmp_path, lm_report):
    run, paths = lm_report
    assert "Generation examples" in paths.html.read_text()  # the local run has its examples
    local = shutil.copytree(run, tmp_path / "run")
    sample = refresh_sample_report(local, tmp_path / "sample")
    files = [p for p in sample.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"report.md", "summary.json"} and not any(
        p.name in ("report.html", "predictions.parquet", "manifest.json") for p in files)
    for f in files:
        data = f.read_bytes()
        assert b"alert" not in data and b"says" not in data and b"Question" not in data, f.name
    assert "Generation examples" in (local / "report.html").read_text()  # the local copy is left as it was


def committed_report_files(repo: Path) -> list[Path]:
    """The files under ``reports/`` that are committed: ``git ls-files`` in a git checkout, else the folders the
    repository's .gitignore keeps (``reports/sample``, ``reports/sample-lm``, ``reports/baselines``). The
    git-ignored run directories ``harness demo`` writes (``reports/demo``, ``reports/lm-demo``) are not samples
    and may hold a local run's examples."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "reports"], cwd=repo, capture_output=True, check=True)
        names = [n for n in out.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if names:
        return [repo / n for n in names if (repo / n).is_file()]
    return [p for d in ("sample", "sample-lm", "baselines") for p in (repo / "reports" / d).rglob("*") if p.is_file()]


def test_committed_report_files_leave_out_the_demo_runs(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    files = committed_report_files(repo)
    assert any("sample-lm" in p.parts for p in files) and any("sample" in p.parts for p in files)
    assert not any(d in p.parts for p in files for d in ("demo", "lm-demo"))
    (tmp_path / "reports" / "demo").mkdir(parents=True)  # a copy outside git: the folders .gitignore keeps
    (tmp_path / "reports" / "demo" / "report.html").write_text("<script>")
    (tmp_path / "reports" / "sample").mkdir()
    (tmp_path / "reports" / "sample" / "report.md").write_text("ok")
    assert [p.relative_to(tmp_path).as_posix() for p in committed_report_files(tmp_path)] == ["reports/sample/report.md"]


def test_the_committed_sample_reports_hold_no_markup_or_outputs():
    files = committed_report_files(Path(__file__).resolve().parents[2])
    assert files, "no committed sample report found"
    assert not any(p.name in ("report.html", "predictions.parquet") for p in files)
    for f in files:
        if f.suffix in (".md", ".json", ".csv"):
            text = f.read_text(encoding="utf-8")
            assert "<script" not in text.lower() and "Generation examples" not in text, f


def test_overview_and_bars_use_each_suites_own_metric(tmp_path, monkeypatch):
    from harness.report import plots

    seen = {}
    real = plots.plot_before_after

    def spy(groups, columns, path, *, metric):
        seen["groups"], seen["metric"] = groups, metric
        return real(groups, columns, path, metric=metric)

    monkeypatch.setattr(plots, "plot_before_after", spy)
    run = make_lm_run(tmp_path / "run")
    md = render_report(run).markdown.read_text()
    overview = _section(md, "Overview")
    assert "| selection metric | each suite's own: arc acc_norm, gsm exact_match, wiki bits_per_byte |" in overview
    summary = rundir.read_summary(run)
    for bars in seen["groups"]:
        suite, split, metric = bars.label.split("\n")
        assert metric == SUITES[suite][2][0]
        assert bars.values[0][0] == pytest.approx(summary.results["base"][suite][split].metrics[metric].value)
    assert "own metric" in seen["metric"]
    assert "named under its bars: arc acc_norm, gsm exact_match" in _section(md, "Before and after")


def test_alpha_and_selection_tables_use_each_suites_own_metric(tmp_path):
    """With suites that select on different metrics, the 'along alpha' section's title and every column name the
    suite's own metric and hold its values, and the selection table names each suite's metric (not one)."""
    run = make_lm_run(tmp_path / "run")
    md = render_report(run).markdown.read_text()
    summary = rundir.read_summary(run)
    assert "## Each suite's selection metric along alpha" in md
    along = _section(md, "Each suite's selection metric along alpha")
    header = next(line for line in along.splitlines() if line.startswith("| α"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    base_row = next(line for line in along.splitlines() if line.startswith("| 0 |"))
    for suite, (_, _, metrics, _) in SUITES.items():
        for split in summary.results["base"][suite]:
            col = f"{suite}/{split} ({metrics[0]})"
            assert col in cols, (col, cols)
            want = summary.results["base"][suite][split].metrics[metrics[0]].value
            assert f"{want:.3f}" in base_row.split("|")[cols.index(col) + 1]
    assert "| metric | each suite's own: arc acc_norm, gsm exact_match, wiki bits_per_byte |" in \
        _section(md, "Selection")


def test_before_after_draws_the_most_frequent_choice_for_multiple_choice(tmp_path, monkeypatch):
    """A multiple-choice suite (acc_norm) gets the constant-answer reference: the accuracy of always answering the
    most frequent gold position of the split (positions 0 1 1 2 1 0: position 1, 3 of 6); suites whose metric has
    no such reference (exact_match, bits_per_byte) get none, and the caption says which is which."""
    from harness.report import plots

    seen = {}
    real = plots.plot_before_after

    def spy(groups, columns, path, *, metric):
        seen["groups"] = groups
        return real(groups, columns, path, metric=metric)

    monkeypatch.setattr(plots, "plot_before_after", spy)
    run = make_lm_run(tmp_path / "run", mc_gold=np.array([0, 1, 1, 2, 1, 0]))
    md = render_report(run).markdown.read_text()
    refs = {bars.label.split("\n")[0]: (bars.majority, bars.majority_label) for bars in seen["groups"]}
    assert refs["arc"] == (pytest.approx(0.5), "always the split's most frequent gold answer")
    assert refs["gsm"] == (None, None) and refs["wiki"] == (None, None)
    caption = _section(md, "Before and after")
    assert "The dashed segment is the accuracy of always giving the split's most frequent gold answer" in caption
    assert "No reference line for gsm/test (exact_match), wiki/test (bits_per_byte)" in caption
    assert "not accuracy" not in caption and "majority-class" not in caption


def test_units_mention_nll_only_when_the_run_has_it(tmp_path, monkeypatch):
    """A multiple-choice and generation run (no perplexity suite, no nll) says fractions, and nothing of nll."""
    monkeypatch.delitem(SUITES, "wiki")
    overview = _section(render_report(make_lm_run(tmp_path / "run")).markdown.read_text(), "Overview")
    assert "Metric values are fractions in [0, 1]." in overview and "nll" not in overview


def test_the_mean_shift_panel_averages_only_the_suites_that_selected_alpha(tmp_path):
    """A suite with ``in_selection: false`` (the manifest's ``outside_selection``, absent from
    ``selection_metrics``) is drawn in its own panel but not averaged into the mean panel and the table's mean
    shift score: the report no longer mixes bits_per_byte into a mean of shares (new-user trial, 2026-12-01)."""
    from harness.report.curve import MEAN_PANEL, curve_frame

    run = make_lm_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["selection_metrics"].pop("wiki")
    manifest["outside_selection"] = ["wiki"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    summary = rundir.read_summary(run)
    metric_of = {"arc": "acc_norm", "gsm": "exact_match", "wiki": "bits_per_byte"}
    only = curve_frame(summary, metric_of, "test", ["arc", "gsm"])
    both = curve_frame(summary, metric_of, "test")
    pick = lambda f, panel: f[(f["panel"] == panel) & (f["kind"] == "weights")].set_index("point")["y"]  # noqa: E731
    assert pick(only, MEAN_PANEL).to_dict() == pytest.approx(pick(only, "gsm").to_dict())
    assert pick(both, MEAN_PANEL).to_dict() != pytest.approx(pick(both, "gsm").to_dict())  # the old mix
    assert pick(only, "wiki").to_dict() == pytest.approx(pick(both, "wiki").to_dict())  # its own panel stays
    render_report(run)
    assert "wiki: in_selection: false, own panel only" in (run / "report.md").read_text()


def test_class_probability_views_say_they_do_not_apply_to_language_model_runs(lm_report):
    """The calibration and per-class views of an LM run said 'predictions.parquet is absent', though it is there
    (new-user trial, 2026-12-01); they say the view does not apply."""
    run, _ = lm_report
    md = (run / "report.md").read_text()
    for title in ("Calibration", "Per-class view"):
        text = _section(md, title)
        assert "Not applicable: this view needs class probabilities" in text and "absent" not in text


def test_no_mean_is_drawn_over_metrics_of_different_scales_when_no_shift_suite_selects(tmp_path):
    """An id-only run whose shift suites are all left out of the selection: their mean (exact_match with
    bits_per_byte negated) means nothing, so the mean panel is not drawn and the table's mean is n/a (review,
    2026-12-01); an ID suite left out is not averaged into x either, and the caption names only shift suites."""
    from harness.report.curve import MEAN_PANEL, curve_axes, curve_frame

    run = make_lm_run(tmp_path / "run")
    summary = rundir.read_summary(run)
    metric_of = {"arc": "acc_norm", "gsm": "exact_match", "wiki": "bits_per_byte"}
    frame = curve_frame(summary, metric_of, "test", ["arc"])
    mean = frame[(frame["panel"] == MEAN_PANEL) & (frame["kind"] == "weights")]
    assert mean["y"].isna().all() and mean["x"].notna().all()
    assert "not averaged" in curve_axes(summary, metric_of, "test", ["arc"])[MEAN_PANEL][1].label
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["selection_metrics"] = {"arc": "acc_norm"}
    manifest["outside_selection"] = ["gsm", "wiki"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    render_report(run)
    md = (run / "report.md").read_text()
    assert "gsm, wiki: in_selection: false" in md
    assert "| mean shift score |" not in md or "n/a" in _section(md, "ID vs shift along alpha")


def test_negative_flips_of_a_language_model_run_are_counted_by_each_suites_metric(tmp_path):
    """Report trial (2026-12-01): an LM run's HTML said "No negative flips." (the classifier view, which finds no
    class logits) while the gate counted two. The LM view counts them per suite by the suite's own metric."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = make_lm_run(tmp_path / "run")
    frame = rundir.read_predictions(run)
    mc = next(s for s, v in SUITES.items() if v[1] == "multiple_choice")
    rows = (frame["point"] == "alpha=0.5") & (frame["suite"] == mc) & (frame["split"] == "test")
    flipped = rows & frame["example_id"].isin(["0", "1", "2"])  # gold 0: the chosen point now picks choice 1
    frame["loglik"] = [[0.0, 1.0, 0.0] if f else (None if v is None else list(v))
                       for v, f in zip(frame["loglik"], flipped)]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), run / rundir.PREDICTIONS)
    render_report(run, text_lookup=prompts, gold_lookup=golds)
    md = (run / "report.md").read_text()
    text = _section(md, "Negative flips")
    assert "base got right and the chosen point (alpha=0.5) gets wrong" in text
    assert f"| {mc} | test | acc_norm | {N} | 3 | 0.500 | 0 | -3 |" in text
    gen = next(s for s, v in SUITES.items() if v[1] == "generation")
    assert f"| {gen} | test | exact_match | {N} | 0 |" in text
    assert not any(f"| {s} |" in text for s, v in SUITES.items() if v[1] == "perplexity")
    assert "No negative flips" not in (run / "report.html").read_text()


def test_the_overview_names_the_models_compared():
    """Report trial (2026-12-01): base and adapted were named only deep in the manifest table."""
    from harness.report.sections import _model_rows

    manifest = {"models": {"base": {"source": "/m/base", "fingerprint": "x"},
                           "adapted": {"source": "/m/lora", "kind": "lora", "r": 16}}}
    assert _model_rows(manifest) == [("base model", "/m/base"), ("adapted model", "/m/lora (LoRA adapter, rank 16)")]
    assert _model_rows({"models": {"model": {"path": "/m/one", "kind": "full"}}}) == [("model", "/m/one (full)")]
    assert _model_rows({}) == []


def test_the_headline_answers_in_words_what_fine_tuning_cost_and_what_the_blend_keeps(lm_report):
    """Report trial (2026-12-01): the answer had to be worked out from a ten-column table."""
    run, _ = lm_report
    text = _section((run / "report.md").read_text(), "Headline")
    assert "In short, against base on the test splits (differences of point estimates; chosen: α = 0.5): ID arc " \
           "acc_norm +0.100 (adapted), +0.050 (chosen); shift gsm exact_match +0.100 (adapted), +0.050 (chosen), " \
           "wiki bits_per_byte (lower is better) +0.100 (adapted), +0.050 (chosen)." in text
    assert f"Each rests on {N} examples" in text
