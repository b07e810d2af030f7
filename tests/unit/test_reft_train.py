"""The native ReFT trainer (harness.demo.reft_train) on a toy task with a tiny llama: loss falls, the base is
untouched, R stays orthonormal, runs repeat under a seed, and the saved adapter reproduces the trained edit."""

from __future__ import annotations

import random

import pytest
import torch

from _reft_models import VOCAB, tiny
from harness.demo.reft_train import ReftTrainConfig, arc_pairs, encode_pairs, train_reft
from harness.errors import ModelError
from harness.models.reft import InterventionEngine
from harness.models.reft_io import load_reft, save_reft


class CharTokenizer:
    """Characters to ids 3..VOCAB-1, BOS 1, EOS 2, PAD 0."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [3 + (ord(c) % (VOCAB - 3)) for c in text]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def toy_pairs(n: int = 32, seed: int = 0) -> list[tuple[str, str]]:
    """Random prompts of letters; the answer (one token, no EOS) is the prompt's first letter: the first-position
    edit must mark it and the last-position edit read it through attention."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(4, 9)))
        out.append((prompt + "=", prompt[0]))
    return out


CFG = ReftTrainConfig(layers=(1, 2), positions="f1+l1", rank=4, lr=5e-2, epochs=6, batch_size=8, add_eos=False,
                      progress=False)


@pytest.fixture(scope="module")
def trained():
    model = tiny("llama", init=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    adapter, stats = train_reft(model, CharTokenizer(), toy_pairs(), CFG)
    return model, before, flags, adapter, stats


def test_training_reduces_loss_and_leaves_the_base_alone(trained):
    model, before, flags, adapter, stats = trained
    assert stats.steps == 6 * 4 and stats.examples == 32 and len(stats.epoch_losses) == 6
    assert stats.epoch_losses[-1] < 0.6 * stats.epoch_losses[0], stats.epoch_losses
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not model._forward_hooks and not model._forward_pre_hooks
    for mod in adapter.interventions:
        R = mod.R.detach().double()
        assert (R @ R.T - torch.eye(4, dtype=R.dtype)).abs().max() < 1e-5
        assert not mod.R.requires_grad
    assert [s.positions for s in adapter.specs] == ["f1+l1", "f1+l1"]
    assert adapter.info["training"]["lr"] == CFG.lr


def test_training_is_seeded(trained):
    _, _, _, adapter, _ = trained
    again, _ = train_reft(tiny("llama", init=0.3), CharTokenizer(), toy_pairs(), CFG)
    for a, b in zip(adapter.interventions, again.interventions):
        assert torch.equal(a.R, b.R) and torch.equal(a.W, b.W) and torch.equal(a.b, b.b)


def test_saved_adapter_reproduces_the_trained_model(trained, tmp_path):
    model, _, _, adapter, _ = trained
    save_reft(adapter, tmp_path / "r", base_name="tiny")
    loaded = load_reft(tmp_path / "r")
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    outs = []
    for ad in (adapter, loaded):
        engine = InterventionEngine(model, ad)
        with torch.no_grad():
            outs.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
        engine.remove()
    for a, b in zip(adapter.interventions, loaded.interventions):
        assert torch.equal(a.R, b.R) and torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert torch.equal(outs[0], outs[1])
    assert loaded.info["training"]["steps"] == 24


def test_bad_settings_are_clear_errors():
    model, tok = tiny("llama"), CharTokenizer()
    with pytest.raises(ModelError, match="layers out of range"):
        train_reft(model, tok, toy_pairs(4), ReftTrainConfig(layers=(7,), progress=False))
    with pytest.raises(ModelError, match="unknown ReFT kind"):
        train_reft(model, tok, toy_pairs(4), ReftTrainConfig(kind="noreft", progress=False))
    with pytest.raises(ModelError, match="no training pairs"):
        train_reft(model, tok, [], ReftTrainConfig(progress=False))
    with pytest.raises(ModelError, match="too long"):
        encode_pairs(tok, [("a", "b" * 40)], max_length=16)
    prompt, answer = encode_pairs(tok, [("abcdefgh", "xy")], max_length=6)[0]  # prompt cut from the left
    assert prompt == tok("abcdefgh")["input_ids"][-3:] and answer == tok("xy", False)["input_ids"] + [2]


def test_arc_pairs_reads_gold_by_label_position(tmp_path):
    f = tmp_path / "arc.jsonl"
    f.write_text('{"id": "1", "question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, '
                 '"answerKey": "2"}\n')
    assert arc_pairs(f) == [("Question: Q?\nAnswer:", " b")]
