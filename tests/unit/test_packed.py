"""Packed (padding-free) encoder forward: same logits as padded batches, hooks that leave other forwards alone,
and refusals that say why. On CPU the exact one-sequence-at-a-time reference attention runs; the flash kernel
itself is checked by the ``gpu`` test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

from harness.errors import ModelError
from harness.models.packed import PackedEncoder, Packing, packing_unavailable_reason
from harness.models.scorer import Batch, HFScorer
from harness.predict import predict

try:
    from tests.unit.test_predict import tokenized
except ImportError:  # pragma: no cover - depends on the layout
    from test_predict import tokenized

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             num_labels=3)


def _model(cls, cfg_cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(cfg_cls(**{**SMALL, **kw})).eval()


def _batch(lengths, pad_id=0, left=False, seed=0):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        sl = slice(width - n, width) if left else slice(0, n)
        ids[i, sl] = rng.integers(5, 100, size=n)
        mask[i, sl] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _mean_pooling():
    from harness.models.pooling import MeanPoolingConfig, MeanPoolingForSequenceClassification, register

    register()
    torch.manual_seed(0)
    enc = BertConfig(**{k: v for k, v in SMALL.items() if k != "num_labels"})
    return MeanPoolingForSequenceClassification(MeanPoolingConfig(encoder=enc.to_dict(), num_labels=3)).eval()


@pytest.mark.parametrize("make,pad_id,left", [
    (lambda: _model(BertForSequenceClassification, BertConfig), 0, False),
    (lambda: _model(RobertaForSequenceClassification, RobertaConfig, pad_token_id=1), 1, False),
    (_mean_pooling, 0, False),
    (_mean_pooling, 0, True),  # CLS heads read position 0, a pad under left padding; masked pooling does not
])
def test_packed_logits_equal_padded(make, pad_id, left):
    model = make()
    ids, mask = _batch([7, 5, 3, 7, 1, 6], pad_id=pad_id, left=left)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        packer = PackedEncoder(model, require_kernel=False)
        with packer.packing(Packing.from_mask(mask.numpy(), torch.device("cpu"))):
            packed = model(input_ids=ids, attention_mask=mask).logits
        outside = model(input_ids=ids, attention_mask=mask).logits  # no packing active: plain sdpa
        packer.close()
        after = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(packed, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(outside, ref) and torch.equal(after, ref)
    assert getattr(model, "base_model", model).config._attn_implementation == "sdpa"


def test_packing_from_mask():
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    p = Packing.from_mask(mask, torch.device("cpu"))
    assert p.flat_index.tolist() == [0, 1, 2, 5, 6, 8, 9, 10, 11]
    assert p.cu_seqlens.tolist() == [0, 3, 5, 9] and p.cu_seqlens.dtype == torch.int32
    assert p.max_len == 4 and p.shape == (3, 4)
    assert p.runs == ((0, 1, 3), (3, 1, 2), (5, 1, 4))
    sorted_mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]])
    assert Packing.from_mask(sorted_mask, torch.device("cpu")).runs == ((0, 2, 3), (6, 1, 2), (8, 2, 1))


def test_attention_by_runs_equals_per_sequence_attention():
    from harness.models.packed import _attention_by_runs

    rng = torch.Generator().manual_seed(0)
    mask = np.zeros((6, 5), np.int64)
    for i, n in enumerate([5, 5, 4, 2, 2, 2]):
        mask[i, :n] = 1
    p = Packing.from_mask(mask, torch.device("cpu"))
    q, k, v = (torch.randn(20, 3, 8, generator=rng) for _ in range(3))
    got = _attention_by_runs(q, k, v, p.runs, 0.3)
    cu = p.cu_seqlens.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        want = torch.nn.functional.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1),
                                                                v[s:e].transpose(0, 1), scale=0.3).transpose(0, 1)
        torch.testing.assert_close(got[s:e], want)


def test_unsupported_models_are_refused_with_reason():
    distil = _model(DistilBertForSequenceClassification, DistilBertConfig, dim=32, n_layers=2, n_heads=4,
                    hidden_dim=64)
    with pytest.raises(ModelError, match="distilbert"):
        PackedEncoder(distil, require_kernel=False)
    bert = _model(BertForSequenceClassification, BertConfig)
    assert "CUDA" in packing_unavailable_reason(bert)
    with pytest.raises(ModelError, match="CUDA"):
        PackedEncoder(bert)
    eager = _model(BertForSequenceClassification, BertConfig, attn_implementation="eager")
    with pytest.raises(ModelError, match="eager"):
        PackedEncoder(eager, require_kernel=False)


def test_a_layer_that_skips_packed_attention_is_caught():
    model = _model(BertForSequenceClassification, BertConfig)
    packer = PackedEncoder(model, require_kernel=False)
    inner = model.bert.encoder.layer[1].attention.self
    plain = inner.forward
    inner.forward = lambda *a, **kw: plain(*a, **{k: v for k, v in kw.items() if not k.startswith("harness_")})
    ids, mask = _batch([4, 2])
    with pytest.raises(ModelError, match="2 packed attention calls"), torch.no_grad():
        with packer.packing(Packing.from_mask(mask.numpy(), torch.device("cpu"))):
            model(input_ids=ids, attention_mask=mask)


def test_packing_that_does_not_match_the_batch_is_refused():
    model = _model(BertForSequenceClassification, BertConfig)
    packer = PackedEncoder(model, require_kernel=False)
    ids, mask = _batch([4, 2])
    other = np.ones((3, 4), np.int64)
    with pytest.raises(ModelError, match="does not match"), torch.no_grad():
        with packer.packing(Packing.from_mask(other, torch.device("cpu"))):
            model(input_ids=ids, attention_mask=mask)


def test_scorer_packs_only_where_it_pays():
    model = _model(BertForSequenceClassification, BertConfig)
    assert not HFScorer(model).packed  # CPU: padded
    with pytest.raises(ModelError, match="packed"):
        HFScorer(model, packed=True)


def test_scorer_falls_back_to_padded_when_a_layer_bypasses_packing(monkeypatch, caplog):
    model = _model(BertForSequenceClassification, BertConfig)
    # pretend the model qualifies (CPU here): the scorer's auto check and the packer's own check
    monkeypatch.setattr("harness.models.scorer.packing_unavailable_reason", lambda m: None)
    monkeypatch.setattr("harness.models.packed.packing_unavailable_reason", lambda m: None)
    scorer = HFScorer(model)
    assert scorer.packed
    inner = model.bert.encoder.layer[0].attention.self
    plain = inner.forward
    inner.forward = lambda *a, **kw: plain(*a, **{k: v for k, v in kw.items() if not k.startswith("harness_")})
    ids, mask = _batch([5, 3])
    batch = Batch(ids.numpy(), mask.numpy(), None, np.arange(2))
    with caplog.at_level("WARNING"):
        got = scorer.predict_logits(batch)
    assert not scorer.packed and "scoring padded" in caplog.text
    inner.forward = plain
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_packed_flash_kernel_matches_padded_on_cuda(dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = _model(BertForSequenceClassification, BertConfig, num_hidden_layers=3, hidden_size=64,
                   num_attention_heads=4, intermediate_size=128).to("cuda", dtype)
    tok = tokenized(np.random.default_rng(3).integers(2, 60, size=300))
    padded = predict(HFScorer(model, packed=False), tok, point="p", batch_tokens=2048)
    scorer = HFScorer(model)
    assert scorer.packed
    packed = predict(scorer, tok, point="p", batch_tokens=2048)
    np.testing.assert_allclose(packed.logits, padded.logits, atol=3e-2, rtol=0)
    assert (packed.logits.argmax(1) == padded.logits.argmax(1)).mean() > 0.98


def test_no_attention_mask_is_built_while_packing():
    """Packed forwards drop the 4D mask; building it would cost a device sync per batch on CUDA."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    model = _model(BertForSequenceClassification, BertConfig)
    packer = PackedEncoder(model, require_kernel=False)
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS["harness_packed"]
    ids, mask = _batch([5, 3])
    kw = dict(batch_size=2, q_length=5, kv_length=5, attention_mask=mask.bool(), allow_is_bidirectional_skip=True)
    from transformers.masking_utils import bidirectional_mask_function

    own, other = model.bert.config, _model(BertForSequenceClassification, BertConfig).bert.config
    assert mask_fn(mask_function=bidirectional_mask_function, config=own, **kw) is not None  # padded: a real mask
    with packer.packing(Packing.from_mask(mask.numpy(), torch.device("cpu"))):
        assert mask_fn(mask_function=bidirectional_mask_function, config=own, **kw) is None
        # another model's forward meanwhile still gets its mask
        assert mask_fn(mask_function=bidirectional_mask_function, config=other, **kw) is not None
    packer.close()
