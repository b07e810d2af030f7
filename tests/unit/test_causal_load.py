"""load_causal_lm: a saved tiny causal LM loads (pad token set); classifiers and checkpoints with missing
weights are refused with ModelError (never scored with random weights)."""

from __future__ import annotations

import pytest
import torch

from _causal import byte_bpe, tiny_causal
from harness.errors import ModelError
from harness.models.causal_load import load_causal_lm


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = byte_bpe("gpt2")
    model = tiny_causal("gpt2", tok, seed=2)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def test_loads_a_causal_lm_with_eos_padding(saved):
    path, model, _ = saved
    loaded = load_causal_lm(path)
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id and loaded.id2label == {}
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)


def test_refuses_a_sequence_classifier(saved, tmp_path):
    from transformers import GPT2ForSequenceClassification

    path, model, tok = saved
    clf = GPT2ForSequenceClassification(model.config)
    clf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a causal language model"):
        load_causal_lm(tmp_path)


def test_refuses_weights_that_would_be_random(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    path, model, tok = saved
    state = load_file(path / "model.safetensors")
    state.pop(next(k for k in state if k.endswith("h.0.mlp.c_fc.weight")))
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for f in path.iterdir():
        if f.name != "model.safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelError, match="initialise at random"):
        load_causal_lm(tmp_path)
