"""Prepacked bf16 linear layers on CPU: bit-identical logits, weights re-read every pass (so blends between passes
are seen), forwards restored afterwards (also on error), and nothing done where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.models.prepack import prepack_unavailable_reason, prepacked_linears
from harness.models.scorer import HFScorer
from harness.predict import predict

try:
    from tests.unit._models import bert, inputs
    from tests.unit.test_predict import tokenized
except ImportError:  # pragma: no cover - depends on the layout
    from _models import bert, inputs
    from test_predict import tokenized

NATIVE_BF16 = prepack_unavailable_reason(torch.nn.Linear(2, 2).to(torch.bfloat16)) is None
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU runs no native bf16 oneDNN matmul")


def _linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


@needs_bf16
@torch.inference_mode()
def test_prepacked_logits_are_bit_identical_and_forwards_restored():
    model = bert(1, dtype=torch.bfloat16)
    batch = inputs(n=5, length=9)
    ref = model(**batch).logits
    with prepacked_linears(model) as n:
        assert n == len(_linears(model)) > 0
        assert all("forward" in m.__dict__ for m in _linears(model))
        packed = model(**batch).logits
    assert torch.equal(packed, ref)
    assert not any("forward" in m.__dict__ for m in _linears(model))


@needs_bf16
@torch.inference_mode()
def test_each_pass_reads_the_current_weights():
    """A blend writes weights in place between passes; the next pass must score the new weights."""
    model, other = bert(1, dtype=torch.bfloat16), bert(2, dtype=torch.bfloat16)
    scorer = HFScorer(model)
    tok = tokenized([12, 7, 3, 9, 12, 5])
    first = predict(scorer, tok, point="a").logits
    for p, q in zip(model.parameters(), other.parameters()):
        p.copy_(q)
    second = predict(scorer, tok, point="b").logits
    expected = predict(HFScorer(other), tok, point="c").logits
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, expected)


@needs_bf16
def test_forwards_restored_when_the_pass_fails():
    model = bert(1, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="boom"), prepacked_linears(model):
        raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in _linears(model))


@needs_bf16
@torch.inference_mode()
def test_scorer_matches_unpacked_forward_over_a_split():
    model = bert(3, dtype=torch.bfloat16)
    tok = tokenized([30, 1, 17, 17, 4, 25, 2, 9], seed=2)
    got = predict(HFScorer(model), tok, point="x", batch_tokens=40).logits
    ids = np.zeros((len(tok.lengths), int(tok.lengths.max())), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(tok.input_ids):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    ref = torch.cat([model(input_ids=torch.from_numpy(ids[i:i + 1, :tok.lengths[i]]),
                           attention_mask=torch.from_numpy(mask[i:i + 1, :tok.lengths[i]])).logits.float()
                     for i in range(len(ids))]).numpy()
    np.testing.assert_allclose(got, ref, atol=0.02)  # batching changes bf16 rounding, packing does not


def test_nothing_is_packed_where_it_does_not_apply():
    fp32 = bert(1)
    assert "prepacking is for bf16" in prepack_unavailable_reason(fp32)
    with prepacked_linears(fp32) as n:
        assert n == 0
        assert not any("forward" in m.__dict__ for m in _linears(fp32))


@needs_bf16
def test_layers_with_overridden_forward_are_left_alone():
    model = bert(1, dtype=torch.bfloat16)
    hooked = _linears(model)[0]
    own = hooked.forward
    wrapper = hooked.forward = lambda x: own(x)  # e.g. another library's wrapper
    with prepacked_linears(model) as n:
        assert n == len(_linears(model)) - 1
        assert hooked.__dict__["forward"] is wrapper
    assert hooked.__dict__["forward"] is wrapper  # still the other library's
