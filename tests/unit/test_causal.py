"""CausalLMScorer against an independent plain-torch reference on tiny GPT-2 and Llama models (fp32): per-request
log-likelihoods, batch-size invariance, left truncation, rolling windows, greedy generation vs model.generate."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from _causal import byte_bpe, reference_loglik, tiny_causal
from harness.models.causal import CausalLMScorer, ensure_pad_token
from harness.models.causal_generate import cut_at_stop
from harness.models.causal_windows import model_input, rolling_windows

STYLES = ["gpt2", "llama"]
REQUESTS = [
    ("Question: Which is a source of energy for plants?\nAnswer:", " sunlight"),
    ("Question: Which is a source of energy for plants?\nAnswer:", " the rock"),
    ("Question: Which is a source of energy for plants?\nAnswer:", " a"),  # shares the context: KV cache path
    ("Question: Is the sky blue?\nAnswer:", " no"),
    ("Question: Is the sky blue?\nAnswer: ", "yes"),  # trailing space moves to the continuation
    ("Plants need water", ", air and light to grow."),
    ("", "Water boils"),  # empty context: the prefix token conditions it
    ("The quick brown fox jumps over the lazy dog. " * 8, " Water"),  # longer than 64 tokens: left truncation
]
TEXTS = ["The quick brown fox jumps over the lazy dog. " * 6, "Plants need water.", "Students measured " * 30]


@pytest.fixture(scope="module", params=STYLES)
def pair(request):
    tok = byte_bpe(request.param)
    return tiny_causal(request.param, tok, seed=1), tok


def test_loglikelihood_matches_reference_at_every_batch_size(pair):
    model, tok = pair
    results = [CausalLMScorer(model, tok, batch_tokens=bt, batch_size=bs, share_context=share).loglikelihood(REQUESTS)
               for bt, bs, share in [(1, 1, False), (200, 3, True), (10_000, 64, False), (10_000, 64, True)]]
    scorer = CausalLMScorer(model, tok)
    ref = [reference_loglik(model, *scorer.encode_pair(c, x), scorer.max_length) for c, x in REQUESTS]
    for res in results:
        assert res.loglik.dtype == np.float64 and res.is_greedy.dtype == bool and res.n_tokens.dtype == np.int64
        np.testing.assert_allclose(res.loglik, [r[0] for r in ref], atol=1e-4, rtol=0)
        assert res.is_greedy.tolist() == [r[1] for r in ref]
        assert res.n_tokens.tolist() == [len(scorer.encode_pair(c, x)[1]) for c, x in REQUESTS]
    np.testing.assert_allclose(results[0].loglik, results[2].loglik, atol=1e-5, rtol=0)


def test_encode_pair_moves_trailing_whitespace_and_splits_the_whole_encoding(pair):
    model, tok = pair
    s = CausalLMScorer(model, tok)
    ctx, cont = s.encode_pair("Question: Is it?\nAnswer: ", "yes")
    assert ctx == s.encode("Question: Is it?\nAnswer:")
    assert cont == s.encode("Question: Is it?\nAnswer: yes")[len(ctx):]
    assert s.encode_pair("", "Water")[0] == [s.prefix_token_id]
    # a text that starts with the prefix token's text gets no extra special tokens
    assert s.encode(tok.decode(s.prefix_token_id) + "Water")[:2] != [s.prefix_token_id] * 2


def test_empty_continuation_is_an_error(pair):
    with pytest.raises(ValueError, match="encodes to no tokens"):
        CausalLMScorer(*pair).loglikelihood([("Question:", "")])


def test_rolling_matches_reference_windows_and_is_batch_invariant(pair):
    model, tok = pair
    s = CausalLMScorer(model, tok, batch_tokens=100)
    for window, stride in [(None, None), (16, None), (16, 5)]:
        ll, n = s.loglikelihood_rolling(TEXTS, max_length=window, stride=stride)
        L = window or s.max_length
        for i, text in enumerate(TEXTS):
            tokens = s.encode(text)
            ref = sum(reference_loglik(model, c, x, L)[0] for c, x in rolling_windows(tokens, s.prefix_token_id, L,
                                                                                        stride))
            assert n[i] == len(tokens)
            assert ll[i] == pytest.approx(ref, abs=1e-4)
        ll_big, _ = CausalLMScorer(model, tok, batch_tokens=10**6).loglikelihood_rolling(TEXTS, window, stride)
        np.testing.assert_allclose(ll, ll_big, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="exceeds the model's"):
        s.loglikelihood_rolling(TEXTS, max_length=s.max_length + 1)


def test_rolling_windows_cover_every_token_once_within_the_length():
    rng = random.Random(0)
    for _ in range(200):
        tokens = list(range(1, rng.randint(0, 60)))
        L = rng.randint(1, 20)
        stride = rng.choice([None, rng.randint(1, L)])
        windows = rolling_windows(tokens, 0, L, stride)
        assert [t for _, c in windows for t in c] == tokens
        for ctx, cont in windows:
            assert len(ctx) + len(cont) - 1 <= L and ctx
            assert model_input(ctx, cont, L) == (ctx + cont)[:-1]
    with pytest.raises(ValueError, match="stride"):
        rolling_windows([1, 2], 0, 4, stride=5)


def _one_at_a_time(model, tok, prompt, stop, max_new_tokens):
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return cut_at_stop(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), stop + [tok.eos_token])


PROMPTS = ["Question: Is the sky blue?\nAnswer:", "The", "Plants need water, air and", "Students measured the mass"]


@pytest.mark.parametrize("stop", [[], ["\n", "."], ["e"]])
def test_generation_is_batch_invariant_and_equals_generate_one_prompt_at_a_time(pair, stop):
    model, tok = pair
    outs = [CausalLMScorer(model, tok, batch_size=bs).generate_until(PROMPTS, stop=stop, max_new_tokens=12)
            for bs in (1, 2, 4)]
    assert outs[0] == outs[1] == outs[2]
    assert outs[0] == [_one_at_a_time(model, tok, p, stop, 12) for p in PROMPTS]
    assert not any(s in o for o in outs[0] for s in stop)


def test_generation_rejects_max_new_tokens_beyond_the_model(pair):
    with pytest.raises(ValueError, match="max_new_tokens"):
        CausalLMScorer(*pair).generate_until(["x"], stop=[], max_new_tokens=64)


def test_missing_pad_token_uses_eos_with_a_note(caplog):
    tok = byte_bpe("gpt2")
    assert tok.pad_token_id is None
    with caplog.at_level(logging.INFO, logger="harness.models.causal"):
        ensure_pad_token(tok)
    assert tok.pad_token_id == tok.eos_token_id and "no pad token" in caplog.text


def test_model_input_truncates_left_and_rejects_long_continuations():
    assert model_input([1, 2, 3], [4, 5], 3) == [2, 3, 4]
    with pytest.raises(ValueError, match="does not fit"):
        model_input([1], [2, 3, 4], 2)


def test_choices_share_one_row_and_unshared_rows_are_hflm_inputs():
    from harness.models.causal_shared import build_rows, plan_batches

    ctx = [5, 6, 7]
    pairs = [(ctx, [8, 9]), ([1, 2], [3]), (ctx, [10]), (list(range(1, 10)), [11, 12])]
    rows = build_rows(pairs, max_length=6, share=True)
    assert [r.requests for r in rows] == [(0, 2), (1,), (3,)]
    assert rows[0].prefix == tuple(ctx) and rows[0].branches == ((8,), ()) and rows[0].length == 4
    assert rows[2].prefix + rows[2].branches[0] == tuple(model_input(*pairs[3], 6))  # left-truncated, alone
    unshared = build_rows(pairs, max_length=6, share=False)
    for row in unshared:
        assert row.prefix + row.branches[0] == tuple(model_input(*pairs[row.requests[0]], 6))
    batches = plan_batches(unshared, batch_tokens=12, batch_size=8)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert all(len(b) * unshared[b[0]].length <= 12 for b in batches if len(b) > 1)


def test_shared_rows_fall_back_to_one_row_per_request_when_the_mask_cannot_apply(pair, caplog):
    model, tok = pair
    want = CausalLMScorer(model, tok, share_context=False).loglikelihood(REQUESTS).loglik
    model.config.sliding_window = 4  # a window shorter than the rows: a 4D tree mask would bypass it
    try:
        with caplog.at_level(logging.INFO, logger="harness.models.causal"):
            got = CausalLMScorer(model, tok).loglikelihood(REQUESTS).loglik
    finally:
        del model.config.sliding_window
    assert "do not share their context" in caplog.text and "sliding window 4" in caplog.text
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_qwen2_shared_rows_match_the_reference():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = byte_bpe("llama")
    torch.manual_seed(4)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, initializer_range=0.2)).float().eval()
    s = CausalLMScorer(model, tok)
    ref = [reference_loglik(model, *s.encode_pair(c, x), s.max_length) for c, x in REQUESTS]
    res = s.loglikelihood(REQUESTS)
    np.testing.assert_allclose(res.loglik, [r[0] for r in ref], atol=1e-4, rtol=0)
    assert res.is_greedy.tolist() == [r[1] for r in ref]


def test_scorer_batching_defaults_follow_the_device_and_the_generation_cache_setting():
    """On an accelerator the pipeline's scorer uses the GPU-tuned budgets (issue 20), on a CPU the scorer's own;
    --generation-cache static reaches generate()."""
    from types import SimpleNamespace

    from harness.pipeline.common import RunOptions
    from harness.pipeline.runners import make_scorer

    tok = byte_bpe("gpt2")
    model = tiny_causal("gpt2", tok)
    for device, cache, want in (("cpu", "dynamic", (512, 32, 32, None)),
                                ("cuda", "static", (32768, 4096, 64, "static")),
                                ("cuda", "dynamic", (32768, 4096, 64, None))):
        live = SimpleNamespace(model=model, tokenizer=tok, device=torch.device(device))
        sc = make_scorer(live, "causal_lm", RunOptions(generation_cache=cache))
        assert (sc.batch_tokens, sc.batch_size, sc.generation_batch_size, sc.generation_cache) == want
    sc = make_scorer(SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cuda")), "causal_lm",
                     RunOptions(batch_tokens=999))
    assert sc.batch_tokens == 999


def test_stop_every_checks_on_schedule_and_finishes_rows_with_a_stop_sequence():
    """StopEvery decodes only on check steps (every k new tokens, and the first), keeps finished rows finished
    and leaves rows without a stop sequence running."""
    from harness.models.causal_generate import StopEvery

    class Tok:
        calls = 0

        def decode(self, ids, skip_special_tokens=True):
            Tok.calls += 1
            return "".join(chr(97 + i) for i in ids)

    crit = StopEvery(Tok(), ["cd", ""], prompt_width=2, every=4)
    ids = torch.tensor([[0, 0, 2, 3], [0, 0, 0, 1]])  # new text "cd" (stop) and "ab"
    assert crit(ids, None).tolist() == [True, False] and Tok.calls == 2
    more = torch.cat([ids, torch.tensor([[5], [2]])], 1)  # 3 new tokens: not a check step
    assert crit(more, None).tolist() == [True, False] and Tok.calls == 2
    more = torch.cat([more, torch.tensor([[5], [3]])], 1)  # 4 new tokens: check; row 1 is now "abcd"
    assert crit(more, None).tolist() == [True, True] and Tok.calls == 3  # the finished row is not decoded again


def test_generation_with_a_stop_sequence_stops_early(pair):
    """A stop sequence ends decoding within STOP_CHECK_EVERY tokens of its appearance, not at max_new_tokens."""
    from harness.models.causal_generate import STOP_CHECK_EVERY

    model, tok = pair
    for prompt in PROMPTS:
        free = CausalLMScorer(model, tok, batch_size=1).generate_until([prompt], stop=[], max_new_tokens=40)[0]
        stop = free[3:6]  # within the first 6 new tokens (each decodes to at least one character)
        if len(stop) < 3 or not stop.strip():
            continue
        calls = []
        handle = model.register_forward_hook(lambda *a: calls.append(1))
        try:
            out = CausalLMScorer(model, tok, batch_size=1).generate_until([prompt], stop=[stop], max_new_tokens=40)
        finally:
            handle.remove()
        assert out == [free.split(stop)[0]]
        assert len(calls) <= 6 + STOP_CHECK_EVERY  # not the 40 of max_new_tokens
        return
    pytest.fail("no usable stop sequence in the tiny model's outputs")


def test_compile_setting_compiles_a_causal_lm_s_decoder_blocks():
    """--compile reaches a language model too: each decoder block is compiled in place (regional compilation),
    lazily, so nothing is traced here."""
    from types import SimpleNamespace

    from harness.pipeline.common import RunOptions
    from harness.pipeline.runners import make_scorer

    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok)
    live = SimpleNamespace(model=model, tokenizer=tok, device=torch.device("cpu"))
    make_scorer(live, "causal_lm", RunOptions())
    assert all(getattr(b, "_compiled_call_impl", None) is None for b in model.model.layers)
    make_scorer(live, "causal_lm", RunOptions(compile=True))
    assert all(b._compiled_call_impl is not None for b in model.model.layers)


class _BarLog:
    """Stands in for harness.progress.progress_bar: records each bar's total, unit and updates."""

    def __init__(self):
        self.bars = []

    def __call__(self, iterable=None, *, desc=None, total=None, unit="it", show=True, **kw):
        from tqdm import tqdm

        record = {"desc": desc, "total": total, "unit": unit, "show": show, "updates": []}
        self.bars.append(record)
        bar = tqdm(iterable, total=total, disable=True)
        bar.update = lambda n=1: record["updates"].append(n)
        return bar


def test_scoring_bars_count_requests_not_batches(pair, monkeypatch):
    """A CPU split of a few large batches sat on ``0/2 batch`` for 20 s: the language-model bars count the
    requests (choices, windows, prompts) and advance by each batch's requests."""
    import harness.models.causal_generate as gen_mod
    import harness.models.causal_shared as shared

    log = _BarLog()
    monkeypatch.setattr(shared, "progress_bar", log)
    monkeypatch.setattr(gen_mod, "progress_bar", log)
    model, tok = pair
    s = CausalLMScorer(model, tok, batch_tokens=200, batch_size=3)
    s.loglikelihood(REQUESTS, desc="base arc/validation")
    s.loglikelihood_rolling(TEXTS, max_length=16, desc="base wiki/test")
    s.generate_until(PROMPTS, stop=["\n"], max_new_tokens=4, desc="base gsm/test")
    mc, rolling, gen = log.bars
    assert (mc["unit"], mc["total"], sum(mc["updates"])) == ("req", len(REQUESTS), len(REQUESTS))
    assert len(mc["updates"]) > 1 and max(mc["updates"]) > 1  # several batches, each counted by its requests
    n_windows = sum(len(rolling_windows(s.encode(t), s.prefix_token_id, 16, None)) for t in TEXTS)
    assert (rolling["unit"], rolling["total"], sum(rolling["updates"])) == ("req", n_windows, n_windows)
    assert (gen["unit"], gen["total"], gen["updates"]) == ("req", len(PROMPTS), [3, 1])
    assert all(b["show"] for b in log.bars)


def test_default_cpu_budget_moves_the_bar_several_times_on_long_rows(monkeypatch):
    """BoolQ-like rows (a ~300-token passage, two choices): the demo's CPU split sat 20-40 s on one batch of the
    old 4,096-token budget. Under the default budget the bar advances once per batch of a few rows, each batch
    counted by its requests, and the results equal one huge batch's."""
    import harness.models.causal_shared as shared

    log = _BarLog()
    monkeypatch.setattr(shared, "progress_bar", log)
    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok, n_positions=1024)
    rng = random.Random(0)
    words = ["plants", "water", "light", "energy", "rock", "sun", "grow", "the", "a", "of"]
    passages = [" ".join(rng.choice(words) for _ in range(240)) + "\nQuestion: is it?\nAnswer:" for _ in range(16)]
    requests = [(p, c) for p in passages for c in (" no", " yes")]
    scorer = CausalLMScorer(model, tok)
    assert scorer.batch_tokens == 512
    assert all(len(scorer.encode(p)) >= 300 for p in passages)
    got = scorer.loglikelihood(requests, desc="base boolq/test")
    (bar,) = log.bars
    assert sum(bar["updates"]) == len(requests) and len(bar["updates"]) >= 5 and set(bar["updates"]) <= {2, 4, 6}
    whole = CausalLMScorer(model, tok, batch_tokens=1 << 20, batch_size=64).loglikelihood(requests)
    np.testing.assert_allclose(got.loglik, whole.loglik, atol=1e-4, rtol=0)
