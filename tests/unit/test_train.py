"""harness.train: the shared loop (schedule, progress, whole-folder writes), the multi-class probe head, the
classifier loader's head checks and the checks ``harness train`` makes before loading anything."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import ModelError, SpecError
from harness.spec.training import FineTuneSettings
from harness.train.classifier import head_from_probe
from harness.train.command import plan
from harness.train.loop import StepProgress, adamw_linear, save_model_folder

TRAINING = ("kind: training\nname: t\nfull: {epochs: 1, learning_rate: 1.0e-3, batch_size: 4}\n"
            "lora: {r: 2, lora_alpha: 4, target_modules: [query], epochs: 1, learning_rate: 1.0e-3, batch_size: 4}\n")


@pytest.mark.parametrize("offset, first", [(1, 1 / 3), (0, 1 / 2)])
def test_schedule_warms_up_then_decays_to_zero(offset, first):
    model = torch.nn.Linear(3, 2)
    ft = FineTuneSettings(epochs=1, learning_rate=1.0, batch_size=1, warmup_ratio=0.2)
    opt, sched = adamw_linear(model, ft, 10, warmup_offset=offset, no_decay=lambda n, p: p.ndim < 2)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(first) and rates[2] == pytest.approx(1.0) and rates[-1] == pytest.approx(1 / 8)
    assert opt.param_groups[0]["lr"] == 0.0


def test_step_progress_logs_each_step_off_a_terminal(caplog):
    log = logging.getLogger("harness.train.test")
    caplog.set_level(logging.INFO, logger="harness.train")
    bar = StepProgress(range(3), 3, "epoch 1/1", True, log)
    for i in bar:
        bar.step(float(i) if i else None)
    bar.close()
    assert [r.getMessage() for r in caplog.records] == ["epoch 1/1 step 1/3", "epoch 1/1 step 2/3: loss 1.0000",
                                                        "epoch 1/1 step 3/3: loss 2.0000"]
    caplog.clear()
    quiet = StepProgress(range(2), 2, "x", False, log)
    for _ in quiet:
        quiet.step(0.5)
    assert not caplog.records


def test_model_folder_appears_whole_and_is_never_overwritten(tmp_path):
    class Boom:
        def save_pretrained(self, path, **kw):
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_model_folder(Boom(), None, tmp_path / "out", {}, "training.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelError, match="exists already"):
        save_model_folder(Boom(), None, tmp_path / "out", {}, "training.json")


def test_multi_class_probe_head_keeps_the_probe_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 6)), np.arange(80) % 4
    clf = LogisticRegression(C=1.0).fit(x, y)
    weight, bias = head_from_probe(clf, 4)
    assert weight.shape == (4, 6) and bias.shape == (4,)
    probs = torch.softmax(torch.tensor(x, dtype=torch.float32) @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(x), atol=1e-5)


def test_loader_says_why_a_head_cannot_be_trained_from(tmp_path):
    from conftest import make_tiny_bert

    from harness.train.builders import load_classifier

    labels = {0: "negative", 1: "positive"}
    path = make_tiny_bert(tmp_path / "bert", seed=0, id2label=labels)
    assert load_classifier(path, ("negative", "positive"))[2] is None
    assert "predicts ['negative', 'positive']" in load_classifier(path, ("positive", "negative"))[2]
    assert "no trained head for the suite's 3 classes" in load_classifier(path, ("a", "b", "c"))[2]
    generic = make_tiny_bert(tmp_path / "generic", seed=0)
    assert load_classifier(generic, ("neg", "pos"))[2] is None  # LABEL_0, LABEL_1: the suite names them
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(tmp_path / "nothing", ("a", "b"))


def _suite(path: Path, body: str) -> Path:
    path.write_text(body)
    (path.parent / "rows.csv").write_text("text,label\na,x\nb,y\n")
    return path


@pytest.mark.parametrize("body, needle", [
    ("kind: suite\nname: s\nrole: shift\nshift_type: natural\nsource: {type: local, files: [rows.csv]}\n"
     "classes: [x, y]\nsplits:\n  - {name: train, role: train}\n  - {name: validation, role: validation}\n",
     "trains on an ID suite"),
    ("kind: suite\nname: s\nrole: id\nsource: {type: local, files: [rows.csv]}\nclasses: [x, y]\n"
     "splits:\n  - {name: train, role: train}\n", "has no validation split"),
    ("kind: suite\nname: s\nrole: id\nsource: {type: local, files: [rows.csv]}\n"
     "task: {kind: perplexity, text: text}\nsplits:\n  - {name: train, role: train}\n"
     "  - {name: validation, role: validation}\n", "cannot train on a perplexity suite"),
])
def test_plan_refuses_bad_input_before_loading_anything(tmp_path, body, needle):
    (tmp_path / "t.yaml").write_text(TRAINING)
    with pytest.raises(SpecError, match=needle):
        plan(tmp_path / "t.yaml", _suite(tmp_path / "s.yaml", body), tmp_path, tmp_path / "out",
             method=None, profile=None)


def test_plan_picks_the_default_method_and_the_splits(tmp_path):
    (tmp_path / "t.yaml").write_text(TRAINING)
    suite = _suite(tmp_path / "s.yaml", "kind: suite\nname: s\nrole: id\nsource: {type: local, files: [rows.csv]}\n"
                   "classes: [x, y]\nsplits:\n  - {name: fit, role: train}\n  - {name: dev, role: validation}\n")
    job = plan(tmp_path / "t.yaml", suite, tmp_path, tmp_path / "out", method=None, profile=None)
    assert (job.method, job.train_split, job.validation_split) == ("lpft", "fit", "dev")
    with pytest.raises(SpecError, match="unknown training profile"):
        plan(tmp_path / "t.yaml", suite, tmp_path, tmp_path / "out", method=None, profile="quick")
    with pytest.raises(ModelError, match="base model folder does not exist"):
        plan(tmp_path / "t.yaml", suite, tmp_path / "no-model", tmp_path / "out", method=None, profile=None)
