"""Lines the CLI and the demos print, checked without a model: what ``harness train`` says per folder, and one
profile name for the language-model demo's header and its run summary."""

from __future__ import annotations

import pytest

from harness.cli import training_line


def record(method: str, **extra) -> dict:
    return {"method": method, "n_train_examples": 344, "epochs": 0 if method == "probe" else 2,
            "validation": {"accuracy": 0.8144}, "wall_seconds": 10.2, **extra}


def test_a_probe_line_names_its_c_and_no_epochs():
    line = training_line("models/probe", record("probe", probe={"C": 0.1, "val_accuracy": 0.8144}))
    assert "linear probe, C=0.1 chosen on validation" in line and "epoch" not in line
    assert "344 training examples" in line and "accuracy 0.8144" in line


def test_a_fine_tune_line_counts_its_epochs():
    line = training_line("models/lora", record("lora"))
    assert "2 epochs" in line and "probe" not in line


def test_lm_demo_header_and_summary_use_one_profile_name(monkeypatch, capsys, tmp_path):
    from harness.demo import lm_assets, lm_run

    seen = {}

    class Stop(Exception):
        pass

    def fake_sweep(base, adapted, suites, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(lm_assets, "smollm2_dir", lambda **kw: tmp_path / "base")
    monkeypatch.setattr(lm_run, "_adapted", lambda *a, **kw: tmp_path / "adapted")
    monkeypatch.setattr(lm_run, "sweep_models", fake_sweep)
    with pytest.raises(Stop):
        lm_run.run_lm_demo(profile="quick", out=tmp_path / "run")
    assert "lm demo (quick profile)" in capsys.readouterr().err
    assert seen["profile"] == "quick"  # the summary's profile, printed as "lm demo (quick profile): chosen alpha"


@pytest.mark.parametrize("task", ["sentiment", "lm"])
def test_demo_models_only_prints_the_two_folders_and_runs_no_sweep(monkeypatch, capsys, tmp_path, task):
    """New-user trial (2026-12-01): a user with their own suites had to run the whole LM demo (minutes) to get
    its models. ``--models-only`` builds or finds them, prints ``base:`` and ``adapted:`` and writes no run."""
    import types

    from harness.cli import main
    from harness.demo import lm_assets, lm_run
    from harness.demo import run as demo

    def no_sweep(*a, **k):
        raise AssertionError("--models-only swept")

    monkeypatch.setattr(lm_assets, "smollm2_dir", lambda **kw: tmp_path / "base")
    monkeypatch.setattr(lm_run, "_adapted", lambda *a, **kw: tmp_path / "adapted")
    monkeypatch.setattr(demo, "_build_models", lambda *a, **kw: types.SimpleNamespace(
        base_dir=tmp_path / "base", adapted_dir=tmp_path / "adapted", info={}))
    monkeypatch.setattr(lm_run, "sweep_models", no_sweep)
    monkeypatch.setattr(demo, "sweep_models", no_sweep)
    out = tmp_path / "run"
    assert main(["demo", "--task", task, "--models-only", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [f"base: {tmp_path / 'base'}",
                                                         f"adapted: {tmp_path / 'adapted'}"]
    assert not out.exists()
    assert main(["demo", "--task", task, "--models-only", "--strict"]) == 2
    assert "--models-only runs no sweep, so --strict has nothing to act on" in capsys.readouterr().err
