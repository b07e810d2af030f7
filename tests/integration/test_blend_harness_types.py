"""``harness blend`` on full checkpoints of the harness's own model type (``harness_mean_pooling``: what
``harness train --method lpft`` and the sentence demo write), and the message for a model type nobody knows.

The pair is built from configs (tiny BERT encoder, mean pooling, seeded noise as the fine-tune); the blend at alpha
0.3 must load in ``harness eval`` and score exactly as the sweep's alpha 0.3 point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.api as api
from harness.cli import main
from harness.rundir import predictions_for, read_predictions

try:  # tests/ may or may not be a package
    from tests.conftest import tiny_bert_config, write_tokenizer
except ImportError:  # pragma: no cover - depends on the layout
    from conftest import tiny_bert_config, write_tokenizer

FAST = dict(n_resamples=20, report=False, progress=False)
LABELS = {0: "negative", 1: "positive"}


def _mean_pooling(path: Path, seed: int, base: torch.nn.Module | None = None) -> torch.nn.Module:
    from harness.models.pooling import MeanPoolingConfig, MeanPoolingForSequenceClassification

    torch.manual_seed(seed)
    enc = tiny_bert_config()
    cfg = MeanPoolingConfig(encoder=enc, normalize=True, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = MeanPoolingForSequenceClassification(cfg).eval()
    with torch.no_grad():
        if base is not None:
            model.load_state_dict(base.state_dict())
        for p in model.parameters():
            p.add_((0.05 if base is not None else 0.5) * torch.randn_like(p))
    model.save_pretrained(str(path))
    write_tokenizer(path)
    return model


@pytest.fixture(scope="module")
def harness_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hpair")
    base = _mean_pooling(root / "base", 1)
    _mean_pooling(root / "adapted", 2, base=base)
    assert json.loads((root / "base" / "config.json").read_text())["model_type"] == "harness_mean_pooling"
    return root / "base", root / "adapted"


def _cli(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_blend_of_harness_type_pair_loads_in_eval_and_equals_the_sweep_point(harness_pair, tiny_suites, tmp_path):
    suites = tiny_suites[:2]
    sweep = api.run_sweep(*harness_pair, suites, out=tmp_path / "sweep", alphas="0,0.3,1", **FAST)
    out = tmp_path / "blend"
    # a fresh process, as a user runs it: nothing has registered the harness's model types yet
    res = _cli("blend", "--base", str(harness_pair[0]), "--adapted", str(harness_pair[1]), "--alpha", "0.3",
               "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "config.json").read_text())["model_type"] == "harness_mean_pooling"
    ev = api.run_eval(out, suites, out=tmp_path / "eval", **FAST)
    mine, theirs = read_predictions(ev.run_dir), read_predictions(sweep.run_dir)
    for suite, split in (("tiny-id", "validation"), ("tiny-shift", "test")):
        got = predictions_for(mine, "model", suite, split)
        want = predictions_for(theirs, "alpha=0.3", suite, split)
        assert list(got[0]) == list(want[0])
        np.testing.assert_allclose(got[3]["logits"], want[3]["logits"], rtol=0, atol=1e-5)
        assert not np.allclose(got[3]["logits"], predictions_for(theirs, "base", suite, split)[3]["logits"],
                               atol=1e-4)
    m_ev = ev.summary.results["model"]["tiny-id"]["validation"].metrics["accuracy"].value
    m_sw = sweep.summary.results["alpha=0.3"]["tiny-id"]["validation"].metrics["accuracy"].value
    assert m_ev == m_sw


def test_unknown_model_type_names_the_real_limit_in_full(harness_pair, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(harness_pair[0], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "nobody_knows_this_type"
    (bad / "config.json").write_text(json.dumps(cfg))
    assert main(["blend", "--base", str(bad), "--adapted", str(harness_pair[1]), "--alpha", "0.3",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nobody_knows_this_type" in err
    assert "does not register" in err and "harness_mean_pooling" in err and "--trust-remote-code" in err
    got = next(line for line in err.splitlines() if "got:" in line)
    assert got.count("`") % 2 == 0 and not got.rstrip().endswith("pip install")  # whole, never cut mid-text


def test_unknown_type_with_its_own_code_points_to_trust_remote_code(tmp_path):
    from harness.errors import ModelError
    from harness.models.hfconfig import read_config

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "somebody_elses", "auto_map": {
        "AutoConfig": "modeling.SomeConfig"}}))
    with pytest.raises(ModelError) as e:
        read_config(tmp_path)
    msg = str(e.value)
    assert "declares its own code (auto_map): pass --trust-remote-code only if you trust that code" in msg
    assert "'somebody_elses'" in msg
