"""End-to-end sweep and blend on tiny BERT classifiers built from configs and tiny local suites (CPU, offline).

Covers: the run directory of a sweep, selection on validation splits only, the output ensemble, the results store
(rerun served from it; resume after an interruption and after SIGKILL recompute only the missing points and give
identical results), ``harness blend`` (checkpoint loadable by transformers, provenance, same logits as the sweep),
head mismatch handling (``--head adapted``) and the CLI exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.api as api
from harness.cli import main
from harness.errors import BlendError, HarnessError
from harness.pipeline import RunOptions, evaluate_model, sweep_models
from harness.rundir import predictions_for, read_manifest, read_predictions, read_summary

try:  # tests/ may or may not be a package
    from tests.conftest import make_tiny_bert
except ImportError:  # pragma: no cover - depends on the layout
    from conftest import make_tiny_bert

FAST = dict(n_resamples=20, report=False, progress=False)
N_SPLITS = 6  # tiny-id, tiny-shift, tiny-typos: validation + test each
N_POINTS = 11  # the default grid 0, 0.1, ..., 1


@pytest.fixture(scope="module")
def swept(tiny_pair, tiny_suites, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    res = api.run_sweep(*tiny_pair, tiny_suites, out=out, **FAST)
    return res, out


def _strip_volatile(summary) -> dict:
    d = summary.model_dump()
    return {k: d[k] for k in ("points", "results", "ensemble", "selection", "suites")}


# ------------------------------------------------------------------------------------------ run directory --

def test_sweep_writes_the_run_directory(swept):
    res, out = swept
    for name in ("summary.json", "per_alpha.csv", "predictions.parquet", "manifest.json"):
        assert (out / name).is_file(), name
    summary = read_summary(out)
    ids = [p.id for p in summary.points]
    assert ids[0] == "base" and ids[-1] == "adapted" and len(ids) == N_POINTS
    assert [p.alpha for p in summary.points] == [round(i / 10, 1) for i in range(11)]
    assert {p.role for p in summary.points} == {"base", "adapted", "blend"}
    assert sum(p.is_chosen for p in summary.points) == 1
    assert summary.chosen.alpha == summary.selection.chosen_alpha
    frame = pd.read_csv(out / "per_alpha.csv")
    assert set(frame["point"]) >= set(ids)
    preds = read_predictions(out)
    assert set(preds["point"]) == set(ids)
    assert len(preds) == N_POINTS * sum(s.n for suite in summary.results["base"].values() for s in suite.values())
    manifest = read_manifest(out)
    assert manifest["models"]["base"]["fingerprint"] and manifest["models"]["adapted"]["kind"] == "full"
    assert manifest["alphas"] == [round(i / 10, 1) for i in range(11)]
    assert res.to_pandas().shape[0] > 0


def test_selection_reads_validation_splits_only(swept):
    summary = read_summary(swept[1])
    sel = summary.selection
    assert sel.policy == "max-shift-within-id" and sel.params == {"tolerance": 0.01}
    assert sel.selected_on == ["tiny-id/validation", "tiny-shift/validation", "tiny-typos/validation"]
    for key in sel.selected_on:
        suite, split = key.split("/")
        assert summary.suites[suite].splits[split]["role"] == "validation"
    assert "smallest alpha" in sel.tie_break
    assert set(sel.pareto) <= {p.id for p in summary.points} and sel.pareto
    assert sel.chosen_point in sel.feasible and sel.feasible[sel.chosen_point]


def test_endpoint_points_are_the_models_themselves(swept, tiny_pair, tiny_suites, tmp_path):
    """The sweep's base and adapted points equal separate evaluations of the two checkpoints (exact, fp32)."""
    frame = read_predictions(swept[1])
    for point, model in (("base", tiny_pair[0]), ("adapted", tiny_pair[1])):
        ev = evaluate_model(model, tiny_suites, out=tmp_path / point, options=RunOptions(**FAST))
        other = read_predictions(ev.run_dir)
        for suite, split in (("tiny-id", "validation"), ("tiny-shift", "test")):
            want = predictions_for(other, "model", suite, split)
            got = predictions_for(frame, point, suite, split)
            assert list(got[0]) == list(want[0])
            assert np.array_equal(got[3]["logits"], want[3]["logits"])


def test_ensemble_results_are_reported(swept):
    summary = read_summary(swept[1])
    assert set(summary.ensemble) == {f"alpha={a:g}" for a in [i / 10 for i in range(11)]}
    for pid, suites in summary.ensemble.items():
        assert set(suites) == {"tiny-id", "tiny-shift", "tiny-typos"}
    # the alpha 0 and 1 ensembles are the base and adapted models (same argmax, same accuracy)
    for pid, ref in (("alpha=0", "base"), ("alpha=1", "adapted")):
        got = summary.ensemble[pid]["tiny-id"]["validation"].metrics["accuracy"].value
        assert got == summary.results[ref]["tiny-id"]["validation"].metrics["accuracy"].value
    frame = pd.read_csv(swept[1] / "per_alpha.csv")
    if "kind" in frame:
        assert (frame["kind"] == "ensemble").any()


def test_rerun_through_the_cli_is_served_from_the_store(swept, tiny_pair, tiny_suites, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 *map(str, tiny_suites), "--n-resamples", "20", "--no-report", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chosen alpha" in printed and "tiny-id/validation" in printed and "alpha=0.5" in printed
    assert read_manifest(out)["store_computed_splits"] == 0
    assert _strip_volatile(read_summary(out)) == _strip_volatile(read_summary(swept[1]))  # CLI == API


# -------------------------------------------------------------------------------------------------- blend --

def test_blend_checkpoint_matches_the_sweep_point(swept, tiny_pair, tiny_suites, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "blend"
    assert main(["blend", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--alpha",
                 "0.30000000000000004", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    prov = model.config.harness_blend
    assert prov["alpha"] == 0.3 and prov["head"] == "shared"
    manifest = read_manifest(swept[1])
    assert prov["base_fingerprint"] == manifest["models"]["base"]["fingerprint"]
    assert prov["adapted_fingerprint"] == manifest["models"]["adapted"]["fingerprint"]
    ev = evaluate_model(out, tiny_suites, out=tmp_path / "eval", options=RunOptions(**FAST))
    mine, theirs = read_predictions(ev.run_dir), read_predictions(swept[1])
    for suite, split in (("tiny-id", "validation"), ("tiny-shift", "test"), ("tiny-typos", "validation")):
        got = predictions_for(mine, "model", suite, split)
        want = predictions_for(theirs, "alpha=0.3", suite, split)
        assert list(got[0]) == list(want[0])
        np.testing.assert_allclose(got[3]["logits"], want[3]["logits"], rtol=0, atol=1e-5)
        assert not np.allclose(got[3]["logits"], predictions_for(theirs, "base", suite, split)[3]["logits"], atol=1e-5)


def test_blend_refuses_a_bad_alpha(tiny_pair, tmp_path):
    assert main(["blend", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--alpha", "1.5",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert not (tmp_path / "b").exists()


def test_blend_head_adapted_with_a_new_number_of_labels(head_models, tiny_pair, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "b3"
    assert main(["blend", "--base", str(tiny_pair[0]), "--adapted", str(head_models["three"]), "--alpha", "0.5",
                 "--head", "adapted", "--out", str(out), "--quiet"]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.num_labels == 3


# ------------------------------------------------------------------------------------------- exit codes --

def test_exit_codes(tiny_pair, tiny_suites, tmp_path, capsys):
    common = ["--suite", *map(str, tiny_suites), "--no-report", "--quiet", "--n-resamples", "10"]
    assert main(["sweep", "--base", str(tmp_path / "missing"), "--adapted", str(tiny_pair[1]), *common]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--alphas", "0,abc",
                 *common]) == 2
    assert "--alphas" in capsys.readouterr().err
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--alphas", "2",
                 *common]) == 2
    assert main(["sweep", "--bogus-flag", *common]) == 2
    assert main(["sweep", "--adapted", str(tiny_pair[1]), *common]) == 2  # no --base
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--select", "best",
                 *common]) == 2


# ------------------------------------------------------------------------------------------------- heads --

@pytest.fixture(scope="module")
def head_models(tiny_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("head-models")
    return {
        "generic": make_tiny_bert(root / "generic", seed=1),  # LABEL_0, LABEL_1: a new, untrained head
        "reversed": make_tiny_bert(root / "reversed", seed=1, id2label={0: "positive", 1: "negative"}),
        "three": make_tiny_bert(root / "three", seed=3, num_labels=3,
                                id2label={0: "negative", 1: "positive", 2: "neutral"}),
    }


@pytest.fixture(scope="module")
def three_class_suite(tmp_path_factory):
    import random

    root = tmp_path_factory.mktemp("suite3")
    rng = random.Random(0)
    words = "good bad fine awful movie film the plot".split()
    rows = [(" ".join(rng.choice(words) for _ in range(6)), rng.choice(["negative", "positive", "neutral"]))
            for _ in range(60)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(root / "id3.csv", index=False)
    (root / "id3.yaml").write_text(
        "kind: suite\nname: id3\nrole: id\nsource: {type: local, files: [id3.csv]}\n"
        "classes: [negative, positive, neutral]\nsplits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
        "  - {name: test, role: test, fraction: 0.5}\nmax_length: 32\nmetrics: [accuracy]\n")
    return root / "id3.yaml"


def _sweep(base, adapted, suites, **kw):
    opts = RunOptions(**FAST, label_map=kw.pop("label_map", None))
    return sweep_models(base, adapted, suites, alphas=kw.pop("alphas", "0,0.5,1"), options=opts, **kw)


def test_new_head_in_shared_mode_explains_head_adapted(head_models, tiny_pair, tiny_suites):
    with pytest.raises(BlendError, match=r"(?s)label.*--head adapted"):
        _sweep(head_models["generic"], tiny_pair[1], tiny_suites)


def test_other_label_order_in_shared_mode_explains_the_options(head_models, tiny_pair, tiny_suites):
    with pytest.raises(HarnessError, match="--head adapted"):
        _sweep(head_models["reversed"], tiny_pair[1], tiny_suites)


def test_other_number_of_labels_in_shared_mode_explains_head_adapted(head_models, tiny_pair, three_class_suite):
    with pytest.raises(HarnessError, match="--head adapted"):
        _sweep(tiny_pair[0], head_models["three"], [three_class_suite], select="id-only")


def test_head_adapted_sweep_labels_points_and_keeps_the_true_base(head_models, tiny_pair, tiny_suites, tmp_path):
    res = _sweep(head_models["generic"], tiny_pair[1], tiny_suites, head="adapted", out=tmp_path / "run")
    points = {p.id: p for p in res.summary.points}
    assert list(points) == ["base", "alpha=0", "alpha=0.5", "adapted"]
    assert points["base"].role == "base" and points["base"].alpha == 0.0
    assert points["alpha=0"].label == "base backbone + adapted head" and points["alpha=0"].role == "blend"
    assert "base" in res.summary.results and "alpha=0" in res.summary.results
    frame = read_predictions(res.run_dir)
    # the true base: the generic-label base checkpoint on its own
    ev = evaluate_model(head_models["generic"], tiny_suites, options=RunOptions(**FAST))
    base_val = predictions_for(frame, "base", "tiny-id", "validation")[3]["logits"]
    assert ev.summary.results["model"]["tiny-id"]["validation"].metrics["accuracy"].value == \
        res.summary.results["base"]["tiny-id"]["validation"].metrics["accuracy"].value
    # alpha 0: the base backbone with the adapted head, as written by `harness blend --head adapted --alpha 0`
    blend_dir = api.run_blend(head_models["generic"], tiny_pair[1], 0.0, tmp_path / "b0", head="adapted")
    ev0 = evaluate_model(blend_dir, tiny_suites, out=tmp_path / "e0", options=RunOptions(**FAST))
    want = predictions_for(read_predictions(ev0.run_dir), "model", "tiny-id", "validation")[3]["logits"]
    got = predictions_for(frame, "alpha=0", "tiny-id", "validation")[3]["logits"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not np.allclose(got, base_val, atol=1e-4)  # another head: other logits


def test_head_adapted_with_a_label_map_evaluates_a_reordered_base(head_models, tiny_pair, tiny_suites, tmp_path):
    res = _sweep(head_models["reversed"], tiny_pair[1], tiny_suites, head="adapted", out=tmp_path / "run",
                 label_map={"negative": "negative", "positive": "positive"})
    frame = read_predictions(res.run_dir)
    ev = evaluate_model(head_models["reversed"], tiny_suites, out=tmp_path / "ev",
                        options=RunOptions(**FAST, label_map={"negative": "negative", "positive": "positive"}))
    want = predictions_for(read_predictions(ev.run_dir), "model", "tiny-id", "validation")[3]["logits"]
    assert np.array_equal(predictions_for(frame, "base", "tiny-id", "validation")[3]["logits"], want)


def test_head_adapted_keeps_a_base_with_reordered_labels(head_models, tiny_pair, tiny_suites):
    res = _sweep(head_models["reversed"], tiny_pair[1], tiny_suites, head="adapted")
    assert "base" in {p.id for p in res.summary.points}


def test_head_adapted_with_a_new_number_of_labels_runs(head_models, tiny_pair, three_class_suite, tmp_path):
    res = _sweep(tiny_pair[0], head_models["three"], [three_class_suite], head="adapted", select="id-only",
                 out=tmp_path / "run")
    ids = [p.id for p in res.summary.points]
    assert ids == ["alpha=0", "alpha=0.5", "adapted"]  # the 2-label base cannot score a 3-class suite
    frame = read_predictions(res.run_dir)
    got = predictions_for(frame, "adapted", "id3", "validation")[3]["logits"]
    assert got.shape[1] == 3
    ev = evaluate_model(head_models["three"], [three_class_suite], options=RunOptions(**FAST))
    assert ev.summary.results["model"]["id3"]["validation"].metrics["accuracy"].value == \
        res.summary.results["adapted"]["id3"]["validation"].metrics["accuracy"].value


# ---------------------------------------------------------------------------------------------- resume --

def test_interrupted_sweep_resumes_with_only_the_missing_points(tiny_pair, tiny_suites, tmp_path, monkeypatch):
    import harness.predict as predict_mod

    real = predict_mod.predict
    calls = {"n": 0}

    def dying(*a, **k):
        if calls["n"] == 20:
            raise KeyboardInterrupt  # as if the user pressed ^C in the middle of alpha=0.3
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(predict_mod, "predict", dying)
    with pytest.raises(KeyboardInterrupt):
        api.run_sweep(*tiny_pair, tiny_suites, out=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()  # nothing half-written
    monkeypatch.setattr(predict_mod, "predict", real)
    res = api.run_sweep(*tiny_pair, tiny_suites, out=tmp_path / "run", **FAST)
    assert read_manifest(res.run_dir)["store_computed_splits"] == N_POINTS * N_SPLITS - 20
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "clean-cache"))
    clean = api.run_sweep(*tiny_pair, tiny_suites, out=tmp_path / "clean", **FAST)
    assert read_manifest(clean.run_dir)["store_computed_splits"] == N_POINTS * N_SPLITS
    assert _strip_volatile(res.summary) == _strip_volatile(clean.summary)
    a, b = read_predictions(res.run_dir), read_predictions(clean.run_dir)
    assert a["point"].tolist() == b["point"].tolist()
    assert np.array_equal(np.stack(a["logits"]), np.stack(b["logits"]))


def _rows(db_path: Path) -> int:
    if not db_path.is_file():
        return 0
    try:
        db = sqlite3.connect(str(db_path), timeout=1)
        try:
            return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_and_matches_a_clean_run(tiny_pair, tiny_suites, tmp_path, monkeypatch):
    cache, total = tmp_path / "cache", N_POINTS * N_SPLITS
    args = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
            *map(str, tiny_suites), "--no-report", "--quiet", "--n-resamples", "20", "--batch-tokens", "256"]
    env = dict(os.environ, HARNESS_CACHE=str(cache))
    cmd = [sys.executable, "-m", "harness.cli", *args, "--out", str(tmp_path / "run")]
    log = tmp_path / "killed.log"
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        db = cache / "results.sqlite"
        deadline = time.monotonic() + 120
        while _rows(db) < 12 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]  # killed partway, not finished
    done = _rows(db)
    assert 12 <= done < total
    assert not (tmp_path / "run").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["store_computed_splits"] == total - done
    assert _rows(db) == total

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "clean-cache"))
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert read_manifest(tmp_path / "clean")["store_computed_splits"] == total
    assert _strip_volatile(read_summary(tmp_path / "run")) == _strip_volatile(read_summary(tmp_path / "clean"))


@pytest.mark.slow
def test_compiled_layers_give_the_same_sweep(swept, tiny_pair, tiny_suites, tmp_path):
    """--compile (regional torch.compile of the encoder layers, here on CPU with inductor) must not change what the
    sweep selects, nor its numbers beyond float tolerance; the manifest records it."""
    import shutil

    if shutil.which("g++") is None and shutil.which("clang++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    res, _ = swept
    out = tmp_path / "compiled"
    comp = api.run_sweep(*tiny_pair, tiny_suites, out=out, use_store=False, compile=True, alphas=[0.0, 0.3, 1.0],
                     **FAST)
    assert read_manifest(out)["compiled"] is True
    for point in comp.summary.points:
        ref = next(p for p in res.summary.points if p.alpha == point.alpha)
        for suite, splits in comp.summary.results[point.id].items():
            for split, entry in splits.items():
                want = res.summary.results[ref.id][suite][split].metrics["accuracy"].value
                assert entry.metrics["accuracy"].value == pytest.approx(want, abs=1e-9), (point.id, suite, split)
