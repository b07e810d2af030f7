"""The runner: length batching under a token budget, input order, batch-size invariance, label alignment."""

from __future__ import annotations

import numpy as np
import pytest

from harness.models.scorer import DummyScorer, HFScorer
from harness.predict import make_batches, pad_batch, predict
from harness.records import SplitRef, SplitRole, SuiteRole, TokenizedSplit


def tokenized(lengths, seed=0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    ids = tuple(rng.integers(5, 40, size=L).astype(np.int32) for L in lengths)
    n = len(lengths)
    return TokenizedSplit(ref=SplitRef("s", "test", SplitRole.TEST, SuiteRole.ID), input_ids=ids,
                          token_type_ids=None, lengths=np.asarray(lengths, dtype=np.int32),
                          labels=np.zeros(n, np.int64), example_ids=np.array([str(i) for i in range(n)]),
                          source_ids=np.array([str(i) for i in range(n)]), max_length=64, n_truncated=0,
                          n_dropped=0, cache_key="k")


@pytest.mark.parametrize("budget", [1, 16, 100, 10_000])
def test_batches_cover_every_row_once_within_budget(budget):
    lengths = np.random.default_rng(1).integers(1, 50, size=200)
    batches = make_batches(lengths, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(200))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= budget


def test_batches_are_sorted_by_length():
    lengths = np.array([3, 9, 1, 7, 5])
    flat = np.concatenate(make_batches(lengths, 10))
    assert list(lengths[flat]) == sorted(lengths, reverse=True)


def test_padding_and_mask():
    tok = tokenized([2, 4])
    b = pad_batch(tok, np.array([0, 1]), pad_id=0)
    assert b.input_ids.shape == (2, 4) and b.attention_mask.sum(1).tolist() == [2, 4]
    assert (b.input_ids[0, 2:] == 0).all()


def test_predictions_in_input_order_and_batch_invariant():
    tok = tokenized(np.random.default_rng(2).integers(1, 30, size=50))
    scorer = DummyScorer(seed=3)
    a = predict(scorer, tok, point="p", batch_tokens=32)
    b = predict(scorer, tok, point="p", batch_tokens=100_000)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-6)
    single = np.concatenate([scorer.predict_logits(pad_batch(tok, np.array([i]), 0)) for i in range(len(tok))])
    np.testing.assert_allclose(a.logits, single, atol=1e-6)
    assert list(a.example_ids) == [str(i) for i in range(50)]


def test_hf_model_results_do_not_depend_on_batch_size(tiny_pair):
    from harness.models.load import load_model

    live = load_model(tiny_pair[0], device="cpu")
    tok = tokenized(np.random.default_rng(4).integers(2, 30, size=40))
    scorer = HFScorer(live.model)
    small = predict(scorer, tok, point="p", batch_tokens=30)
    big = predict(scorer, tok, point="p", batch_tokens=10_000)
    assert small.logits.shape == (40, 2) and small.logits.dtype == np.float32
    np.testing.assert_allclose(small.logits, big.logits, atol=1e-5)


def test_label_columns_reorder_logits():
    tok = tokenized([3, 4, 5])
    scorer = DummyScorer(seed=5)
    plain = predict(scorer, tok, point="p")
    swapped = predict(scorer, tok, point="p", columns=np.array([1, 0]))
    np.testing.assert_array_equal(plain.logits[:, ::-1], swapped.logits)


@pytest.mark.gpu
def test_cuda_runner_matches_cpu(tiny_pair):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from harness.models.load import load_model

    tok = tokenized(np.random.default_rng(6).integers(2, 30, size=64))
    cpu = predict(HFScorer(load_model(tiny_pair[0], device="cpu").model), tok, point="p")
    gpu = predict(HFScorer(load_model(tiny_pair[0], device="cuda").model), tok, point="p", batch_tokens=128)
    np.testing.assert_allclose(cpu.logits, gpu.logits, atol=1e-4)
