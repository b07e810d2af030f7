"""ReFT interventions under the harness scorers: the causal-LM scorer's batched full forwards and its shared-context
KV-cache path edit the prompt's first/last tokens (the request's context), never the scored continuation, and
equal an independent reference (one unpadded forward per request, no cache, the edit written out in float64 by
its own hooks); alpha = 0 is the plain base bit for bit; the classifier scorer's padded batches equal per-example
forwards."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch

from _causal import byte_bpe, tiny_causal
from _reft_models import adapter as make_adapter, tiny
from harness.models.causal import CausalLMScorer
from harness.models.reft import InterventionEngine, InterventionSpec
from harness.models.scorer import Batch, HFScorer

SPECS = [InterventionSpec(0, "block_output", 1, 1), InterventionSpec(1, "block_output", 0, 2)]


@pytest.fixture(scope="module")
def lm():
    tok = byte_bpe("llama")
    return tiny_causal("llama", tok, seed=5), tok


def _adapter(kind: str, n_layers: int = 2):
    ad = make_adapter(kind, SPECS, seed=3)
    ad.num_layers = n_layers
    return ad


def _requests(seed: int = 0, n_questions: int = 6, vocab: int = 300) -> list[tuple[list[int], list[int]]]:
    """Multiple-choice requests as token pairs: 3-4 choices (1-4 tokens) per context of 3-14 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_questions):
        ctx = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 14))]
        out += [(ctx, [rng.randrange(3, vocab) for _ in range(rng.randint(1, 4))]) for _ in range(rng.randint(3, 4))]
    return out


@contextlib.contextmanager
def edited(model, ad, alpha: float, plen: int):
    """Own forward hooks (batch of one, no padding): each intervention edits pyreft's first/last prompt positions
    of a ``plen``-token prompt (counts capped at plen // 2) by its formula, in float64."""
    handles = []
    for spec, mod in zip(ad.specs, ad.interventions):
        f, la = min(spec.first_n, plen // 2), min(spec.last_n, plen // 2)
        pos = sorted(set(range(f)) | set(range(plen - la, plen)))
        R, W, b = (t.detach().double() for t in (mod.R, mod.W, mod.b))

        def hook(module, args, out, pos=pos, R=R, W=W, b=b, kind=ad.kind):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            hp = h[0, pos].double()
            low = hp @ W.T + b - (hp @ R.T if kind == "loreft" else 0)
            h[0, pos] = (hp + alpha * (low @ R)).to(h.dtype)
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

        handles.append(model.model.layers[spec.layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def reference(model, ad, alpha: float, ctx: list[int], cont: list[int], max_length: int) -> float:
    """One request alone: input ``(ctx + cont)[-(L+1):][:-1]``; the prompt is what is left of ``ctx``."""
    seq = (ctx + cont)[-(max_length + 1):]
    with edited(model, ad, alpha, len(seq) - len(cont)):
        logits = model(input_ids=torch.tensor([seq[:-1]]), use_cache=False).logits[0]
    logp = torch.log_softmax(logits.double(), -1)[-len(cont):]
    return float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())


@torch.no_grad()
def reference_greedy(model, ad, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache, every step re-running the whole sequence with the prompt edited."""
    seq = list(prompt)
    for _ in range(n):
        with edited(model, ad, 1.0, len(prompt)):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq[len(prompt):]


@pytest.mark.parametrize("share_context", [True, False])
@pytest.mark.parametrize("kind", ["loreft", "direft"])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_multiple_choice_equals_the_per_example_reference(lm, share_context, kind, alpha):
    model, tok = lm
    pairs = _requests()
    ad = _adapter(kind)
    scorer = CausalLMScorer(model, tok, batch_tokens=40, share_context=share_context)  # several padded batches
    engine = InterventionEngine(model, ad, alpha=alpha)
    try:
        ll, _ = scorer.score_tokens(pairs)
        engine.apply(0.0)
        base_ll, _ = scorer.score_tokens(pairs)
    finally:
        engine.remove()
    ref = np.array([reference(model, ad, alpha, c, x, scorer.max_length) for c, x in pairs])
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-4)
    assert np.abs(ll - base_ll).max() > 1e-2  # the edit matters, so the check above is not vacuous


def test_left_truncated_contexts_edit_what_is_left_of_the_prompt(lm):
    """Inputs longer than max_length lose the context's first tokens; the prompt is the remaining context."""
    model, tok = lm
    pairs = _requests(seed=1)
    ad = _adapter("loreft")
    scorer = CausalLMScorer(model, tok, max_length=8, batch_tokens=30)
    engine = InterventionEngine(model, ad, alpha=1.0)
    try:
        ll, _ = scorer.score_tokens(pairs)
    finally:
        engine.remove()
    ref = np.array([reference(model, ad, 1.0, c, x, 8) for c, x in pairs])
    assert any(len(c) + len(x) > 9 for c, x in pairs)
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("share_context", [True, False])
def test_alpha_zero_is_the_plain_base_bit_for_bit(lm, share_context):
    model, tok = lm
    pairs = _requests(seed=2)
    scorer = CausalLMScorer(model, tok, batch_tokens=40, share_context=share_context)
    base = scorer.score_tokens(pairs)
    engine = InterventionEngine(model, _adapter("loreft"), alpha=0.0)
    try:
        zero = scorer.score_tokens(pairs)
    finally:
        engine.remove()
    assert np.array_equal(base[0], zero[0]) and np.array_equal(base[1], zero[1])


@pytest.mark.parametrize("stride", [None, 4])
def test_rolling_windows_edit_each_windows_context(lm, stride):
    """Perplexity: each window's prompt is its context (the prefix token, or the tokens before its predictions);
    the document's log-likelihood is the sum of the per-window references."""
    from harness.models.causal_windows import rolling_windows

    model, tok = lm
    scorer = CausalLMScorer(model, tok, max_length=16)
    texts = ["Plants need water, air and light to grow; animals eat plants or other animals.",
             "Students measured the mass of a rock."]
    ad = _adapter("loreft")
    engine = InterventionEngine(model, ad, alpha=1.0)
    try:
        got, _ = scorer.loglikelihood_rolling(texts, stride=stride)
    finally:
        engine.remove()
    want = [sum(reference(model, ad, 1.0, c, x, 16) for c, x in
                rolling_windows(scorer.encode(t), scorer.prefix_token_id, 16, stride)) for t in texts]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert not np.allclose(got, scorer.loglikelihood_rolling(texts, stride=stride)[0])


def test_generation_through_the_scorer_edits_the_prompt_only(lm):
    """generate_until (left-padded batches, KV cache) equals cache-free greedy decoding of each prompt alone with
    the edit on the prompt's positions only."""
    model, tok = lm
    prompts = ["Question: Which of these is a source", "Water boils at", "The quick brown fox jumps over the"]
    ad = _adapter("loreft")
    scorer = CausalLMScorer(model, tok, batch_size=3)
    engine = InterventionEngine(model, ad, alpha=1.0)
    try:
        got = scorer.generate_until(prompts, stop=[], max_new_tokens=5)
        engine.apply(0.0)
        base = scorer.generate_until(prompts, stop=[], max_new_tokens=5)
    finally:
        engine.remove()
    want = [tok.decode(reference_greedy(model, ad, tok.encode(p), 5), skip_special_tokens=True) for p in prompts]
    assert got == want
    assert got != base


def test_classifier_padded_batches_equal_per_example_forwards():
    """The encoder classifier path (HFScorer, right padding): each row's logits equal its unpadded forward with
    the engine attached (the whole input is the prompt)."""
    model = tiny("bert")
    engine = InterventionEngine(model, make_adapter("loreft", SPECS, seed=3), alpha=1.0)
    try:
        g = torch.Generator().manual_seed(0)
        lengths = [9, 5, 3, 7]
        ids = np.zeros((4, 9), dtype=np.int64)
        mask = np.zeros((4, 9), dtype=np.int64)
        for r, L in enumerate(lengths):
            ids[r, :L] = torch.randint(3, 64, (L,), generator=g).numpy()
            mask[r, :L] = 1
        scorer = HFScorer(model, packed=False)
        got = scorer.predict_logits(Batch(input_ids=ids, attention_mask=mask, token_type_ids=None,
                                          index=np.arange(4)))
        with torch.no_grad():
            alone = [model(input_ids=torch.tensor(ids[r:r + 1, :L])).logits[0].numpy()
                     for r, L in enumerate(lengths)]
        engine.apply(0.0)
        base = scorer.predict_logits(Batch(input_ids=ids, attention_mask=mask, token_type_ids=None,
                                           index=np.arange(4)))
    finally:
        engine.remove()
    np.testing.assert_allclose(got, np.stack(alone), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, base)
