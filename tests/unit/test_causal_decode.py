"""The sync-free static-cache decoding loop (issue 20): same tokens as transformers' ``generate``, same texts as
the dynamic-cache path, early end on EOS and stop sequences, cache reuse, and when it does not apply. Run on a
CPU with the eager step standing in for the compiled one (one slow test compiles it on the CPU; on a GPU, with CUDA
graphs, benchmarks/gen_step_agree.py checks it against the eager step and benchmarks/lm_gpu.py times it)."""

from __future__ import annotations

import pytest
import torch

from harness.models import causal_decode, causal_generate
from harness.models.causal import CausalLMScorer
from harness.models.causal_decode import CHECK_EVERY, decode_static, graph_loop_unavailable

from _causal import byte_bpe, llm_data_dir, read_jsonl, tiny_causal

PROMPTS = ["Question: Is the sky blue?\nAnswer:", "The", "Plants need water, air and", "Students measured the mass"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request):
    tok = byte_bpe(request.param)
    return tiny_causal(request.param, tok, seed=1), tok


@pytest.fixture
def loop_on_cpu(monkeypatch):
    """generate_greedy takes the loop on a CPU, with the model's eager forward as the step; counts uses."""
    used = []

    def step(model, tuned):
        used.append(tuned)
        return causal_decode.greedy_step(model)
    monkeypatch.setattr(causal_generate, "graph_loop_unavailable", lambda model: None)
    monkeypatch.setattr(causal_generate, "compiled_step", step)
    return used


def _batch(tok, prompts):
    rows = [tok.encode(p) for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("eos_from_output", [False, True])
def test_tokens_equal_generate_with_left_padding_and_eos(pair, eos_from_output):
    """Token for token as ``generate(do_sample=False)``: left-padded rows, and rows that emit the EOS id are padded
    afterwards (the EOS id is taken from the model's own output so that some row really emits it)."""
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    pad = 0
    with torch.no_grad():
        free = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=20,
                              min_new_tokens=20, pad_token_id=pad, eos_token_id=None)[:, ids.shape[1]:]
    eos = [int(free[0, 5])] if eos_from_output else []
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=20,
                             pad_token_id=pad, eos_token_id=eos or None)[:, ids.shape[1]:].tolist()
    got = decode_static(model, ids, mask, max_new_tokens=20, eos_ids=eos, pad_id=pad)
    if eos_from_output:
        assert any(eos[0] in r for r in got)
    assert [r[:len(x)] for r, x in zip(got, ref)] == ref  # generate may end its batch early (all rows at EOS)
    assert all(t == pad for r, x in zip(got, ref) for t in r[len(x):])


def test_texts_equal_the_dynamic_cache_path_with_stops_and_batching(pair, loop_on_cpu):
    model, tok = pair
    for stop in ([], ["\n", "."], ["e"]):
        want = CausalLMScorer(model, tok, batch_size=4).generate_until(PROMPTS, stop=stop, max_new_tokens=30)
        for bs in (1, 3):
            sc = CausalLMScorer(model, tok, batch_size=bs, generation_cache="static", generation_tuned=True)
            assert sc.generate_until(PROMPTS, stop=stop, max_new_tokens=30) == want
    assert loop_on_cpu and all(loop_on_cpu)  # the loop ran, with the tuned compile asked for


def test_a_stop_sequence_ends_decoding_within_two_checks(pair):
    """Rows done by a stop sequence end the loop at most two checks later (the host reads tokens one check old)."""
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS[:2])
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = decode_static(model, ids, mask, max_new_tokens=40, eos_ids=[], pad_id=0,
                            finished=lambda rows: [len(r) >= 1 for r in rows])
    finally:
        handle.remove()
    # the prompt's forward + two chunks of steps (the first chunk's tokens are looked at after the second)
    assert len(out[0]) == 1 + 2 * CHECK_EVERY and len(calls) == 1 + 2 * CHECK_EVERY
    full = decode_static(model, ids, mask, max_new_tokens=40, eos_ids=[], pad_id=0,
                         finished=lambda rows: [False, True])  # one row still open: runs to the end
    assert len(full[0]) == 40 and full[0][:1 + 2 * CHECK_EVERY] == out[0]


def test_one_static_cache_is_kept_and_reused_per_shape(pair):
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    model.__dict__.pop(causal_decode._CACHES_ATTR, None)
    a = decode_static(model, ids, mask, max_new_tokens=5, eos_ids=[], pad_id=0)
    caches = getattr(model, causal_decode._CACHES_ATTR)
    key = (4, causal_decode.CACHE_BUCKET, "cpu", model.dtype)
    state = caches[key]
    b = decode_static(model, ids, mask, max_new_tokens=5, eos_ids=[], pad_id=0)  # reset, not rebuilt
    assert a == b and caches[key] is state
    decode_static(model, ids[:2], mask[:2], max_new_tokens=5, eos_ids=[], pad_id=0)
    assert list(caches) == [(2, causal_decode.CACHE_BUCKET, "cpu", model.dtype)]  # the older one is dropped
    with pytest.raises(ValueError, match="cache length"):
        decode_static(model, ids, mask, max_new_tokens=5, eos_ids=[], pad_id=0, length=ids.shape[1] + 4)


def test_every_row_at_eos_ends_decoding_within_two_checks(pair):
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = decode_static(model, ids, mask, max_new_tokens=40, eos_ids=list(range(len(tok))), pad_id=0)
    finally:
        handle.remove()
    assert len(calls) == 1 + 2 * CHECK_EVERY and all(len(r) == 1 + 2 * CHECK_EVERY and set(r[1:]) == {0} for r in out)


def test_logits_processing_in_the_generation_config_keeps_generate(pair, monkeypatch):
    """generate(do_sample=False) applies repetition_penalty & co.; the loop takes the plain argmax, so such a model
    must not get the loop (review finding: with repetition_penalty=1.3 the two disagreed)."""
    model, tok = pair
    monkeypatch.setattr(causal_decode, "input_device", lambda m: torch.device("cuda"))
    monkeypatch.setattr(model, "_can_compile_fullgraph", True, raising=False)
    assert graph_loop_unavailable(model) is None
    for key, value in (("repetition_penalty", 1.3), ("no_repeat_ngram_size", 3), ("bad_words_ids", [[5]]),
                       ("min_new_tokens", 4), ("suppress_tokens", [7])):
        old = getattr(model.generation_config, key, None)
        setattr(model.generation_config, key, value)
        try:
            assert key in graph_loop_unavailable(model)
        finally:
            setattr(model.generation_config, key, old)
    model.generation_config.repetition_penalty = 1.0  # neutral: the loop applies
    assert graph_loop_unavailable(model) is None
    model.generation_config.repetition_penalty = None


def test_compiled_steps_and_caches_die_with_the_model():
    """Nothing global keeps a model (and its GPU memory) alive once the caller drops it."""
    import gc
    import weakref

    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok)
    ids, mask = _batch(tok, PROMPTS[:1])
    decode_static(model, ids, mask, max_new_tokens=3, eos_ids=[], pad_id=0)
    causal_decode.compiled_step(model)  # the compiled greedy step (compiles lazily, at its first call)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_loop_says_why_it_does_not_apply(pair, monkeypatch):
    model, _ = pair
    assert graph_loop_unavailable(model) == "the model is not on a CUDA device"
    monkeypatch.setattr(causal_decode, "input_device", lambda m: torch.device("cuda"))
    monkeypatch.setattr(model, "_can_compile_fullgraph", False, raising=False)
    assert "compilable" in graph_loop_unavailable(model)
    monkeypatch.setattr(model, "_can_compile_fullgraph", True, raising=False)
    assert graph_loop_unavailable(model) is None
    monkeypatch.setattr(model, "hf_device_map", {"a": 0, "b": 1}, raising=False)
    assert "several devices" in graph_loop_unavailable(model)
    monkeypatch.setattr(model, "hf_device_map", {"a": 0, "b": 0}, raising=False)
    from peft import LoraConfig, get_peft_model

    target = ["c_attn"] if model.config.model_type == "gpt2" else ["q_proj"]
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=target))
    monkeypatch.setattr(peft_model, "_can_compile_fullgraph", True, raising=False)
    assert "peft" in graph_loop_unavailable(peft_model)


def test_on_a_cpu_static_generation_keeps_transformers_generate(pair, caplog):
    model, tok = pair
    with caplog.at_level("INFO", logger="harness.models.causal_generate"):
        out = CausalLMScorer(model, tok, generation_cache="static").generate_until(PROMPTS[:1], stop=[],
                                                                                   max_new_tokens=4)
    assert out and "not on a CUDA device" in caplog.text


def test_a_compiler_failure_falls_back_to_generate_and_other_errors_are_raised(pair, monkeypatch, caplog):
    import torch._dynamo.exc

    model, tok = pair
    want = CausalLMScorer(model, tok).generate_until(PROMPTS, stop=["."], max_new_tokens=10)
    monkeypatch.setattr(causal_generate, "graph_loop_unavailable", lambda model: None)

    def broken(**kw):
        raise torch._dynamo.exc.Unsupported("stand-in for a compile failure")
    monkeypatch.setattr(causal_generate, "compiled_step", lambda model, tuned: broken)
    with caplog.at_level("WARNING", logger="harness.models.causal_generate"):
        got = CausalLMScorer(model, tok, batch_size=2, generation_cache="static").generate_until(
            PROMPTS, stop=["."], max_new_tokens=10)
    assert got == want and caplog.text.count("compiled decoding step failed") == 1  # once, not per batch
    monkeypatch.undo()  # the real check: the failure is remembered on the model, so the loop is not tried again
    monkeypatch.setattr(causal_decode, "input_device", lambda m: torch.device("cuda"))
    monkeypatch.setattr(model, "_can_compile_fullgraph", True, raising=False)
    assert "failed earlier" in graph_loop_unavailable(model)
    model.__dict__.pop(causal_decode._FAILED_ATTR)
    monkeypatch.setattr(causal_generate, "graph_loop_unavailable", lambda model: None)

    def unrecordable(**kw):
        raise causal_decode.GraphRecordingError("stand-in for a failed CUDA-graph recording")
    monkeypatch.setattr(causal_generate, "compiled_step", lambda model, tuned: unrecordable)
    with caplog.at_level("WARNING", logger="harness.models.causal_generate"):
        got = CausalLMScorer(model, tok, batch_size=2, generation_cache="static").generate_until(
            PROMPTS, stop=["."], max_new_tokens=10)
    assert got == want and "CUDA-graph recording" in graph_loop_unavailable(model)
    model.__dict__.pop(causal_decode._FAILED_ATTR)

    def wrong(**kw):
        raise RuntimeError("not the compiler")
    monkeypatch.setattr(causal_generate, "compiled_step", lambda model, tuned: wrong)
    with pytest.raises(RuntimeError, match="not the compiler"):
        CausalLMScorer(model, tok, generation_cache="static").generate_until(PROMPTS, stop=[], max_new_tokens=10)


@pytest.mark.slow
def test_the_compiled_step_gives_the_eager_steps_tokens():
    """:func:`compiled_step` compiled for real (Inductor on the CPU; CUDA graphs are a GPU-only option) gives the
    eager step's tokens, EOS padding included: the argmax and the EOS bookkeeping inside the compiled graph are the
    eager step's. About 20 s of compilation."""
    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok, seed=1)
    ids, mask = _batch(tok, PROMPTS[:2])
    free = decode_static(model, ids, mask, max_new_tokens=16, eos_ids=[], pad_id=0)
    eos = [free[0][4]]  # an id the first row really emits: it is padded afterwards
    want = decode_static(model, ids, mask, max_new_tokens=16, eos_ids=eos, pad_id=0)
    got = decode_static(model, ids, mask, max_new_tokens=16, eos_ids=eos, pad_id=0,
                        step=causal_decode.compiled_step(model))
    first = free[0].index(eos[0])
    assert got == want and want[0][first + 1:] == [0] * (15 - first)


def test_the_attention_switch_holds_while_the_steps_run_and_is_undone_after(pair):
    """A step that asks for eager attention (the tuned step) gets it for one-row batches, while it runs; the prompt's
    forward and everything after keep the model's own attention, also when the step raises."""
    model, tok = pair
    own = model.config._attn_implementation
    seen = []
    inner = causal_decode.greedy_step(model)

    def step(**kw):
        seen.append(model.config._attn_implementation)
        return inner(**kw)
    step.attn_implementation = "eager"
    ids, mask = _batch(tok, PROMPTS)
    want = decode_static(model, ids[:1], mask[:1], max_new_tokens=12, eos_ids=[], pad_id=0)
    forwards = []
    handle = model.register_forward_pre_hook(lambda *a: forwards.append(model.config._attn_implementation))
    try:
        got = decode_static(model, ids[:1], mask[:1], max_new_tokens=12, eos_ids=[], pad_id=0, step=step)
    finally:
        handle.remove()
    assert got == want and seen == ["eager"] * 11 and model.config._attn_implementation == own
    assert forwards == [own] + ["eager"] * 11  # the prompt's forward keeps the model's own attention
    seen.clear()
    decode_static(model, ids, mask, max_new_tokens=4, eos_ids=[], pad_id=0, step=step)
    assert seen == [own] * 3  # measured faster at batch 1 only: more rows keep the model's attention

    def broken(**kw):
        raise RuntimeError("boom")
    broken.attn_implementation = "eager"
    with pytest.raises(RuntimeError, match="boom"):
        decode_static(model, ids[:1], mask[:1], max_new_tokens=4, eos_ids=[], pad_id=0, step=broken)
    assert model.config._attn_implementation == own


def test_the_tuned_step_asks_for_eager_attention_and_graphs_need_cuda(pair):
    model, tok = pair
    assert causal_decode.compiled_step(model, tuned=True).attn_implementation == "eager"
    assert causal_decode.compiled_step(model).attn_implementation is None
    ids, mask = _batch(tok, PROMPTS[:1])
    with pytest.raises(ValueError, match="CUDA graphs"):
        decode_static(model, ids, mask, max_new_tokens=4, eos_ids=[], pad_id=0, graph=True)


@pytest.mark.parametrize("n", [1, CHECK_EVERY, CHECK_EVERY + 1, 2 * CHECK_EVERY + 3])
def test_chunks_of_steps_give_exactly_max_new_tokens(pair, n):
    """The first token comes from the prompt's forward, the rest in chunks of CHECK_EVERY steps and a shorter last
    one: exactly n tokens, equal to generate's."""
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = decode_static(model, ids, mask, max_new_tokens=n, eos_ids=[], pad_id=0)
    finally:
        handle.remove()
    with torch.no_grad():
        want = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                              min_new_tokens=n, pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:].tolist()
    assert got == want and len(calls) == n


def test_compiled_step_options(pair, monkeypatch):
    """Untuned: Inductor's defaults without torch's CUDA graphs (the loop records chunks itself); tuned: max-autotune,
    coordinate descent and PDL where this torch has it; one compiled step per setting, kept on the model."""
    import torch._inductor.config as inductor_config

    model, _ = pair
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or (lambda **k: None))
    model.__dict__.pop(causal_decode._STEPS_ATTR, None)
    plain, tuned = causal_decode.compiled_step(model), causal_decode.compiled_step(model, tuned=True)
    assert causal_decode.compiled_step(model) is plain and len(calls) == 2
    assert calls[0] == {"fullgraph": True, "dynamic": False, "options": {"triton.cudagraphs": False}}
    want = {"max_autotune": True, "coordinate_descent_tuning": True, "triton.cudagraphs": False}
    if hasattr(inductor_config.triton, "enable_pdl"):
        want["triton.enable_pdl"] = True
    assert calls[1]["options"] == want and tuned.attn_implementation == "eager" and plain.attn_implementation is None
    model.__dict__.pop(causal_decode._STEPS_ATTR, None)


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: counts recordings and replays, and replays by running the chunk."""
    recorded: list = []

    def __init__(self):
        self.body = None

    def replay(self):
        _FakeGraph.replays += 1
        self.body()


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    """torch.cuda's stream and graph API replaced by CPU stand-ins, so the recording logic runs on a CPU: a
    "recording" runs nothing and remembers the chunk's arguments, a replay runs the chunk."""
    import contextlib

    _FakeGraph.recorded, _FakeGraph.replays = [], 0
    state = {}

    class Recording:
        def __init__(self, graph, pool=None, capture_error_mode="global"):
            self.graph = graph

        def __enter__(self):
            state["graph"] = self.graph
            return self

        def __exit__(self, *exc):
            state.pop("graph")
            return False

    real_chunk, real_prompt = causal_decode._Decoding.chunk, causal_decode._Decoding.prompt

    def recording(body, name) -> bool:
        if "graph" not in state:
            return False
        state["graph"].body = body  # recording: remember, run nothing
        _FakeGraph.recorded.append(name)
        if state.get("fail") in (True, name if isinstance(name, str) else "chunk"):
            raise RuntimeError("operation not permitted when stream is capturing")
        return True

    def chunk(self, step, pad_id, n):
        if not recording(lambda: real_chunk(self, step, pad_id, n), n):
            real_chunk(self, step, pad_id, n)

    def prompt(self, step, pad_id, ids, pos, cp):
        if not recording(lambda: real_prompt(self, step, pad_id, ids, pos, cp), f"prompt{ids.shape[1]}"):
            real_prompt(self, step, pad_id, ids, pos, cp)

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(causal_decode._Decoding, "chunk", chunk)
    monkeypatch.setattr(causal_decode._Decoding, "prompt", prompt)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", Recording)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())
    return state


def test_recorded_chunks_are_replayed_and_recorded_again_when_what_they_read_changes(pair, fake_cuda_graphs):
    """With the recording logic run on a CPU (torch.cuda's graph API faked): the first call records the prompt's
    forward (padded to a multiple of PROMPT_BUCKET tokens) and one graph per chunk length, and later calls replay
    them, with the eager loop's tokens; a new pad id, EOS list, step or moved weights record again; a failed chunk
    recording raises GraphRecordingError and keeps no graph."""
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    assert ids.shape[1] < causal_decode.PROMPT_BUCKET  # padded to 32 when recorded
    step = causal_decode.greedy_step(model)
    want = decode_static(model, ids, mask, max_new_tokens=20, eos_ids=[], pad_id=0)
    state = next(iter(model.__dict__[causal_decode._CACHES_ATTR].values()))  # the one kept: the calls reuse it

    def run(**kw):
        args = {"max_new_tokens": 20, "eos_ids": [], "pad_id": 0, "step": step} | kw
        return causal_decode._decode(model, ids, mask, args["max_new_tokens"], args["eos_ids"], args["pad_id"],
                                     args["step"], True, causal_decode.CACHE_BUCKET, None)
    once = ["prompt32", 8, 3]
    with torch.inference_mode():
        # the prompt (run, then recorded); 19 steps: 8 (run, then recorded), 8 (replayed), 3 (run, then recorded)
        assert run() == want and _FakeGraph.recorded == once and _FakeGraph.replays == 1
        assert run() == want and _FakeGraph.recorded == once and _FakeGraph.replays == 1 + 4
        run(pad_id=1)
        run(eos_ids=[5])
        run(step=causal_decode.greedy_step(model))
        assert _FakeGraph.recorded == once * 4
        p = next(model.parameters())
        p.data = p.data.clone()  # moved (same values): recorded again
        assert run() == want and _FakeGraph.recorded == once * 5
        fake_cuda_graphs["fail"] = "chunk"
        state.drop_graphs()
        with pytest.raises(causal_decode.GraphRecordingError, match="falls back"):
            run()
        assert state.graphs == {}


def test_a_failed_prompt_recording_leaves_the_prompt_eager_and_the_tokens_right(pair, fake_cuda_graphs, caplog):
    """A prompt forward that cannot be recorded (e.g. a host sync in the model) is logged once and then runs eager
    for this model; the chunks are recorded again and the tokens are the eager loop's."""
    model, tok = pair
    ids, mask = _batch(tok, PROMPTS)
    want = decode_static(model, ids, mask, max_new_tokens=12, eos_ids=[], pad_id=0)
    state = next(iter(model.__dict__[causal_decode._CACHES_ATTR].values()))
    state.drop_graphs()
    fake_cuda_graphs["fail"] = "prompt32"
    try:
        with torch.inference_mode(), caplog.at_level("WARNING"):
            for _ in range(3):
                got = causal_decode._decode(model, ids, mask, 12, [], 0, causal_decode.greedy_step(model), True,
                                            causal_decode.CACHE_BUCKET, None)
                assert got == want
        assert _FakeGraph.recorded.count("prompt32") == 1 and caplog.text.count("runs eager") == 1
        assert model.__dict__[causal_decode._PROMPT_FAILED_ATTR] and 8 in state.graphs
        assert ("prompt", 32) not in state.graphs
    finally:
        model.__dict__.pop(causal_decode._PROMPT_FAILED_ATTR, None)


def _random_batch(model, lengths: list[int], seed: int):
    """Left-padded ``(ids, mask)`` of random token rows of these lengths."""
    g = torch.Generator().manual_seed(seed)
    return causal_generate._left_pad([torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist()
                                      for n in lengths], 0)


def test_recorded_prompts_read_each_batchs_tokens_per_width_within_the_limits(pair, fake_cuda_graphs, monkeypatch):
    """Batches of new contents at a recorded width replay that width's recording with their own tokens; each
    padded width records once; a fresh cache runs its first prompt eager (its tensors are allocated then); a batch
    past PROMPT_GRAPH_TOKENS runs eager, unpadded; at most _MAX_PROMPTS widths are kept (least recently used
    dropped)."""
    model, _ = pair
    monkeypatch.setattr(causal_decode, "_MAX_PROMPTS", 2)
    monkeypatch.setattr(causal_decode, "PROMPT_BUCKET", 8)  # short prompts (the tiny models' few positions)
    a, b = _random_batch(model, [6, 2], seed=1), _random_batch(model, [7, 3], seed=2)  # width 8 padded
    c, d = _random_batch(model, [12, 1], seed=3), _random_batch(model, [20, 9], seed=4)  # 16, 24
    assert [causal_decode.prompt_width(2, x[0].shape[1], 10**6) for x in (a, b, c, d)] == [8, 8, 16, 24]

    def want(batch):
        return decode_static(model, *batch, max_new_tokens=10, eos_ids=[], pad_id=0)

    step = causal_decode.greedy_step(model)  # one step: a new one would record again

    def run(batch):
        return causal_decode._decode(model, *batch, 10, [], 0, step, True, causal_decode.CACHE_BUCKET, None)
    with torch.inference_mode():
        wants = {id(x): want(x) for x in (a, b, c, d)}
        model.__dict__.pop(causal_decode._CACHES_ATTR, None)
        assert run(a) == wants[id(a)] and _FakeGraph.recorded == [8, 1]  # a fresh cache: the prompt eager
        for x in (a, b, a, b):  # recorded once, then replayed with each batch's own tokens
            assert run(x) == wants[id(x)]
        assert _FakeGraph.recorded.count("prompt8") == 1 and _FakeGraph.replays >= 3
        state = next(iter(model.__dict__[causal_decode._CACHES_ATTR].values()))
        for x in (c, c, d, d):  # widths 16 then 24: 8 (least recently used) goes
            assert run(x) == wants[id(x)]
        assert [_FakeGraph.recorded.count(f"prompt{w}") for w in (8, 16, 24)] == [1, 1, 1]
        assert set(state.prompts) == {16, 24} and ("prompt", 8) not in state.graphs
        monkeypatch.setattr(causal_decode, "PROMPT_GRAPH_TOKENS", 31)
        n = len(_FakeGraph.recorded)
        assert run(c) == wants[id(c)] and run(a) == wants[id(a)]  # 2 x 16 > 31: eager; 2 x 8 recorded again
        assert _FakeGraph.recorded[n:] == ["prompt8"]


@pytest.mark.slow
def test_recorded_prompts_on_real_smollm2_and_gsm8k_give_the_eager_loops_and_generates_tokens(smollm2_path,
                                                                                             fake_cuda_graphs):
    """The real SmolLM2-135M-Instruct (fp32) on 4 GSM8K test questions in lm-eval's prompt, with the recording
    logic run on a CPU (torch.cuda's graph API faked): one-row and four-row batches, each prompt padded to a multiple
    of 32 tokens and recorded, then replayed twice, give the unpadded eager loop's tokens, which equal ``generate``'s
    (up to where ``generate`` stopped at EOS)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = llm_data_dir()
    if data is None:
        pytest.skip("../shared/data/llm is absent (set HARNESS_LLM_DATA to its path)")
    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32).eval()
    prompts = [f"Question: {r['question']}\nAnswer:" for r in read_jsonl(data / "gsm8k" / "test.jsonl", 4)]
    step, eos, pad, n = causal_decode.greedy_step(model), [tok.eos_token_id], tok.pad_token_id, 32
    shapes = set()  # (rows, padded width): each recorded once (one cache length for all: one state per row count)
    with torch.inference_mode():
        for rows in (1, 4):
            for start in range(0, len(prompts), rows):
                ids, mask = causal_generate._left_pad([tok.encode(p) for p in prompts[start:start + rows]], pad)
                length = causal_decode.cache_length(ids.shape[1], n)
                padded = causal_decode.prompt_width(rows, ids.shape[1], length - n)
                assert padded % causal_decode.PROMPT_BUCKET == 0 and length == causal_decode.CACHE_BUCKET
                shapes.add((rows, padded))
                eager = decode_static(model, ids, mask, max_new_tokens=n, eos_ids=eos, pad_id=pad)
                for _ in range(3):  # eager prompt on the fresh cache's first call, then recorded, then replayed
                    assert causal_decode._decode(model, ids, mask, n, eos, pad, step, True, length, None) == eager
                gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                     pad_token_id=pad, eos_token_id=eos)[:, ids.shape[1]:].tolist()
                assert all(e[:len(g)] == g for e, g in zip(eager, gen))
    assert sum(isinstance(r, str) for r in _FakeGraph.recorded) == len(shapes) >= 3 and _FakeGraph.replays > 30


@pytest.mark.parametrize("rows,width,most,want", [(1, 100, 10**6, 128), (1, 128, 10**6, 128), (1, 100, 110, 110),
                                                  (4, 1, 10**6, 32), (16, 100, 10**6, 128), (17, 100, 10**6, None),
                                                  (16, 128, 10**6, 128), (64, 129, 10**6, None),
                                                  (1, 3000, 10**6, None)])
def test_prompt_width(rows, width, most, want):
    """Recorded prompts are padded to a multiple of 32 tokens within the cache's room; a batch past 2048 padded
    tokens is not recorded (None: it runs eager, unpadded)."""
    assert causal_decode.prompt_width(rows, width, most) == want


def test_sliding_window_caches_keep_generate(monkeypatch):
    """A sliding-window static cache keeps host-side counters that a recorded graph would freeze: such models keep
    transformers' generate."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=64, sliding_window=8)
    model = MistralForCausalLM(cfg)
    monkeypatch.setattr(causal_decode, "input_device", lambda m: torch.device("cuda"))
    assert "sliding-window" in graph_loop_unavailable(model)


def test_the_tuned_step_times_its_tuning_by_kernel_time_and_restores_the_timer():
    """The tuned step's calls run with Inductor's autotuning timed by KernelTimer; the process's timer is back
    after each call, also after an error (another compilation in the process keeps its own)."""
    triton_heuristics = pytest.importorskip("torch._inductor.runtime.triton_heuristics")
    before = triton_heuristics.benchmarker
    seen = []

    def step(**kwargs):
        seen.append(triton_heuristics.benchmarker)
        if kwargs.get("fail"):
            raise RuntimeError("boom")
        return kwargs["x"] + 1

    timed = causal_decode._timed_by_kernel_time(step)
    assert timed(x=1) == 2 and timed.autotune_timer == "KernelTimer"
    assert isinstance(seen[0], causal_decode.KernelTimer) and seen[0].fallback is before
    assert triton_heuristics.benchmarker is before
    with pytest.raises(RuntimeError, match="boom"):
        timed(fail=True)
    assert triton_heuristics.benchmarker is before and len(seen) == 2
    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok)
    assert causal_decode.compiled_step(model, tuned=True).autotune_timer == "KernelTimer"
    assert not hasattr(causal_decode.compiled_step(model), "autotune_timer")  # the untuned step keeps the default


class _Fallback:
    def __init__(self):
        self.calls = []
        self.other = "from the fallback"

    def benchmark(self, fn, fn_args=None, fn_kwargs=None, device=None, **kwargs):
        self.calls.append(("benchmark", device, kwargs))
        return 7.0

    def benchmark_gpu(self, _callable, **kwargs):
        self.calls.append(("benchmark_gpu", None, kwargs))
        return 8.0


def test_kernel_timer_profiles_cuda_calls_as_inductor_makes_them(monkeypatch, caplog):
    """Inductor's call (``bench``: ``benchmark(fn=..., device=..., rep=40, is_vetted_benchmarking=True)``) and older
    torch's (``benchmark_gpu(kernel_call, rep=40)``) go to the profiler with warmup/rep capped at rep_ms and the
    caller's vetting flag (dropped for a torch whose profiler timer lacks it); another device or none goes to the
    fallback; inside a running profiler the fallback times, with one warning; a configuration the GPU rejects is
    inf; a profiler that records no GPU events turns the profiler path off with one warning; other errors
    propagate; other attributes are the fallback's, and copying the timer does not recurse."""
    import copy

    utils = pytest.importorskip("torch._inductor.utils")
    got = []

    def fake(fn, warmup=25, rep=100, is_vetted_benchmarking=False):
        fn()
        got.append((warmup, rep, is_vetted_benchmarking))
        return 0.004

    monkeypatch.setattr(utils, "do_bench_using_profiling", fake)
    fallback = _Fallback()
    timer = causal_decode.KernelTimer(fallback, rep_ms=10.0)
    ran = []
    assert timer.benchmark(fn=lambda: ran.append(1), device="cuda", rep=40, is_vetted_benchmarking=True) == 0.004
    assert timer.benchmark(lambda a, b=0: ran.append((a, b)), (1,), {"b": 2}, device=torch.device("cuda")) == 0.004
    assert timer.benchmark_gpu(lambda: ran.append(2), rep=40) == 0.004
    assert ran == [1, (1, 2), 2] and got == [(10.0, 10.0, True), (10.0, 10.0, False), (10.0, 10.0, False)]
    assert fallback.calls == []

    def older(fn, warmup=25, rep=100):  # a torch whose profiler timer has no vetting flag
        got.append((warmup, rep))
        return 0.005
    monkeypatch.setattr(utils, "do_bench_using_profiling", older)
    assert timer.benchmark(fn=lambda: None, device="cuda", rep=5, is_vetted_benchmarking=True) == 0.005
    assert got[-1] == (10.0, 5)  # warmup: 25 by default, capped at rep_ms
    assert timer.benchmark(fn=lambda: None, device="cpu", rep=40) == 7.0
    assert timer.benchmark(lambda: None, (torch.ones(1),)) == 7.0  # device left to inference: the fallback's
    assert [c[:2] for c in fallback.calls] == [("benchmark", "cpu"), ("benchmark", None)]
    assert timer.other == "from the fallback"
    with caplog.at_level("WARNING", logger=causal_decode.__name__):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            assert timer.benchmark(fn=lambda: None, device="cuda") == 7.0  # profilers do not nest
            assert timer.benchmark_gpu(lambda: None) == 8.0
    assert len(got) == 4 and sum("a profiler is running" in r.getMessage() for r in caplog.records) == 1
    assert timer.off is None  # the next timing outside the profiler profiles again

    def rejects(fn, **kw):
        raise RuntimeError("Triton Error [CUDA]: invalid configuration argument")
    monkeypatch.setattr(utils, "do_bench_using_profiling", rejects)
    assert timer.benchmark(fn=lambda: None, device="cuda") == float("inf")

    def breaks(fn, **kw):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(utils, "do_bench_using_profiling", breaks)
    with pytest.raises(RuntimeError, match="out of memory"):
        timer.benchmark(fn=lambda: None, device="cuda")

    def no_events(fn, **kw):
        raise RuntimeError("Failed to capture device events for inductor_do_bench_using_profiling.")
    monkeypatch.setattr(utils, "do_bench_using_profiling", no_events)
    caplog.clear()
    with caplog.at_level("WARNING", logger=causal_decode.__name__):
        assert timer.benchmark(fn=lambda: None, device="cuda") == 7.0
        assert timer.benchmark_gpu(lambda: None) == 8.0
    assert "no GPU events" in timer.off and sum("no GPU events" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(utils, "do_bench_using_profiling", fake)
    assert timer.benchmark(fn=lambda: None, device="cuda") == 7.0  # off for the rest of the timer's life
    assert copy.copy(timer).fallback is fallback and copy.deepcopy(causal_decode.KernelTimer(None)).fallback is None
    with pytest.raises(AttributeError):
        causal_decode.KernelTimer.__new__(causal_decode.KernelTimer).fallback
