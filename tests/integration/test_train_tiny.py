"""``harness train`` end to end on tiny models built from configs (CPU, offline): a 4-class CSV suite with a tiny
BERT classifier (lpft pair, probe then LoRA) and a multiple-choice suite with a tiny llama (LoRA, full); each
trained model is then swept against its base; bad input exits 2; ``harness train --method lpft`` on the demo's
kind of encoder gives the demo's own weights."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

import harness
from harness.cli import main
from harness.errors import SpecError
from harness.rundir import read_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from _causal import byte_bpe, tiny_causal  # noqa: E402

try:
    from tests.conftest import SPECIALS, make_fake_sentence_transformer, write_tokenizer
except ImportError:  # pragma: no cover - depends on the layout
    from conftest import SPECIALS, make_fake_sentence_transformer, write_tokenizer

FAST = ["--n-resamples", "20", "--no-report", "--no-progress", "--alphas", "0,0.5,1"]
CLASSES = ("sports", "tech", "food", "travel")
CUES = {"sports": "goal match team score", "tech": "phone chip code app", "food": "pasta soup bread salad",
        "travel": "flight hotel beach train"}
FILLER = "the a was is very and it this that today new old".split()
VOCAB = sorted({w for c in CUES.values() for w in c.split()} | set(FILLER))
TRAINING = """kind: training
name: tiny-train
seed: 0
max_length: 24
probe: {c_grid: [0.1, 1.0, 10.0]}
full: {epochs: 2, learning_rate: 1.0e-3, batch_size: 16, warmup_ratio: 0.1}
lora: {r: 4, lora_alpha: 8, dropout: 0.0, target_modules: [query, value], epochs: 2, learning_rate: 1.0e-2,
       batch_size: 16}
profiles:
  quick: {full: {epochs: 1}, lora: {epochs: 1}}
"""
LM_TRAINING = """kind: training
name: tiny-lm-train
task: causal_lm
seed: 0
max_length: 64
lm: {}
full: {epochs: 3, learning_rate: 3.0e-3, batch_size: 8, warmup_ratio: 0.0, weight_decay: 0.0}
lora: {r: 4, lora_alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj, up_proj], epochs: 3,
       learning_rate: 2.0e-2, batch_size: 8, warmup_ratio: 0.0, weight_decay: 0.0}
"""


def _rows(n: int, seed: int, cues: int = 2) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % 4]
        words = rng.sample(FILLER, 4) + rng.sample(CUES[label].split(), cues)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    return path


def write_suite(root: Path, name: str = "news4", splits: tuple[str, ...] = ("train", "validation", "test"),
                classes: bool = True) -> Path:
    """A 4-class ID suite from CSV files, one file per split."""
    sizes = {"train": 96, "validation": 40, "test": 40}
    lines = []
    for i, split in enumerate(splits):
        _csv(root / f"{name}-{split}.csv", _rows(sizes[split], i))
        lines.append(f"  - {{name: {split}, role: {split}, files: [{name}-{split}.csv]}}\n")
    path = root / f"{name}.yaml"
    path.write_text(f"kind: suite\nname: {name}\nrole: id\nsource: {{type: local, files: [{name}-train.csv]}}\n"
                    + (f"classes: [{', '.join(CLASSES)}]\n" if classes else "") + "max_length: 24\n"
                    "metrics: [accuracy, macro_f1]\nsplits:\n" + "".join(lines))
    return path


@pytest.fixture(scope="module")
def cls_setup(tmp_path_factory) -> dict[str, Path]:
    """A 4-class suite, a training file and a tiny BertForSequenceClassification (random 4-class head; weights
    drawn wide enough, std 0.2, that its pooled features carry the cue words)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("train-cls")
    bert = root / "bert"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(SPECIALS) + len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=4, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, initializer_range=0.2)).save_pretrained(bert)
    write_tokenizer(bert, VOCAB)
    (root / "training.yaml").write_text(TRAINING)
    _csv(root / "shift.csv", _rows(60, 7, cues=1))
    (root / "shift.yaml").write_text(
        f"kind: suite\nname: news4-shift\nrole: shift\nshift_type: natural\nsource: {{type: local, files: "
        f"[shift.csv]}}\nclasses: [{', '.join(CLASSES)}]\nmax_length: 24\nmetrics: [accuracy]\nsplits:\n"
        "  - {name: validation, role: validation, fraction: 0.5}\n  - {name: test, role: test, fraction: 0.5}\n")
    return {"root": root, "suite": write_suite(root), "training": root / "training.yaml", "bert": bert,
            "shift": root / "shift.yaml"}


def _train(setup: dict[str, Path], out: Path, *extra: str, base: Path | None = None, suite: Path | None = None,
           training: Path | None = None) -> int:
    return main(["train", "-c", str(training or setup["training"]), "--suite", str(suite or setup["suite"]),
                 "--base", str(base or setup["bert"]), "--out", str(out), "--quiet", *extra])


def _sweep(base: Path, adapted: Path, suites: list[Path], out: Path, *extra: str) -> dict:
    assert main(["sweep", "--base", str(base), "--adapted", str(adapted), "--suite", *map(str, suites),
                 "--out", str(out), *FAST, *extra]) == 0
    return read_summary(out).results


def test_lpft_writes_a_base_adapted_pair_that_sweeps(cls_setup, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "pair"
    assert _train(cls_setup, out, "--method", "lpft") == 0
    for stage, method in (("base", "probe"), ("adapted", "full")):
        folder = out / stage
        assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= {p.name for p in
                                                                                            folder.iterdir()}
        config = json.loads((folder / "config.json").read_text())
        assert [config["id2label"][str(i)] for i in range(4)] == list(CLASSES)
        record = json.loads((folder / "training.json").read_text())
        assert record["method"] == method and record["command_method"] == "lpft"
        assert record["data"]["train"]["n_rows"] == 96 and record["data"]["validation"]["n_rows"] == 40
        assert record["data"]["train"]["fingerprint"] and record["training_file"]["sha256"]
        assert record["threads"] >= 1 and record["wall_seconds"] > 0 and record["versions"]["torch"]
        assert record["suite"]["classes"] == list(CLASSES)
    probe = json.loads((out / "base" / "training.json").read_text())
    adapted = json.loads((out / "adapted" / "training.json").read_text())
    assert probe["probe"]["C"] in (0.1, 1.0, 10.0) and set(probe["probe"]["val_accuracy_by_C"]) == {"0.1", "1.0",
                                                                                                     "10.0"}
    assert adapted["epochs"] == 2 and len(adapted["loss_per_epoch"]) == 2 and adapted["steps"] == 12
    assert adapted["base"] == str((out / "base").resolve())
    base_w, tuned_w = load_file(out / "base" / "model.safetensors"), load_file(out / "adapted" / "model.safetensors")
    assert set(base_w) == set(tuned_w) and any(not (base_w[k] == tuned_w[k]).all() for k in base_w)
    res = _sweep(out / "base", out / "adapted", [cls_setup["suite"], cls_setup["shift"]], tmp_path / "run")
    acc = res["adapted"]["news4"]["test"].metrics["accuracy"].value
    assert acc > 0.5, acc  # four classes: chance is 0.25
    assert res["base"]["news4"]["test"].metrics["accuracy"].value == pytest.approx(
        probe["validation"]["accuracy"], abs=0.3)


def test_probe_then_lora_through_the_api(cls_setup, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    probe = harness.run_train(cls_setup["training"], cls_setup["suite"], cls_setup["bert"], tmp_path / "probe",
                              method="probe", progress=False)
    assert probe.base_dir is None and probe.model_dir == tmp_path / "probe"
    lora = harness.run_train(cls_setup["training"], cls_setup["suite"], probe.model_dir, tmp_path / "lora",
                             method="lora", profile="quick", progress=False)
    assert lora.base_dir == probe.model_dir and lora.method == "lora"
    adapter = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(probe.model_dir.resolve()) and adapter["r"] == 4
    assert "classifier" in adapter["modules_to_save"]
    record = json.loads((tmp_path / "lora" / "training.json").read_text())
    assert record["epochs"] == 1 and record["training_file"]["profile"] == "quick"
    assert record == lora.records[str(tmp_path / "lora")]
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(probe.model_dir),
                                      tmp_path / "lora")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    res = _sweep(probe.model_dir, tmp_path / "lora", [cls_setup["suite"], cls_setup["shift"]], tmp_path / "run")
    assert {"base", "adapted"} <= set(res)


def test_full_or_lora_refuse_a_base_without_a_trained_head(cls_setup, tmp_path, capsys):
    encoder = make_fake_sentence_transformer(tmp_path / "st", VOCAB)
    for method in ("full", "lora"):
        assert _train(cls_setup, tmp_path / method, "--method", method, base=encoder) == 2
        err = capsys.readouterr().err
        assert "not trained for this suite" in err and "--method probe" in err
        assert not (tmp_path / method).exists()
    two_class = tmp_path / "two"  # a trained-looking head of the wrong size
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=len(SPECIALS) + len(VOCAB), hidden_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                             num_labels=2)).save_pretrained(two_class)
    write_tokenizer(two_class, VOCAB)
    assert _train(cls_setup, tmp_path / "x", "--method", "full", base=two_class) == 2
    assert "no trained head for the suite's 4 classes" in capsys.readouterr().err


def test_bad_input_exits_2_with_a_clear_message(cls_setup, tmp_path, capsys):
    root = cls_setup["root"]
    cases = [
        (dict(suite=write_suite(tmp_path, "notrain", ("validation", "test"))), "has no train split"),
        (dict(training=cls_setup["suite"]), "training"),  # a suite file given as the training file
        (dict(suite=write_suite(tmp_path, "noclasses", classes=False)), "classes"),
        (dict(training=_lm_training(tmp_path)), "another kind of model"),
    ]
    for kwargs, needle in cases:
        assert _train(cls_setup, tmp_path / "out", **kwargs) == 2, needle
        assert needle in capsys.readouterr().err
    assert _train(cls_setup, tmp_path / "out", "--method", "sgd") == 2  # argparse: not a choice
    capsys.readouterr()
    assert _train(cls_setup, tmp_path / "out", "--profile", "fast") == 2
    err = capsys.readouterr().err
    assert "training profile" in err and "quick" in err
    (tmp_path / "exists").mkdir()
    assert _train(cls_setup, tmp_path / "exists") == 2
    assert "exists already" in capsys.readouterr().err
    with pytest.raises(SpecError, match="--method"):
        harness.run_train(root / "training.yaml", cls_setup["suite"], cls_setup["bert"], tmp_path / "o",
                          method="sgd")
    assert not (tmp_path / "out").exists()


def _lm_training(root: Path) -> Path:
    path = root / "lm-training.yaml"
    path.write_text(LM_TRAINING)
    return path


# --- multiple choice with a causal LM --------------------------------------------------------------------------

LM_WORDS = "water light plants energy rock steam ice sun leaf animals grow mass".split()


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-lm")
    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok, seed=3, n_positions=128)
    model.save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    rng = random.Random(0)
    for split, n in (("train", 48), ("validation", 16), ("test", 16)):
        rows = []
        for i in range(n):
            texts = rng.sample(LM_WORDS, 3)
            rows.append({"id": f"{split}{i}", "question": f"Which is {texts[0]}?",
                         "choices": {"text": texts, "label": ["A", "B", "C"]}, "answerKey": "A"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mc.yaml").write_text(
        "kind: suite\nname: tiny-mc\nrole: id\nsource: {type: local, files: [train.jsonl]}\nid_column: id\n"
        "task:\n  kind: multiple_choice\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
        "  choices: {field: choices.text}\n  gold: {label: answerKey, labels: choices.label}\n"
        "metrics: [acc, acc_norm]\nsplits:\n" + "".join(
            f"  - {{name: {s}, role: {s}, files: [{s}.jsonl]}}\n" for s in ("train", "validation", "test")))
    return {"root": root, "suite": root / "mc.yaml", "training": _lm_training(root), "llama": root / "llama"}


def test_mc_pairs_are_the_prompt_and_the_correct_choice(lm_setup):
    from harness.data.sources import load_splits
    from harness.spec.load import load_suite
    from harness.train.builders import mc_pairs

    suite = load_suite(lm_setup["suite"])
    split = load_splits(suite, suite_path=lm_setup["suite"], split_names=["train"])["train"]
    pairs = mc_pairs(suite, split, byte_bpe("llama"))
    row = json.loads((lm_setup["root"] / "train.jsonl").read_text().splitlines()[0])
    assert pairs[0] == (f"Question: {row['question']}\nAnswer:", " " + row["choices"]["text"][0])
    assert len(pairs) == 48


@pytest.mark.parametrize("method", ["lora", "full"])
def test_causal_lm_training_on_a_multiple_choice_suite_then_sweep(lm_setup, tmp_path, method):
    out = tmp_path / method
    rc = main(["train", "-c", str(lm_setup["training"]), "--suite", str(lm_setup["suite"]), "--base",
               str(lm_setup["llama"]), "--out", str(out), "--method", method, "--quiet"])
    assert rc == 0
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    assert (out / weights).is_file() and (out / "training.json").is_file()
    record = json.loads((out / "training.json").read_text())
    assert record["task"] == "multiple_choice" and record["n_train_examples"] == 48 and record["epochs"] == 3
    assert record["loss_per_epoch"][-1] < record["loss_per_epoch"][0]
    val = record["validation"]
    assert val["answer_loss_after"] < val["answer_loss_before"]
    res = _sweep(lm_setup["llama"], out, [lm_setup["suite"]], tmp_path / "run", "--select", "id-only")
    assert res["adapted"]["tiny-mc"]["test"].metrics["acc"].value >= res["base"]["tiny-mc"]["test"].metrics[
        "acc"].value


def test_methods_that_need_a_classifier_are_refused_on_a_multiple_choice_suite(lm_setup, tmp_path, capsys):
    rc = main(["train", "-c", str(lm_setup["training"]), "--suite", str(lm_setup["suite"]), "--base",
               str(lm_setup["llama"]), "--out", str(tmp_path / "p"), "--method", "probe"])
    assert rc == 2 and "does not apply to a multiple_choice suite" in capsys.readouterr().err


def test_lpft_from_a_sentence_transformer_gives_the_demo_models_weights(cls_setup, tmp_path):
    """``harness train --method lpft`` runs the demo's own trainers: same inputs, bit-identical weights."""
    import torch
    from safetensors.torch import load_file

    from harness.data.sources import load_splits
    from harness.demo.train import build_demo_models
    from harness.spec.load import load_spec, load_suite

    encoder = make_fake_sentence_transformer(tmp_path / "st", VOCAB)
    suite = cls_setup["suite"]
    splits = load_splits(load_suite(suite), suite_path=suite, split_names=["train", "validation"])
    demo = build_demo_models(load_spec(cls_setup["training"], kind="training"), splits["train"],
                             splits["validation"], encoder, tmp_path / "cache", "full", "quick", device="cpu",
                             progress=False)
    res = harness.run_train(cls_setup["training"], suite, encoder, tmp_path / "pair", method="lpft",
                            profile="quick", device="cpu", progress=False)
    for ours, theirs in ((res.base_dir, demo.base_dir), (res.model_dir, demo.adapted_dir)):
        a, b = load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors")
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), ours
    assert res.records[str(res.base_dir)]["probe"]["C"] == demo.info["base"]["C"]
    assert res.records[str(res.model_dir)]["validation"]["accuracy"] == demo.info["adapted"]["val_accuracy"]


def test_progress_is_one_log_line_per_step_when_not_a_terminal(cls_setup, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="harness.train")
    harness.run_train(cls_setup["training"], cls_setup["suite"], cls_setup["bert"], tmp_path / "p",
                      method="probe", progress=True)
    harness.run_train(cls_setup["training"], cls_setup["suite"], tmp_path / "p", tmp_path / "f", method="full",
                      profile="quick", progress=True)
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [m.split(":")[0] for m in steps if m.startswith("epoch")] == [f"epoch 1/1 step {i}/6" for i in
                                                                          range(1, 7)]
    assert any(m.startswith("probe features (train) step 1/") for m in steps)
    caplog.clear()
    harness.run_train(cls_setup["training"], cls_setup["suite"], tmp_path / "p", tmp_path / "q", method="full",
                      profile="quick", progress=False)
    assert not [r for r in caplog.records if " step " in r.getMessage()]


def test_lora_for_a_causal_lm_shows_no_gradient_checkpointing_future_warning(lm_setup):
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model: the LM demo showed
    that FutureWarning to the user; the harness silences that one message (other warnings still show)."""
    import warnings

    from harness.spec.load import load_spec
    from harness.train.causal import prepare_model

    settings = load_spec(lm_setup["training"], kind="training").resolve(None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_model(lm_setup["llama"], settings, "lora")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
