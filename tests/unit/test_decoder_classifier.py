"""Decoder sequence classifiers (issue #14 item 5): last-token pooling through HFScorer under left and right padding,
and with padding written in a pad id other than the config's. Tiny GPT-2, Llama and Qwen2 classifiers built from
configs (random weights, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.models.scorer import Batch, HFScorer, last_token_inputs, pools_last_token

PAD = 0
# mixed lengths; no real token equals PAD or OTHER_PAD
ROWS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [14, 15], [16, 17, 18, 19, 20], [21], [22, 23, 24, 25, 26, 27, 28, 29]]
OTHER_PAD = 1  # a tokenizer pad id that differs from config.pad_token_id


def classifier(arch: str, seed: int = 0):
    from transformers import (GPT2Config, GPT2ForSequenceClassification, LlamaConfig,
                              LlamaForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification)

    torch.manual_seed(seed)
    if arch == "gpt2":  # absolute position embeddings: left padding shifts them unless positions are given
        cfg = GPT2Config(vocab_size=48, n_embd=16, n_layer=2, n_head=2, n_positions=64, num_labels=3,
                         pad_token_id=PAD, bos_token_id=2, eos_token_id=2)
        return GPT2ForSequenceClassification(cfg).eval()
    kw = dict(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=64, num_labels=3, pad_token_id=PAD)
    if arch == "llama":
        return LlamaForSequenceClassification(LlamaConfig(**kw)).eval()
    return Qwen2ForSequenceClassification(Qwen2Config(**kw)).eval()


def padded(rows: list[list[int]], side: str, pad_id: int) -> Batch:
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        span = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, span] = r
        mask[i, span] = 1
    return Batch(ids, mask, None, np.arange(len(rows)))


@torch.no_grad()
def last_real_token_logits(model, row: list[int]) -> np.ndarray:
    """The head on the hidden state of the row's last token, the row scored alone (no padding at all)."""
    hidden = model.base_model(input_ids=torch.tensor([row])).last_hidden_state[0, -1]
    return model.score(hidden).numpy()


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def model(request):
    return classifier(request.param)


def test_decoder_classifiers_are_recognised(model):
    from transformers import BertConfig, BertForSequenceClassification

    assert pools_last_token(model)
    bert = BertForSequenceClassification(BertConfig(vocab_size=48, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))
    assert not pools_last_token(bert)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pad_id", [PAD, OTHER_PAD], ids=["config-pad", "other-pad"])
def test_mixed_length_batch_pools_the_last_real_token(model, side, pad_id):
    scorer = HFScorer(model, packed=False)
    expected = np.stack([last_real_token_logits(model, r) for r in ROWS])
    alone = np.concatenate([scorer.predict_logits(padded([r], side, pad_id)) for r in ROWS])
    np.testing.assert_allclose(alone, expected, atol=1e-5, rtol=0)
    batched = scorer.predict_logits(padded(ROWS, side, pad_id))
    np.testing.assert_allclose(batched, expected, atol=1e-5, rtol=0)
    assert np.abs(expected - expected[0]).max() > 1e-3  # the rows do differ, so a wrong pooled token would show


def test_transformers_alone_gets_left_padding_or_a_foreign_pad_id_wrong():
    """Why :func:`last_token_inputs` exists: the plain forward pools a pad (foreign pad id) or shifts GPT-2's
    positions (left padding)."""
    model = classifier("gpt2")
    expected = np.stack([last_real_token_logits(model, r) for r in ROWS])
    for side, pad_id in (("left", PAD), ("right", OTHER_PAD)):
        b = padded(ROWS, side, pad_id)
        with torch.no_grad():
            raw = model(input_ids=torch.from_numpy(b.input_ids), attention_mask=torch.from_numpy(b.attention_mask))
        assert np.abs(raw.logits.numpy() - expected).max() > 1e-3, (side, pad_id)


def test_last_token_inputs_rewrites_only_what_it_must():
    right = padded(ROWS, "right", PAD)
    assert last_token_inputs(right, PAD) is right  # the model's own pad id, right padding: untouched
    foreign = padded(ROWS, "right", OTHER_PAD)
    fixed = last_token_inputs(foreign, PAD)
    assert fixed.position_ids is None and (fixed.input_ids[foreign.attention_mask == 0] == PAD).all()
    assert (fixed.input_ids[foreign.attention_mask == 1] == foreign.input_ids[foreign.attention_mask == 1]).all()
    assert (foreign.input_ids[foreign.attention_mask == 0] == OTHER_PAD).all()  # the input is not changed
    left = last_token_inputs(padded([[5, 6, 7], [8]], "left", PAD), PAD)
    assert left.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_predict_is_independent_of_batching_with_a_foreign_pad_id():
    """Through :func:`harness.predict.predict` (right padding by the runner, longest first, dynamic batches)."""
    from harness.predict import predict
    from harness.records import SplitRef, TokenizedSplit

    model = classifier("gpt2")
    n = len(ROWS)
    tok = TokenizedSplit(ref=SplitRef(suite="s", split="test", role="test", suite_role="id"),
                         input_ids=tuple(np.array(r, dtype=np.int32) for r in ROWS), token_type_ids=None,
                         lengths=np.array([len(r) for r in ROWS]), labels=np.zeros(n, dtype=np.int64),
                         example_ids=np.arange(n).astype(str), source_ids=np.arange(n).astype(str),
                         max_length=64, n_truncated=0, n_dropped=0, cache_key="k")
    expected = np.stack([last_real_token_logits(model, r) for r in ROWS])
    for batch_tokens in (1, 16, 4096):
        preds = predict(HFScorer(model, packed=False), tok, point="base", batch_tokens=batch_tokens, pad_id=OTHER_PAD)
        np.testing.assert_allclose(preds.logits, expected, atol=1e-5, rtol=0)
