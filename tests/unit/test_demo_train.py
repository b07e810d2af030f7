"""Tests for harness.demo.train and harness.spec.training: the demo models' plumbing on a tiny BERT.

The "sentence-transformers folder" here is a tiny BERT built from a config, a word-level tokenizer written from a
vocabulary file, ``modules.json`` with a Normalize step and a mean-pooling config; no hub access.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from harness.demo import train as demo_train
from harness.demo.train import BUILD_FILE, build_demo_models, cache_keys
from harness.train.classifier import head_from_probe
from harness.errors import DataError, SpecError
from harness.records import SplitData, SplitRef, SplitRole, SuiteRole
from harness.spec.load import load_spec
from harness.spec.training import TrainingSpec

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("negative", "positive")
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak"]
FILLER = ["the", "film", "movie", "plot", "was", "a", "very", "and", "cast", "story"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    from conftest import make_fake_sentence_transformer

    return make_fake_sentence_transformer(tmp_path_factory.mktemp("fake-st"), POSITIVE + NEGATIVE + FILLER)


def make_split(name: str, n: int, seed: int, role: SplitRole = SplitRole.TRAIN) -> SplitData:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, size=4)) + list(rng.choice(POSITIVE if label else NEGATIVE, size=2))
        rng.shuffle(words)
        rows.append({"example_id": f"{name}-{i}", "source_id": f"{name}-{i}", "text": " ".join(words),
                     "label": label})
    frame = pd.DataFrame(rows).astype({"label": "int64"})
    ref = SplitRef(suite="synthetic", split=name, role=role, suite_role=SuiteRole.ID,
                   fingerprint=f"fp-{name}-{n}-{seed}")
    return SplitData(ref=ref, frame=frame, classes=CLASSES)


@pytest.fixture(scope="module")
def splits() -> tuple[SplitData, SplitData]:
    return make_split("train", 40, 0), make_split("validation", 20, 1, SplitRole.VALIDATION)


def tiny_spec(**overrides) -> TrainingSpec:
    doc = {"kind": "training", "name": "tiny", "seed": 0, "max_length": 16,
           "probe": {"c_grid": [0.1, 1.0, 10.0]},
           "full": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "warmup_ratio": 0.1},
           "lora": {"r": 2, "lora_alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"], "epochs": 1,
                    "learning_rate": 1e-2, "batch_size": 8},
           "profiles": {"quick": {}, "full": {"full": {"epochs": 2}}}}
    doc.update(overrides)
    return TrainingSpec.model_validate(doc)


def build(splits, encoder_dir, out, adaptation="full"):
    """build_demo_models on CPU (bitwise reproducible there), quick profile, no progress bars."""
    return build_demo_models(tiny_spec(), *splits, encoder_dir, out, adaptation, "quick", device="cpu",
                             progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder_dir, splits):
    out = tmp_path_factory.mktemp("demo-cache")
    full = build(splits, encoder_dir, out)
    lora = build(splits, encoder_dir, out, "lora")
    return out, full, lora


# --- the training spec -----------------------------------------------------------------------------------------


def test_shipped_training_spec_validates_and_profiles_resolve():
    spec = load_spec(REPO / "suites" / "training-demo.yaml", kind="training")
    assert isinstance(spec, TrainingSpec)
    quick, full = spec.resolve("quick"), spec.resolve("full")
    assert quick.max_length <= 64 and quick.full.max_train_examples <= 1500 and quick.full.epochs <= 2
    assert quick.lora.max_train_examples <= 1500
    assert full.full.max_train_examples is None and full.probe.max_train_examples is None
    assert quick.full.learning_rate == full.full.learning_rate  # a profile overrides only what it names
    assert full.lora.lora_alpha > 0 and full.lora.target_modules


def test_profile_typo_is_reported_with_its_field_path():
    with pytest.raises(ValidationError, match=r"profiles\.quick\.full\.epoch"):
        tiny_spec(profiles={"quick": {"full": {"epoch": 1}}})
    with pytest.raises(ValidationError, match=r"profiles\.quick\.lora\.lora_alpha"):
        tiny_spec(profiles={"quick": {"lora": {"lora_alpha": 0}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        tiny_spec(learning_rate=1e-3)


def test_resolve_deep_merges_and_replaces_lists():
    spec = tiny_spec(profiles={"quick": {"probe": {"c_grid": [5.0]}, "lora": {"r": 4}}})
    quick = spec.resolve("quick")
    assert quick.probe.c_grid == [5.0] and quick.lora.r == 4 and quick.lora.lora_alpha == 4
    assert spec.resolve(None).lora.r == 2


# --- cache keys ------------------------------------------------------------------------------------------------


def test_cache_keys_cover_what_changes_the_weights():
    settings = tiny_spec().resolve("quick")
    ref = cache_keys(settings, "enc", "tr", "va", "full")
    assert ref == cache_keys(settings, "enc", "tr", "va", "full")
    other_seed = cache_keys(tiny_spec(seed=1).resolve("quick"), "enc", "tr", "va", "full")
    assert other_seed["base"] != ref["base"] and other_seed["adapted"] != ref["adapted"]
    longer = cache_keys(tiny_spec().resolve("full"), "enc", "tr", "va", "full")
    assert longer["base"] == ref["base"] and longer["adapted"] != ref["adapted"]  # the probe is shared
    lora = cache_keys(settings, "enc", "tr", "va", "lora")
    assert lora["base"] == ref["base"] and lora["adapted"] != ref["adapted"]
    for changed in (("x", "tr", "va"), ("enc", "x", "va"), ("enc", "tr", "x")):
        assert cache_keys(settings, *changed, "full")["base"] != ref["base"]


# --- building --------------------------------------------------------------------------------------------------


def test_base_is_the_encoder_with_a_linear_probe_head(built, splits):
    from transformers import AutoTokenizer

    from harness.models.pooling import MeanPoolingForSequenceClassification

    _, full, _ = built
    info = full.info["base"]
    assert info["C"] in (0.1, 1.0, 10.0) and set(info["val_accuracy_by_C"]) == {"0.1", "1.0", "10.0"}
    assert 0.0 <= info["val_accuracy"] <= 1.0 and info["n_train"] == 40
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", BUILD_FILE):
        assert (full.base_dir / name).is_file(), name
    model = MeanPoolingForSequenceClassification.from_pretrained(full.base_dir).eval()
    assert model.config.id2label == {0: "negative", 1: "positive"} and model.config.normalize is True
    weight = model.classifier.weight.detach()
    torch.testing.assert_close(weight[0], -weight[1])  # the symmetric softmax form of a binary probe
    tok = AutoTokenizer.from_pretrained(full.base_dir)
    _, validation = splits
    batch = tok(validation.frame["text"].tolist(), padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**batch).logits.argmax(1).numpy()
    assert float((preds == validation.frame["label"].to_numpy()).mean()) == pytest.approx(info["val_accuracy"])


def test_head_from_probe_keeps_the_probe_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)), np.arange(50) % 2
    clf = LogisticRegression(C=1.0).fit(x, y)
    weight, bias = head_from_probe(clf, 2)
    probs = torch.softmax(torch.tensor(x, dtype=torch.float32) @ weight.T + bias, dim=1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(x), atol=1e-5)


def test_full_fine_tuning_changes_encoder_and_head(built):
    _, full, _ = built
    base = load_file(str(full.base_dir / "model.safetensors"))
    adapted = load_file(str(full.adapted_dir / "model.safetensors"))
    assert set(base) == set(adapted)
    changed = [k for k in base if not torch.equal(base[k], adapted[k])]
    assert "classifier.weight" in changed and any(k.startswith("encoder.encoder.layer.") for k in changed)
    info = full.info["adapted"]
    assert info["stage"] == "full" and info["steps"] == 5 and len(info["loss_per_epoch"]) == 1
    assert (full.adapted_dir / "tokenizer.json").is_file()


def test_lora_writes_an_adapter_on_the_same_base(built):
    from peft import PeftModel

    from harness.models.pooling import MeanPoolingForSequenceClassification

    _, full, lora = built
    assert lora.base_dir == full.base_dir and lora.info["base"]["reused"] is True
    assert (lora.adapted_dir / "adapter_config.json").is_file()
    assert (lora.adapted_dir / "adapter_model.safetensors").is_file()
    config = json.loads((lora.adapted_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(lora.base_dir) and config["r"] == 2
    assert config["lora_alpha"] == 4
    base = MeanPoolingForSequenceClassification.from_pretrained(lora.base_dir).eval()
    ids = torch.tensor([[2, 5, 11, 20, 3]])
    with torch.no_grad():
        before = base(input_ids=ids).logits.clone()
        adapted = PeftModel.from_pretrained(base, lora.adapted_dir).eval()
        after = adapted(input_ids=ids).logits
    assert not torch.allclose(before, after)
    assert any("lora_A" in k for k in load_file(str(lora.adapted_dir / "adapter_model.safetensors")))


def test_second_call_reuses_the_cache(built, encoder_dir, splits, monkeypatch):
    out, full, _ = built

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(demo_train, "_build_base", boom)
    monkeypatch.setattr(demo_train, "_build_adapted", boom)
    again = build(splits, encoder_dir, out)
    assert (again.base_dir, again.adapted_dir) == (full.base_dir, full.adapted_dir)
    assert again.info["base"]["reused"] and again.info["adapted"]["reused"]
    assert again.info["adapted"]["val_accuracy"] == full.info["adapted"]["val_accuracy"]


def test_interrupted_build_leaves_nothing_to_reuse(encoder_dir, splits, tmp_path, monkeypatch):
    real = demo_train._build_adapted

    def interrupted(settings, adaptation, base_dir, train, validation, work, device, progress):
        (work / "model.safetensors").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_train, "_build_adapted", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(splits, encoder_dir, tmp_path)
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["base"]  # no adapted folder, no temp
    monkeypatch.setattr(demo_train, "_build_adapted", real)
    models = build(splits, encoder_dir, tmp_path)
    assert models.info["base"]["reused"] and not models.info["adapted"]["reused"]
    assert (models.adapted_dir / BUILD_FILE).is_file()


def test_same_seed_same_weights(built, encoder_dir, splits, tmp_path):
    _, full, _ = built
    again = build(splits, encoder_dir, tmp_path)
    a = load_file(str(full.adapted_dir / "model.safetensors"))
    b = load_file(str(again.adapted_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_refused_before_training(encoder_dir, splits, tmp_path):
    train, validation = splits
    with pytest.raises(SpecError, match="did you mean 'quick'"):
        build_demo_models(tiny_spec(), train, validation, encoder_dir, tmp_path, "full", "quik")
    with pytest.raises(SpecError, match="unknown adaptation"):
        build_demo_models(tiny_spec(), train, validation, encoder_dir, tmp_path, "prefix", "quick")
    relabelled = SplitData(ref=validation.ref, frame=validation.frame, classes=("neg", "pos"))
    with pytest.raises(DataError, match="different classes"):
        build_demo_models(tiny_spec(), train, relabelled, encoder_dir, tmp_path, "full", "quick")
    one_class = SplitData(ref=train.ref, frame=train.frame[train.frame["label"] == 0], classes=CLASSES)
    with pytest.raises(DataError, match="lacks some classes"):
        build_demo_models(tiny_spec(), one_class, validation, encoder_dir, tmp_path, "full", "quick")
    assert not any(tmp_path.iterdir())


def test_demo_models_save_the_tokenizers_pad_token_id(built):
    """The demo's own models carry pad_token_id in config.json, so scoring them notes nothing about it."""
    from transformers import AutoTokenizer

    _, full, _ = built
    pad = AutoTokenizer.from_pretrained(full.base_dir).pad_token_id
    assert pad is not None
    for folder in (full.base_dir, full.adapted_dir):
        assert json.loads((folder / "config.json").read_text())["pad_token_id"] == pad, folder
