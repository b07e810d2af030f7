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
