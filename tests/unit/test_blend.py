"""Tests of harness.models.blend: interpolate (the blend's meaning) and BlendEngine (the in-place fast path).

Semantics pinned here: theta(alpha) = lerp(base, adapted, alpha) in fp32, cast to the storage dtype; alpha 0 and 1
give base and adapted exactly; integer buffers are copied and must agree; tied weights are blended once; every
mismatch names the first offending tensor; the engine writes the same bits into the live model without new
storage.
"""

from __future__ import annotations

import copy

import pytest
import torch

from _models import WithBatchNorm, bert, bert_pair, inputs, logits, state, with_state
from harness.errors import BlendError
from harness.models.blend import BlendEngine, check_compatible, head_keys, interpolate

ALPHAS_SHUFFLED = [0.7, 0.0, 0.3, 1.0, 0.5, 0.30000000000000004, 0.1, 0.0, 0.95]


@pytest.fixture(scope="module")
def pair():
    base, adapted = bert_pair()
    return base, adapted, state(base), state(adapted)


@pytest.fixture(scope="module")
def pair_bf16():
    base, adapted = bert_pair(dtype=torch.bfloat16)
    return base, adapted, state(base), state(adapted)


def _float_keys(sd):
    return [k for k, v in sd.items() if v.is_floating_point()]


# ------------------------------------------------------------------------------------------- interpolate --

def test_endpoints_are_exact(pair):
    _, _, b, a = pair
    assert all(not torch.equal(b[k], a[k]) for k in _float_keys(b))  # the pair really differs everywhere
    at0, at1 = interpolate(b, a, 0.0), interpolate(b, a, 1.0)
    assert set(at0) == set(b) == set(at1)
    for k in b:
        assert torch.equal(at0[k], b[k]), k
        assert torch.equal(at1[k], a[k]), k
        assert at0[k].dtype == b[k].dtype


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.5, 0.7, 0.9])
def test_interior_points_are_linear_in_alpha(pair, alpha):
    _, _, b, a = pair
    out = interpolate(b, a, alpha)
    for k in _float_keys(b):
        ref = (1 - alpha) * b[k].double() + alpha * a[k].double()
        torch.testing.assert_close(out[k].double(), ref, rtol=1e-6, atol=1e-7, msg=k)
    # linearity: theta(0.5) is the midpoint of theta(0.2) and theta(0.8)
    lo, mid, hi = interpolate(b, a, 0.2), interpolate(b, a, 0.5), interpolate(b, a, 0.8)
    for k in _float_keys(b):
        torch.testing.assert_close(mid[k], (lo[k] + hi[k]) / 2, rtol=1e-5, atol=1e-6)


def test_inputs_are_never_modified_and_outputs_are_new_tensors(pair):
    _, _, b, a = pair
    b0 = {k: v.clone() for k, v in b.items()}
    a0 = {k: v.clone() for k, v in a.items()}
    for alpha in (0.0, 0.4, 1.0):
        for head in ("shared", "adapted"):
            out = interpolate(b, a, alpha, head=head)
            for k, v in out.items():
                assert v.data_ptr() not in (b[k].data_ptr(), a[k].data_ptr()), k
                v.add_(1) if v.is_floating_point() else v.fill_(3)  # writing the output leaves the inputs alone
    assert all(torch.equal(b[k], b0[k]) for k in b)
    assert all(torch.equal(a[k], a0[k]) for k in a)


def test_alphas_are_canonical(pair):
    _, _, b, a = pair
    x, y = interpolate(b, a, 0.1 + 0.2), interpolate(b, a, 0.3)  # 0.30000000000000004
    assert all(torch.equal(x[k], y[k]) for k in b)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf")])
def test_alpha_outside_unit_interval_is_refused(pair, alpha):
    _, _, b, a = pair
    with pytest.raises(BlendError, match=r"\[0, 1\]"):
        interpolate(b, a, alpha)


def test_unknown_head_mode_is_refused(pair):
    _, _, b, a = pair
    with pytest.raises(BlendError, match="head"):
        interpolate(b, a, 0.5, head="mine")


def test_different_key_sets_name_the_keys(pair):
    _, _, b, a = pair
    a2 = dict(a)
    del a2["bert.pooler.dense.bias"]
    with pytest.raises(BlendError, match="bert.pooler.dense.bias") as e:
        interpolate(b, a2, 0.5)
    assert "only in base" in str(e.value)


def test_wrapper_prefix_gets_a_hint(pair):
    _, _, b, a = pair
    wrapped = {"module." + k: v for k, v in a.items()}
    with pytest.raises(BlendError, match="wrapper prefix"):
        interpolate(b, wrapped, 0.5)


def test_shape_mismatch_names_the_first_offending_tensor(pair):
    _, _, b, a = pair
    a2 = dict(a)
    for layer in (0, 1):
        k = f"bert.encoder.layer.{layer}.intermediate.dense.weight"
        a2[k] = torch.zeros(a[k].shape[0] + 1, a[k].shape[1])
    with pytest.raises(BlendError) as e:
        interpolate(b, a2, 0.5)
    msg = str(e.value)
    assert "bert.encoder.layer.0.intermediate.dense.weight" in msg
    assert "layer.1" not in msg
    assert "(64, 32)" in msg and "(65, 32)" in msg  # both shapes are shown


def test_dtype_mismatch_names_the_tensor_and_the_fix(pair):
    _, _, b, a = pair
    a2 = dict(a)
    a2["bert.encoder.layer.1.output.dense.weight"] = a2["bert.encoder.layer.1.output.dense.weight"].half()
    with pytest.raises(BlendError, match=r"(?s)dtypes differ.*layer\.1\.output\.dense\.weight.*--dtype"):
        interpolate(b, a2, 0.5)


def test_resized_vocabulary_is_explained(pair):
    _, _, b, a = pair
    a2 = dict(a)
    k = "bert.embeddings.word_embeddings.weight"
    a2[k] = torch.cat([a[k], torch.zeros(3, a[k].shape[1])])
    with pytest.raises(BlendError, match=r"(?s)word_embeddings.*vocabulary was resized.*base \d+ rows, adapted \d+"):
        interpolate(b, a2, 0.5)


def test_integer_buffers_are_copied_and_float_buffers_interpolated():
    b, a = state(WithBatchNorm(1)), state(WithBatchNorm(2))
    assert b["bn.num_batches_tracked"].dtype == torch.int64
    out = interpolate(b, a, 0.4)
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(out["bn.num_batches_tracked"], b["bn.num_batches_tracked"])
    assert out["bn.num_batches_tracked"].data_ptr() != b["bn.num_batches_tracked"].data_ptr()
    torch.testing.assert_close(out["bn.running_mean"], 0.6 * b["bn.running_mean"] + 0.4 * a["bn.running_mean"])


def test_differing_integer_buffer_is_an_error():
    b, a = state(WithBatchNorm(1)), state(WithBatchNorm(2))
    a["bn.num_batches_tracked"] = a["bn.num_batches_tracked"] + 1
    with pytest.raises(BlendError, match=r"(?s)integer buffer differs.*bn\.num_batches_tracked"):
        interpolate(b, a, 0.5)
    with pytest.raises(BlendError, match="num_batches_tracked"):
        BlendEngine(WithBatchNorm(1), b, a)


@pytest.mark.parametrize("which", ["base", "adapted"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(pair, which, bad):
    base, _, b, a = pair
    k = "bert.encoder.layer.0.attention.self.key.weight"
    sd = dict(b if which == "base" else a)
    sd[k] = sd[k].clone()
    sd[k][1, 2] = bad
    b2, a2 = (sd, a) if which == "base" else (b, sd)
    with pytest.raises(BlendError, match=rf"(?s){which} weights hold NaN.*{k}"):
        interpolate(b2, a2, 0.5)
    with pytest.raises(BlendError, match=k):
        BlendEngine(copy.deepcopy(base), b2, a2)


def test_non_finite_adapted_head_is_refused_with_head_adapted(pair):
    base, _, b, a = pair
    a2 = dict(a)
    a2["classifier.weight"] = a["classifier.weight"].clone()
    a2["classifier.weight"][0, 0] = float("nan")
    with pytest.raises(BlendError, match="classifier.weight"):
        interpolate(b, a2, 0.5, head="adapted")
    with pytest.raises(BlendError, match="classifier.weight"):
        BlendEngine(copy.deepcopy(base), b, a2, head="adapted")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_bf16_storage_blends_in_fp32_then_casts(pair_bf16, alpha):
    _, _, b, a = pair_bf16
    out = interpolate(b, a, alpha)
    n = n_exact = n_bf16_arith_differs = 0
    for k in _float_keys(b):
        assert out[k].dtype == torch.bfloat16
        b32, a32 = b[k].float(), a[k].float()
        assert torch.equal(out[k], torch.lerp(b32, a32, alpha).to(torch.bfloat16)), k
        manual = (b32 + alpha * (a32 - b32)).to(torch.bfloat16)  # by hand in fp32, one cast at the end
        # lerp may fuse the multiply-add (one rounding less): at most one bf16 step (plus the fp32 rounding of the
        # unfused form, which matters only under cancellation) apart, and almost always equal
        tol = torch.finfo(torch.bfloat16).eps * manual.float().abs() + 4 * torch.finfo(torch.float32).eps * (
            b32.abs() + a32.abs())
        assert bool(((out[k].float() - manual.float()).abs() <= tol).all()), k
        n, n_exact = n + out[k].numel(), n_exact + int((out[k] == manual).sum())
        in_bf16 = (1 - alpha) * b[k] + alpha * a[k]  # every step rounded to bf16
        n_bf16_arith_differs += int((out[k] != in_bf16).sum())
    assert n_exact >= 0.99 * n
    # rounding every step to bf16 gives other values: the test tells fp32 arithmetic from bf16 arithmetic
    assert n_bf16_arith_differs > 0 or alpha in (0.0, 0.5, 1.0)  # at 0.5 both round once


def test_bf16_blend_is_the_correctly_rounded_fp64_value_up_to_one_fp32_rounding(pair_bf16):
    _, _, b, a = pair_bf16
    out = interpolate(b, a, 0.3)
    k = "bert.encoder.layer.0.attention.self.query.weight"
    ref = (0.7 * b[k].double() + 0.3 * a[k].double())
    ulp = torch.finfo(torch.bfloat16).eps * ref.abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    assert bool(((out[k].double() - ref).abs() <= ulp).all())


def test_head_adapted_keeps_the_adapted_head_at_every_alpha(pair):
    _, _, b, a = pair
    heads = head_keys(b)
    assert heads == {"classifier.weight", "classifier.bias"}
    for alpha in (0.0, 0.3, 0.6, 1.0):
        out = interpolate(b, a, alpha, head="adapted")
        for k in heads:
            assert torch.equal(out[k], a[k]), (alpha, k)
        shared = interpolate(b, a, alpha)
        for k in set(b) - heads:
            assert torch.equal(out[k], shared[k]), (alpha, k)


def test_head_with_other_number_of_labels_points_to_head_adapted():
    base, adapted3 = bert(1), bert(3, num_labels=3)
    b, a = state(base), state(adapted3)
    with pytest.raises(BlendError, match=r"(?s)classifier\.(bias|weight).*number of labels.*--head adapted"):
        interpolate(b, a, 0.5)
    out = interpolate(b, a, 0.5, head="adapted")
    assert out["classifier.weight"].shape == (3, 32)
    assert torch.equal(out["classifier.weight"], a["classifier.weight"])


def test_head_keys_with_and_without_base_model_prefix():
    keys = ["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight",
            "classifier.bias"]
    assert head_keys(keys, "bert") == {"classifier.weight", "classifier.bias"}
    assert head_keys(keys) == {"classifier.weight", "classifier.bias"}
    assert head_keys(["encoder.x", "score.weight"], "model") == {"score.weight"}  # prefix absent: known names


def test_check_compatible_accepts_a_matching_pair(pair):
    _, _, b, a = pair
    check_compatible(b, a)


# ------------------------------------------------------------------------------------------- BlendEngine --

def _engine_matches_interpolate(base_model, b, a, head="shared"):
    live = copy.deepcopy(base_model)
    engine = BlendEngine(live, b, a, head=head)
    for alpha in ALPHAS_SHUFFLED:
        engine.apply(alpha)
        ref = interpolate(b, a, alpha, head=head)
        got = live.state_dict()
        assert set(got) == set(ref)
        for k in ref:
            assert got[k].dtype == ref[k].dtype, k
            assert torch.equal(got[k], ref[k]), (alpha, k)
        assert engine.alpha == round(alpha, 6)


def test_engine_agrees_bit_for_bit_with_interpolate_fp32(pair):
    base, _, b, a = pair
    _engine_matches_interpolate(base, b, a)


def test_engine_agrees_bit_for_bit_with_interpolate_bf16(pair_bf16):
    base, _, b, a = pair_bf16
    _engine_matches_interpolate(base, b, a)


def test_engine_bf16_in_many_cpu_chunks_agrees_bit_for_bit(pair_bf16, monkeypatch):
    """A chunk size that splits tensors and does not divide the flat buffer: the chunked CPU path must still write
    every weight exactly once with interpolate's bits."""
    monkeypatch.setattr("harness.models.blend._CHUNK", 997)
    base, _, b, a = pair_bf16
    _engine_matches_interpolate(base, b, a)


def test_engine_agrees_bit_for_bit_with_interpolate_head_adapted(pair):
    base, _, b, a = pair
    _engine_matches_interpolate(base, b, a, head="adapted")


def test_engine_with_integer_and_float_buffers():
    model = WithBatchNorm(1)
    b, a = state(model), state(WithBatchNorm(2))
    _engine_matches_interpolate(model, b, a)


def test_engine_endpoints_reproduce_base_and_adapted_logits_exactly(pair):
    base, adapted, b, a = pair
    batch = inputs(seed=3)
    want_base, want_adapted = logits(base, batch), logits(adapted, batch)
    assert not torch.allclose(want_base, want_adapted)
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a)
    for alpha in (1.0, 0.4, 0.0, 1.0, 0.0):  # back and forth: no drift
        engine.apply(alpha)
        got = logits(live, batch)
        if alpha == 0.0:
            assert torch.equal(got, want_base)
        elif alpha == 1.0:
            assert torch.equal(got, want_adapted)
        else:
            assert torch.equal(got, logits(with_state(base, interpolate(b, a, alpha)), batch))


def test_engine_apply_keeps_parameter_identity_and_storage(pair_bf16):
    base, _, b, a = pair_bf16
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a, head="adapted")
    before = {n: (id(p), p.data_ptr()) for n, p in live.named_parameters()}
    for alpha in ALPHAS_SHUFFLED:
        engine.apply(alpha)
        assert {n: (id(p), p.data_ptr()) for n, p in live.named_parameters()} == before


def test_engine_keeps_inputs_unchanged(pair):
    base, _, b, a = pair
    b0 = {k: v.clone() for k, v in b.items()}
    a0 = {k: v.clone() for k, v in a.items()}
    engine = BlendEngine(copy.deepcopy(base), b, a)
    engine.apply(0.6)
    assert all(torch.equal(b[k], b0[k]) for k in b) and all(torch.equal(a[k], a0[k]) for k in a)


def test_engine_memory_is_two_copies_in_the_storage_dtype_and_apply_moves_the_minimum(pair, pair_bf16):
    n = sum(p.numel() for p in bert(1).parameters())  # every BERT tensor here is floating point
    fp32 = BlendEngine(copy.deepcopy(pair[0]), pair[2], pair[3])
    bf16 = BlendEngine(copy.deepcopy(pair_bf16[0]), pair_bf16[2], pair_bf16[3])
    assert fp32.n_bytes == 2 * 4 * n and bf16.n_bytes == 2 * 2 * n  # references in the storage dtype
    assert fp32.bytes_per_apply() == n * (8 + 4) and bf16.bytes_per_apply() == n * (4 + 2)
    assert fp32.path == bf16.path == "merged"


def test_engine_holds_no_copy_of_tensors_equal_in_base_and_adapted(pair):
    """A frozen tensor (equal in base and adapted) is written once and costs no reference copy."""
    base, _, b, a = pair
    frozen = [k for k in b if "layer.0." in k or "embeddings" in k]
    a2 = dict(a, **{k: b[k].clone() for k in frozen})
    engine = BlendEngine(copy.deepcopy(base), b, a2)
    n_frozen = sum(b[k].numel() for k in frozen if b[k].is_floating_point())
    assert engine.n_params == sum(v.numel() for k, v in b.items() if v.is_floating_point()) - n_frozen
    assert not engine.changed_names() & set(frozen)
    _engine_matches_interpolate(base, b, a2)


def _tied_pair():
    from transformers import BertForMaskedLM

    from _models import tiny_bert_config

    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(BertForMaskedLM(tiny_bert_config(tie_word_embeddings=True)).eval())
    return models


def test_tied_weights_are_blended_once_and_stay_tied():
    base, adapted = _tied_pair()
    emb, dec = "bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"
    assert base.cls.predictions.decoder.weight is base.bert.embeddings.word_embeddings.weight
    b, a = state(base), state(adapted)
    assert emb in b and dec in b  # the state dict lists the tied tensor under both names
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a)
    differ = {n: p for n, p in live.named_parameters() if not torch.equal(b[n], a[n])}  # one name per storage
    assert emb in differ and dec not in differ
    assert engine.n_bytes == 2 * 4 * sum(p.numel() for p in differ.values())  # the tied tensor is held once
    ptr = live.bert.embeddings.word_embeddings.weight.data_ptr()
    for alpha in (0.25, 1.0, 0.0, 0.6):
        engine.apply(alpha)
        assert live.cls.predictions.decoder.weight is live.bert.embeddings.word_embeddings.weight
        assert live.bert.embeddings.word_embeddings.weight.data_ptr() == ptr
        ref = interpolate(b, a, alpha)
        assert torch.equal(ref[emb], ref[dec])
        assert torch.equal(live.state_dict()[emb], ref[emb])
        assert torch.equal(live.state_dict()[dec], ref[dec])
    engine.apply(1.0)
    batch = inputs(seed=4)
    assert torch.equal(live(**batch).logits, adapted(**batch).logits)


def test_tied_alias_with_other_values_in_a_checkpoint_is_an_error():
    base, adapted = _tied_pair()
    b, a = state(base), state(adapted)
    a["cls.predictions.decoder.weight"] = a["cls.predictions.decoder.weight"] + 1.0  # saved untied
    with pytest.raises(BlendError, match=r"(?s)tied.*cls\.predictions\.decoder\.weight"):
        BlendEngine(copy.deepcopy(base), b, a)


def test_engine_head_adapted_keeps_adapted_head_and_blends_backbone(pair):
    base, adapted, b, a = pair
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a, head="adapted")
    for alpha in (0.0, 0.5, 1.0):
        engine.apply(alpha)
        assert torch.equal(live.classifier.weight, a["classifier.weight"])
        assert torch.equal(live.classifier.bias, a["classifier.bias"])
    engine.apply(0.0)  # base backbone + adapted head
    mixed = dict(b, **{k: a[k] for k in ("classifier.weight", "classifier.bias")})
    assert torch.equal(logits(live), logits(with_state(base, mixed)))


def test_engine_head_adapted_with_a_new_number_of_labels():
    base, adapted3 = bert(1), bert(3, num_labels=3)
    b, a = state(base), state(adapted3)
    with pytest.raises(BlendError, match="--head adapted"):
        BlendEngine(copy.deepcopy(base), b, a)
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a, head="adapted")
    engine.apply(1.0)
    assert torch.equal(logits(live), logits(adapted3))
    engine.apply(0.5)
    ref = interpolate(b, a, 0.5, head="adapted")
    assert all(torch.equal(live.state_dict()[k], ref[k]) for k in ref)
    assert logits(live).shape == (6, 3)


def test_engine_refuses_state_dicts_that_do_not_cover_the_model(pair):
    base, _, b, a = pair
    b2 = {k: v for k, v in b.items() if k != "classifier.bias"}
    a2 = {k: v for k, v in a.items() if k != "classifier.bias"}
    with pytest.raises(BlendError, match="classifier.bias"):
        BlendEngine(copy.deepcopy(base), b2, a2)


def test_engine_refuses_bad_alpha_and_head(pair):
    base, _, b, a = pair
    engine = BlendEngine(copy.deepcopy(base), b, a)
    with pytest.raises(BlendError, match=r"\[0, 1\]"):
        engine.apply(1.01)
    with pytest.raises(BlendError, match="head"):
        BlendEngine(copy.deepcopy(base), b, a, head="both")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_on_cuda_agrees_with_interpolate_on_cuda(dtype):
    """On CUDA the engine uses the foreach lerp kernel and interpolate the pointwise one: same bits."""
    base, adapted = bert_pair(dtype=dtype)
    base = base.cuda()
    b = {k: v.cuda() for k, v in state(base).items()}
    a = {k: v.cuda() for k, v in state(adapted).items()}
    _engine_matches_interpolate(base, b, a)
    live = copy.deepcopy(base)
    engine = BlendEngine(live, state(base), state(adapted))  # CPU state dicts, CUDA live model
    engine.apply(1.0)
    batch = {k: v.cuda() for k, v in inputs(seed=7).items()}
    assert torch.equal(logits(live, batch), logits(adapted.cuda(), batch))
    off = copy.deepcopy(base)
    engine = BlendEngine(off, state(base), state(adapted), reference_device="cpu")  # the GPU holds one copy
    assert all(g.base.device.type == "cpu" for g in engine._groups)
    for alpha in (0.3, 1.0):
        engine.apply(alpha)
        ref = interpolate(b, a, alpha)
        assert all(torch.equal(off.state_dict()[k], ref[k]) for k in ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_with_references_on_another_device_agrees_bit_for_bit(dtype, monkeypatch):
    """reference_device keeps the references apart from the live model (CPU here; off the GPU in a sweep): the
    chunked path copies them in and writes interpolate's bits."""
    monkeypatch.setattr("harness.models.blend._CHUNK", 997)
    base, adapted = bert_pair(dtype=dtype)
    b, a = state(base), state(adapted)
    live = copy.deepcopy(base)
    engine = BlendEngine(live, b, a, reference_device="cpu")
    for alpha in (0.3, 1.0, 0.0):
        engine.apply(alpha)
        ref = interpolate(b, a, alpha)
        assert all(torch.equal(live.state_dict()[k], ref[k]) for k in ref)


def test_reference_placement_setting_resolves_per_device():
    """--blend-references auto keeps the references of a model of 1 GiB or more off an accelerator (issue 15: one
    model copy on the GPU) and beside a small or CPU model; device and cpu are taken as given."""
    from harness.pipeline.evaluator import reference_device

    big, small = 2 << 30, 100 << 20
    assert reference_device("auto", "cuda", big) == "cpu" and reference_device("auto", "cpu", big) is None
    assert reference_device("auto", "cuda", small) is None  # a small model: the copies cost little on the GPU
    assert reference_device("device", "cuda", big) is None and reference_device("cpu", "cpu", small) == "cpu"
    base, adapted = bert_pair()
    engine = BlendEngine(copy.deepcopy(base), state(base), state(adapted), reference_device="cpu")
    assert engine.reference_location == "device"  # a CPU model: the references are beside it either way
    same = BlendEngine(copy.deepcopy(base), state(base), state(base))
    assert same.reference_location == "none"
