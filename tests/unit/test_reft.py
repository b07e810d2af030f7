"""ReFT interventions (harness.models.reft): alpha = 0 is the base bit for bit, the edit equals a plain-torch
reference on output_hidden_states, pyreft's position rules, padding, prompt lengths and KV-cache generation."""

from __future__ import annotations

import pytest
import torch

from _reft_models import LAYERS, VOCAB, adapter, batch, tiny
from harness.errors import BlendError, ModelError
from harness.models.reft import (InterventionEngine, InterventionSpec, check_adapter_fits, find_layers,
                                 intervention_mask,
                                 parse_positions, prompt_lengths)

ARCHS = ["llama", "gpt2", "bert"]


def run(model, ids, mask, **kw):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["loreft", "direft"])
def test_alpha_zero_is_base_bit_for_bit_and_remove_restores(arch, kind):
    model = tiny(arch)
    ids, mask = batch(pad="right")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = run(model, ids, mask).logits
    engine = InterventionEngine(model, adapter(kind), alpha=0.0)
    assert torch.equal(run(model, ids, mask).logits, base)
    engine.apply(1.0)
    assert not torch.allclose(run(model, ids, mask).logits, base)
    engine.apply(0)
    assert torch.equal(run(model, ids, mask).logits, base)
    engine.apply(1.0)
    engine.remove()
    assert torch.equal(run(model, ids, mask).logits, base)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights never written


def reference_positions(mask: torch.Tensor, first_n: int, last_n: int, lengths=None) -> list[list[int]]:
    """pyreft's get_intervention_locations per row, written out with plain loops over attended indices."""
    out = []
    for r in range(mask.shape[0]):
        idx = [i for i in range(mask.shape[1]) if mask[r, i]]
        L = len(idx) if lengths is None else min(lengths[r], len(idx))
        f, la = min(L // 2, first_n), min(L // 2, last_n)
        out.append(sorted(set(idx[:f] + idx[L - la:L])))
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["loreft", "direft"])
@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_edit_equals_plain_torch_reference(arch, kind, alpha):
    """One intervention at layer 1: block 1's edited output equals base hidden_states[2] plus
    alpha * R^T(Wh + b - Rh) (LoReFT) or alpha * R^T(Wh + b) (DiReFT) at pyreft's f1+l1 positions, base elsewhere."""
    model = tiny(arch)
    ids, mask = batch(pad="right", lengths=(9, 6, 1))
    spec = InterventionSpec(1, "block_output", 1, 1)
    ad = adapter(kind, [spec])
    h = run(model, ids, mask, output_hidden_states=True).hidden_states[2]
    mod = ad.interventions[0]
    R, W, b = (t.detach().double() for t in (mod.R, mod.W, mod.b))
    expected = h.clone()
    for r, positions in enumerate(reference_positions(mask, 1, 1)):
        for i in positions:
            x = h[r, i].double()
            low = W @ x + b - (R @ x if kind == "loreft" else 0)
            expected[r, i] = (x + alpha * (R.T @ low)).float()
    engine = InterventionEngine(model, ad, alpha=alpha)
    seen = []  # registered after the engine's hook, so it sees the edited block output
    handle = find_layers(model)[1].register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple)
                                                                                       else o))
    run(model, ids, mask)
    handle.remove()
    engine.remove()
    got = seen[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    edited = torch.zeros_like(mask, dtype=torch.bool)
    for r, positions in enumerate(reference_positions(mask, 1, 1)):
        edited[r, positions] = True
    assert torch.equal(got[~edited], h[~edited])  # untouched positions are bit-identical
    assert edited[2].sum() == 0  # a 1-token prompt gets no edit (pyreft clamps counts to L // 2)


@pytest.mark.parametrize("pad", ["left", "right", "none"])
@pytest.mark.parametrize("first_n,last_n", [(0, 1), (1, 1), (3, 3), (2, 0)])
def test_intervention_mask_follows_pyreft(pad, first_n, last_n):
    _, mask = batch(pad=pad, lengths=(9, 6, 1))
    got = intervention_mask(mask, first_n, last_n)
    for r, positions in enumerate(reference_positions(mask, first_n, last_n)):
        assert torch.nonzero(got[r]).flatten().tolist() == positions
    lengths = torch.tensor([5, 4, 1])
    got = intervention_mask(mask, first_n, last_n, lengths)
    for r, positions in enumerate(reference_positions(mask, first_n, last_n, lengths.tolist())):
        assert torch.nonzero(got[r]).flatten().tolist() == positions


def test_parse_positions():
    assert parse_positions("f1+l1") == (1, 1)
    assert parse_positions("l3") == (0, 3)
    assert parse_positions("f2") == (2, 0)
    assert InterventionSpec(0, first_n=1, last_n=2).positions == "f1+l2"
    for bad in ("x1", "l0", "f1+", "", "1+2"):
        with pytest.raises(ModelError, match="positions"):
            parse_positions(bad)


def position_ids(mask):
    return (mask.cumsum(1) - 1).clamp(min=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_and_right_padding_give_each_rows_unpadded_outputs(arch):
    model = tiny(arch)
    engine = InterventionEngine(model, adapter("loreft", [InterventionSpec(0, "block_output", 1, 2),
                                                          InterventionSpec(2, "block_output", 0, 1)]))
    lengths = (9, 6, 4)
    ids, _ = batch()
    alone = [run(model, ids[r:r + 1, :L], torch.ones(1, L, dtype=torch.long)).logits[0] for r, L in
             enumerate(lengths)]
    for pad in ("left", "right"):
        pids, pmask = batch(pad=pad, lengths=lengths)
        out = run(model, pids, pmask, position_ids=position_ids(pmask)).logits
        for r, L in enumerate(lengths):
            rows = out[r, -L:] if pad == "left" else out[r, :L]
            torch.testing.assert_close(rows, alone[r], rtol=1e-4, atol=1e-5)
    engine.remove()


def test_prompt_lengths_keep_the_continuation_unedited():
    """With prompt_lengths, 'l1' edits the last prompt token: logits before it equal the base's (causal)."""
    model = tiny("llama")
    ids, mask = batch(pad="right", lengths=(9, 7, 5))
    base = run(model, ids, mask).logits
    engine = InterventionEngine(model, adapter("loreft", [InterventionSpec(1, "block_output", 0, 1)]))
    plens = [6, 3, 5]
    with prompt_lengths(plens):
        out = run(model, ids, mask).logits
    for r, P in enumerate(plens):
        assert torch.equal(out[r, :P - 1], base[r, :P - 1])
        assert not torch.allclose(out[r, P - 1], base[r, P - 1])
    with prompt_lengths([1, 2]), pytest.raises(ModelError, match="prompt_lengths"):
        run(model, ids, mask)
    engine.remove()


@torch.no_grad()
def manual_greedy(model, prompt: torch.Tensor, n: int) -> list[int]:
    """Greedy decoding without a cache: every step re-runs the whole sequence, the prompt named explicitly."""
    seq = prompt.clone()
    for _ in range(n):
        with prompt_lengths([prompt.shape[1]]):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_edits_prompt_positions_only(arch):
    """generate() with a KV cache edits the prompt only (the first forward); decoding steps are not edited.
    It equals cache-free greedy decoding with the prompt named, and left-padded batches equal single rows."""
    model = tiny(arch)
    model.generation_config.pad_token_id = 0
    ids, _ = batch()
    prompt = ids[:1, :7]
    engine = InterventionEngine(model, adapter("loreft", [InterventionSpec(0, "block_output", 1, 1),
                                                          InterventionSpec(2, "block_output", 0, 1)]))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)[0, 7:].tolist()
    assert gen == manual_greedy(model, prompt, 6)
    engine.apply(0.0)
    with torch.no_grad():
        base = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)[0, 7:].tolist()
    engine.apply(1.0)
    assert base != gen  # the edit matters
    pids, pmask = batch(pad="left", lengths=(7, 5, 4))  # rows are ids[r, :L], left-padded to 9
    with torch.no_grad():
        out = model.generate(input_ids=pids, attention_mask=pmask, **kw)[:, 9:]
        for r, L in enumerate((7, 5, 4)):
            one = model.generate(input_ids=ids[r:r + 1, :L], attention_mask=torch.ones(1, L, dtype=torch.long), **kw)
            assert out[r].tolist() == one[0, L:].tolist()
    engine.remove()


def test_block_input_component_edits_the_blocks_input():
    model = tiny("llama")
    ids, mask = batch()
    h = run(model, ids, mask, output_hidden_states=True).hidden_states
    ad_in = adapter("loreft", [InterventionSpec(1, "block_input", 0, 1)])
    ad_out = adapter("loreft", [InterventionSpec(0, "block_output", 0, 1)])
    e = InterventionEngine(model, ad_in)
    a = run(model, ids, mask).logits
    e.remove()
    e = InterventionEngine(model, ad_out)  # same tensors (same seed): block 0's output is block 1's input
    b = run(model, ids, mask).logits
    e.remove()
    assert torch.equal(a, b)
    assert h[1].shape[-1] == ad_in.hidden_size


def test_engine_interface_and_errors():
    model = tiny("llama")
    ad = adapter("loreft")
    engine = InterventionEngine(model, ad, alpha=0.3)
    assert engine.kind == "intervention" and engine.alpha == 0.3
    assert "intervention strength" in engine.description and "LoReFT rank 4" in engine.description
    m = engine.manifest()
    assert m["kind"] == "intervention" and m["method"] == "loreft" and m["interventions"][1]["positions"] == "f1+l1"
    assert engine.n_params == 2 * (4 * 32 * 2 + 4)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(BlendError, match="alpha"):
            engine.apply(bad)
    engine.remove()
    with pytest.raises(ModelError, match="hidden size"):
        check_adapter_fits(ad, 64, LAYERS)
    with pytest.raises(ModelError, match="number of layers"):
        check_adapter_fits(ad, 32, LAYERS + 1)
    far = adapter("loreft", [InterventionSpec(LAYERS, "block_output", 0, 1)])
    far.num_layers = 0
    with pytest.raises(ModelError, match="layer out of range"):
        InterventionEngine(model, far)
    assert VOCAB == 64
