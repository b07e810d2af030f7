"""Tests of harness.report: renders synthetic run directories (no model) and checks content, numbers against
summary.json, embedded images, escaping of dataset text, determinism and the eval (single point) case."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from harness import rundir
from harness.records import Predictions, RuleOutcome, SplitRef, SplitRole, SuiteRole, Verdict
from harness.report import render_report
from harness.report.plots import _feasible_spans
from harness.report.predstats import Pooled, binned_ece, flip_counts, largest_flips, reliability_bins, softmax
from harness.report.tables import ensemble_points, fmt_delta, fmt_interval, fmt_value
from harness.summary import (BootstrapInfo, MetricEntry, PointEntry, Selection, SplitEntry, SuiteInfo,
                             Summary)

CLASSES = ["negative", "neutral", "positive"]
# suite -> (role, {split: (split role, n)}, base signal, adapted signal)
SUITES = {
    "sst_like": ("id", {"validation": ("validation", 120), "test": ("test", 150)}, 1.2, 2.6),
    "tweets": ("shift", {"test": ("test", 130)}, 1.4, 0.9),
    "reviews_typos": ("shift", {"validation": ("validation", 60), "test": ("test", 110)}, 1.3, 1.1),
}
ALPHAS = [round(0.1 * i, 1) for i in range(11)]
SCRIPT = "<script>alert(1)</script>"
METRICS = ["accuracy", "macro_f1", "nll", "ece"]


def _pid(alpha: float) -> str:
    return "base" if alpha == 0.0 else "adapted" if alpha == 1.0 else f"alpha={alpha:g}"


def _metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, MetricEntry]:
    n = len(labels)
    pred = probs.argmax(1)
    acc = float((pred == labels).mean())
    f1s = []
    for c in range(probs.shape[1]):
        tp = np.sum((pred == c) & (labels == c))
        denom = np.sum(pred == c) + np.sum(labels == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    nll = float(-np.log(probs[np.arange(n), labels] + 1e-12).mean())
    ece = binned_ece(reliability_bins(probs, labels))

    def entry(v: float, hib: bool, half: float) -> MetricEntry:
        return MetricEntry(value=v, ci_low=max(v - half, 0.0), ci_high=min(v + half, 1.0) if hib else v + half, higher_is_better=hib)

    se = 1.96 * np.sqrt(acc * (1 - acc) / n)
    return {"accuracy": entry(acc, True, se), "macro_f1": entry(float(np.mean(f1s)), True, se * 1.1),
            "nll": entry(nll, False, 0.05), "ece": entry(ece, False, 0.02)}


def _logits(rng: np.random.Generator, labels: np.ndarray, signal: float) -> np.ndarray:
    onehot = np.eye(len(CLASSES))[labels]
    return (signal * onehot + rng.normal(0, 1.0, onehot.shape)).astype(np.float32)


def make_run(path: Path, *, kind: str = "sweep", verdict: bool = True, predictions: bool = True,
             suites_spec: dict | None = None, alphas: list[float] | None = None, choose: str | None = None,
             nan_rows: int = 0) -> Path:
    """Write a synthetic run directory: summary, predictions, manifest and (optionally) a verdict.

    ``suites_spec`` replaces ``SUITES`` (same shape; the first suite is the ID suite with a validation split),
    ``alphas`` replaces ``ALPHAS`` and ``choose`` forces the chosen point id. ``nan_rows`` stores that many
    rows of NaN / inf logits for the adapted point (as an fp16 overflow would), metrics unchanged.
    """
    rng = np.random.default_rng(0)
    spec = SUITES if suites_spec is None else suites_spec
    grid = ALPHAS if alphas is None else alphas
    alphas = grid if kind == "sweep" else [1.0]
    results: dict = {}
    ensemble: dict = {}
    preds = []
    suites = {}
    for suite, (role, splits, s_base, s_adapted) in spec.items():
        suites[suite] = SuiteInfo(name=suite, version="1", spec_hash=f"hash-{suite}", role=role,
                                  shift_type=None if role == "id" else "natural", metrics=METRICS,
                                  splits={sp: {"role": r, "fingerprint": f"{suite}{sp}" * 4, "n": n}
                                          for sp, (r, n) in splits.items()})
        for split, (srole, n) in splits.items():
            labels = rng.choice(3, size=n, p=[0.25, 0.15, 0.6])
            lb, la = _logits(rng, labels, s_base), _logits(rng, labels, s_adapted)
            ref = SplitRef(suite, split, SplitRole(srole), SuiteRole(role), fingerprint=f"{suite}{split}")
            ids = np.asarray([f"{suite}-{split}-{i}" for i in range(n)])
            for a in alphas:
                bump = a * (1 - a) * 0.8 * np.eye(3)[labels]  # blends sit above the chord
                logits = ((1 - a) * lb + a * la + bump).astype(np.float32)
                pid = _pid(a) if kind == "sweep" else "adapted"
                results.setdefault(pid, {}).setdefault(suite, {})[split] = SplitEntry(
                    n=n, n_truncated=3 if suite == "tweets" else 0, n_dropped=2 if suite == "tweets" else 0,
                    metrics=_metrics(softmax(logits), labels))
                stored = logits.copy()
                if pid == "adapted" and nan_rows:
                    stored[:nan_rows] = np.nan
                    stored[nan_rows:2 * nan_rows, 0] = np.inf
                preds.append(Predictions(ref, pid, a if kind == "sweep" else None, ids, ids, labels, stored))
                if kind == "sweep" and 0 < a < 1:
                    probs = (1 - a) * softmax(lb) + a * softmax(la)
                    ensemble.setdefault(f"ensemble@alpha={a:g}", {}).setdefault(suite, {})[split] = SplitEntry(
                        n=n, metrics=_metrics(probs, labels))
    selection = None
    if kind == "sweep":
        id_suite = next(iter(spec))
        shift_val = next((n for n, v in spec.items() if v[0] == "shift" and "validation" in v[1]), id_suite)
        val = {pid: (results[pid][id_suite]["validation"].metrics["accuracy"].value,
                     results[pid][shift_val]["validation"].metrics["accuracy"].value)
               for pid in results}
        best_id = max(v[0] for v in val.values())
        feasible = {pid: v[0] >= best_id - 0.03 for pid, v in val.items()}
        chosen = choose or max((p for p in val if feasible[p]), key=lambda p: (val[p][1], -grid[list(val).index(p)]))
        pareto = [p for p, (x, y) in val.items()
                  if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in val.values())]
        selection = Selection(policy="max-shift-within-id", params={"tolerance": 0.03}, metric="accuracy",
                              selected_on=[f"{id_suite}/validation", f"{shift_val}/validation"],
                              chosen_alpha=grid[list(val).index(chosen)], chosen_point=chosen,
                              tie_break="towards smaller alpha (closer to base)",
                              objective={p: v[1] for p, v in val.items()}, feasible=feasible, pareto=pareto,
                              n_evaluations=len(grid), search="grid")
        points = [PointEntry(id=_pid(a), role="base" if a == 0 else "adapted" if a == 1 else "blend", alpha=a,
                             is_chosen=_pid(a) == chosen) for a in alphas]
    else:
        points = [PointEntry(id="adapted", role="adapted", alpha=None)]
    summary = Summary(harness_version="0.1.0", command=kind, profile="quick", notes=["quick profile: tiny data"],
                      points=points, results=results, ensemble=ensemble, selection=selection,
                      bootstrap=BootstrapInfo(n_resamples=200, seed=7), suites=suites)
    path.mkdir(parents=True, exist_ok=True)
    rundir.write_summary(path, summary)
    if predictions:
        rundir.write_predictions(path, preds)
    rundir.write_manifest(path, {
        "harness_version": "0.1.0", "versions": {"python": "3.11", "numpy": np.__version__},
        "argv": ["harness", "sweep", "--base", "models/base dir", "--adapted", "models/adapted"],
        "models": {"base": {"path": "models/base dir", "fingerprint": "ab" * 32},
                   "adapted": {"path": "models/adapted", "fingerprint": "cd" * 32}},
        "suites": {s: {"fingerprint": f"fp-{s}", "classes": CLASSES} for s in spec},
        "seeds": {"bootstrap": 7}, "device": "cpu", "dtype": "fp32",
        "wall_time_s": {"predict": 12.5, "metrics": 1.25, "report": 0.5}})
    if verdict and kind == "sweep":
        rundir.write_verdict(path, Verdict(policy="release", candidate=selection.chosen_point, reference="base",
                                           passed=False, confidence=0.95, n_resamples=200, seed=7, outcomes=(
            RuleOutcome("min_id_gain", "relative", "accuracy", "sst_like", "test", "bound", True, 0.05, 0.012,
                        0.0, 0.012, 150),
            RuleOutcome("max_shift_drop", "relative", "accuracy", "tweets", "test", "bound", False, -0.04,
                        -0.071, -0.02, -0.051, 130, reason="lower bound below threshold"))))
    return path


def lookup(suite: str, split: str, ids: list[str]) -> list[str]:
    return [f"{SCRIPT} review & text of {i}" for i in ids]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory) -> tuple[Path, object]:
    run = make_run(tmp_path_factory.mktemp("sweep"))
    return run, render_report(run, text_lookup=lookup)


def _md_tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Markdown pipe tables keyed by the nearest heading above them."""
    out: dict[str, list[dict[str, str]]] = {}
    heading, lines = "", md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("# ").strip()
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            cols = [c.strip() for c in lines[i].strip("|").split(" | ")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(cols, (c.strip() for c in lines[i].strip().strip("|").split(" | ")))))
                i += 1
            out.setdefault(heading, []).extend(rows)
            continue
        i += 1
    return out


def test_every_suite_metric_and_section_present(sweep_run):
    run, paths = sweep_run
    md, page = paths.markdown.read_text(), paths.html.read_text()
    for text in (md, page):
        for suite in SUITES:
            assert suite in text
        for metric in METRICS:
            assert metric in text
        for needle in ("Gate verdict", "ID vs shift along alpha", "Before and after", "Calibration",
                       "Per-class view", "Negative flips", "Run manifest", "Examples evaluated",
                       "max-shift-within-id", "towards smaller alpha", "quick profile: tiny data",
                       "biased upward on small n", "sst_like/validation, reviews_typos/validation"):
            assert needle in text, needle
    assert md.index("quick profile: tiny data") < md.index("## Overview")  # notes at the top
    for name in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (run / name).is_file()
    assert {p.name for p in paths.figures} == {"id_vs_shift.png", "id_vs_shift_validation.png",
                                               "before_after.png", "metric_vs_alpha.png", "reliability.png",
                                               "confusion.png"}


def test_units_and_majority_line_of_a_classification_run(sweep_run):
    """A run with nll says its unit; accuracy bars keep the majority-class line, named as such."""
    _, paths = sweep_run
    md = paths.markdown.read_text()
    overview = md[md.index("## Overview"):md.index("\n## ", md.index("## Overview") + 1)]
    assert "(nll in nats per example)" in overview
    before = md[md.index("## Before and after"):md.index("\n## ", md.index("## Before and after") + 1)]
    assert "The dashed segment is the majority-class rate (accuracy of always predicting" in before
    assert "No reference line" not in before


def test_numbers_match_summary(sweep_run):
    run, paths = sweep_run
    s = rundir.read_summary(run)
    md, page = paths.markdown.read_text(), paths.html.read_text()
    tables = _md_tables(md)
    chosen = s.chosen.id
    for suite, (role, splits, *_ ) in SUITES.items():
        for split, (srole, _n) in splits.items():
            rows = {r["metric"]: r for r in tables[f"{suite} / {split} ({role} suite, {srole} split)"]}
            assert set(rows) == set(METRICS)
            for metric in METRICS:
                row = rows[metric]
                ms = {k: s.results[pid][suite][split].metrics[metric]
                      for k, pid in (("base", "base"), ("adapted", "adapted"), ("chosen", chosen))}
                for key, m in ms.items():
                    col = next(c for c in row if c.startswith(key))
                    v, lo, hi = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", row[col]).groups())
                    assert (v, lo, hi) == (round(m.value, 3), round(m.ci_low, 3), round(m.ci_high, 3))
                    assert f">{row[col]}</td>" in page
                assert row["Δ adapted"] == fmt_delta(ms["adapted"].value - ms["base"].value)
                assert row["Δ chosen"] == fmt_delta(ms["chosen"].value - ms["base"].value)
    counts = {(r["suite"], r["split"]): r for r in tables["Examples evaluated"]}
    assert counts[("tweets", "test")]["n_truncated"] == "3" and counts[("tweets", "test")]["n_dropped"] == "2"
    assert counts[("sst_like", "test")]["n"] == "150"


def test_chord_gain_and_verdict_values(sweep_run):
    run, paths = sweep_run
    s = rundir.read_summary(run)
    tables = _md_tables(paths.markdown.read_text())
    acc = {pid: {su: s.results[pid][su]["test"].metrics["accuracy"].value for su in SUITES} for pid in s.results}
    y = {pid: (v["tweets"] + v["reviews_typos"]) / 2 for pid, v in acc.items()}
    for row in tables["ID vs shift along alpha"]:
        a, pid = float(row["α"]), row["point"]
        assert row["ID accuracy"].startswith(fmt_value(acc[pid]["sst_like"]))
        assert row["shift over chord"] == fmt_delta(y[pid] - ((1 - a) * y["base"] + a * y["adapted"]))
        ch = (1 - a) * acc["base"]["tweets"] + a * acc["adapted"]["tweets"]
        assert row["over chord: tweets"] == fmt_delta(acc[pid]["tweets"] - ch)
        assert row["Pareto"] == ("yes" if pid in s.selection.pareto else "")
    v = rundir.read_verdict(run)
    rules = {r["rule"]: r for r in tables["Gate verdict"]}
    for o in v["outcomes"]:
        r = rules[o["rule"]]
        assert (r["value"], r["bound"], r["threshold"], r["margin"], r["n"], r["result"]) == (
            fmt_value(o["value"]), fmt_value(o["bound"]), fmt_value(o["threshold"]), fmt_delta(o["margin"]),
            str(o["n"]), "PASS" if o["passed"] else "FAIL")
    sel = {r["field"]: r["value"] for r in tables["Selection"]}
    assert sel["chosen alpha"] == f"{s.selection.chosen_alpha:g}" and sel["evaluations"] == "11"


def _png_ok(data: bytes) -> bool:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    length = int.from_bytes(data[8:12], "big")
    return zlib.crc32(data[12:16 + length]) == int.from_bytes(data[16 + length:20 + length], "big")


def test_self_contained_html_embeds_every_figure(sweep_run):
    run, paths = sweep_run
    page = paths.html.read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(paths.figures) == 6
    assert all(_png_ok(base64.b64decode(u)) for u in uris)
    assert all(_png_ok(p.read_bytes()) for p in (run / "figures").glob("*.png"))
    assert re.findall(r'src="(?!data:)', page) == [] and re.findall(r'href="(?!#)', page) == []
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_dataset_text_is_escaped_and_html_only(sweep_run):
    _, paths = sweep_run
    page, md = paths.html.read_text(), paths.markdown.read_text()
    assert "Largest negative flips" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; review &amp; text of" in page
    assert SCRIPT not in page and "alert(1)" not in md and "text of" not in md


def test_include_examples_false_leaks_no_text_and_rendering_is_deterministic(tmp_path):
    run = make_run(tmp_path / "run")
    first = render_report(run, include_examples=False, text_lookup=lookup)
    for f in [first.markdown, first.html, *first.figures]:
        data = f.read_bytes()
        assert b"alert" not in data and b"text of" not in data
    assert "Largest negative flips" not in first.html.read_text()
    before = {p.name: p.read_bytes() for p in first.figures}
    md, page = first.markdown.read_bytes(), first.html.read_bytes()
    second = render_report(run, include_examples=False, text_lookup=lookup)
    assert {p.name: p.read_bytes() for p in second.figures} == before
    assert second.markdown.read_bytes() == md and second.html.read_bytes() == page


def test_eval_single_point_run_renders(tmp_path):
    run = make_run(tmp_path / "eval", kind="eval")
    (run / "figures").mkdir()
    (run / "figures" / "id_vs_shift.png").write_bytes(b"stale")  # from an earlier render
    paths = render_report(run, text_lookup=lookup)
    names = {p.name for p in paths.figures}
    assert names == {"before_after.png", "reliability.png", "confusion.png"}
    assert not (run / "figures" / "id_vs_shift.png").exists()
    md = paths.markdown.read_text()
    assert "Single-model evaluation: one model's scores per suite and split" in md
    for wrong in ("Before and after", "selection metric", "Δ", "fraction of adapted weights", "## Selection",
                  "(adapted)", "chosen"):
        assert wrong not in md, wrong  # an eval report has no comparison, blend or selection
    assert "## Scores per suite" in md and "## Bootstrap" in md
    s = rundir.read_summary(run)
    m = s.results["adapted"]["tweets"]["test"].metrics["accuracy"]
    assert fmt_interval(m.value, m.ci_low, m.ci_high) in md
    assert "Largest negative flips" not in paths.html.read_text()  # no base to flip against


def test_run_without_predictions_or_verdict(tmp_path):
    run = make_run(tmp_path / "bare", predictions=False, verdict=False)
    paths = render_report(run)
    md = paths.markdown.read_text()
    assert "Gate verdict" not in md and "predictions.parquet is absent" in md
    assert {p.name for p in paths.figures} == {"id_vs_shift.png", "id_vs_shift_validation.png",
                                               "before_after.png", "metric_vs_alpha.png"}


def test_no_pyplot_no_torch_and_rcparams_restored(tmp_path):
    run = make_run(tmp_path / "run")
    # rcParams.copy(), not dict(rcParams): reading rcParams["backend"] would itself import pyplot.
    code = ("import sys, matplotlib; from harness.report import render_report; rc = matplotlib.rcParams.copy(); "
            "render_report(sys.argv[1]); assert matplotlib.rcParams.copy() == rc, 'rcParams changed'; "
            "bad = [m for m in ('matplotlib.pyplot', 'torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_helpers():
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.12, 0.88]])
    labels = np.array([0, 1, 1, 1])
    bins = reliability_bins(probs, labels)
    assert bins["count"].sum() == 4 and bins.loc[5, "count"] == 1 and bins.loc[5, "accuracy"] == 0.0
    assert binned_ece(bins) == pytest.approx((0.55 + 0.3 + 0.12 + 0.05) / 4)
    spans = _feasible_spans([0.0, 0.1, 0.2, 0.3], [False, True, True, False])  # a strip per feasible alpha
    assert np.allclose(spans, [(0.085, 0.115), (0.185, 0.215)])
    assert fmt_interval(0.8734, 0.861, 0.8851) == "0.873 [0.861, 0.885]" and fmt_delta(-0.00001) == "+0.000"
    assert fmt_value(None) == "n/a" and fmt_delta(0.021) == "+0.021"

    def pooled(p: np.ndarray) -> Pooled:
        ids = np.asarray(["a", "b", "c", "d"], dtype=object)
        return Pooled(pairs=(("s", "test"),), part=np.zeros(4, int), keys=ids, example_ids=ids, labels=labels,
                      probs=p)

    other = np.array([[0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.3, 0.7]])
    assert flip_counts(pooled(probs), pooled(other)) == {"n": 4, "negative": 2, "positive": 1,
                                                         "negative_rate": 0.5}
    top = largest_flips(pooled(probs), pooled(other), k=1)
    assert list(top["example_id"]) == ["a"] and top["drop"].iloc[0] == pytest.approx(0.75)


def test_ensemble_alpha_from_key_or_point():
    s = Summary(harness_version="0", command="sweep", points=[PointEntry(id="p", role="blend", alpha=0.25)],
                results={}, bootstrap=BootstrapInfo(n_resamples=1, seed=0), suites={},
                ensemble={"ensemble@alpha=0.5": {}, "p": {}, "weird": {}})
    assert ensemble_points(s) == [("p", 0.25), ("ensemble@alpha=0.5", 0.5)]


def test_verdict_line_names_absolute_thresholds(tmp_path):
    run = make_run(tmp_path / "run", predictions=False)
    v = rundir.read_verdict(run)
    v["reference"] = "absolute"
    (run / "verdict.json").write_text(__import__("json").dumps(v))
    md = render_report(run).markdown.read_text()
    assert ('Gate FAILED: policy "release"; candidate point alpha=0.4 judged against absolute thresholds'
            in md.replace("\\", ""))


def _long_gate_run(path: Path) -> Path:
    """A run whose gate has 12 columns of long rule names, suites and reasons (as a real failing gate)."""
    import json

    run = make_run(path, predictions=False)
    v = rundir.read_verdict(run)
    row = v["outcomes"][1]
    v["outcomes"] = [dict(row, rule=f"shift_class_recall_floor_{i}", kind="class_recall_floor",
                          suite="mean(reviews_typos, tweets)/test",
                          reason="missing suite: candidate point 'adapted' has no results for suite 'vader-movies' "
                                 "(has: ['tickets-chat', 'tickets-id'])") for i in range(4)]
    (run / "verdict.json").write_text(json.dumps(v))
    return run


def test_gate_table_is_never_split(tmp_path):
    page = render_report(_long_gate_run(tmp_path / "run")).html.read_text()
    gate = page[page.index('<h2>Gate verdict</h2>'):]
    gate = gate[:gate.index("</section>")]
    assert gate.count("<table>") == 1 and "Table continued" not in gate


def test_gate_table_legend_says_a_delta_value_is_a_gain_in_the_good_direction(tmp_path):
    """A bits_per_byte improvement is -0.007 in the headline (a change) and 0.007 in the gate table (a gain): the
    gate table's legend says which way its values point (trial: a reader took the positive value as a drop)."""
    page = render_report(_long_gate_run(tmp_path / "run")).html.read_text()
    gate = page[page.index('<h2>Gate verdict</h2>'):]
    gate = gate[:gate.index("</section>")]
    assert "reference minus candidate: a positive value is an improvement" in gate
