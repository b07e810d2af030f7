"""PEFT adapters on decoder-family models (llama, gpt2 Conv1D with fan_in_fan_out, qwen2; LoRA, rsLoRA, DoRA,
embedding LoRA; a llama sequence classifier) through both blend paths.

* merged path: ``load_adapted`` at alpha 1 reproduces peft's own ``merge_and_unload`` logits, alpha 0 the base.
* LoRA-scale path (``lora_scale=True`` + ``BlendEngine(..., lora=...)``): one model plus the factors; at every
  alpha the logits equal those of the lerp definition ``interpolate(base, merged, alpha)`` within the fp32
  tolerance documented in :mod:`harness.models.lora_scale` (atol 2e-5, rtol 1e-5), and alpha 0 gives the base
  exactly. DoRA stays on the merged path.
"""

from __future__ import annotations

import pytest
import torch

from _lm_models import ARCHS, loaded, lm_logits, make_adapter, model, peft_merged, save
from _models import state, with_state
from harness.models.adapters import load_adapted
from harness.models.blend import BlendEngine, interpolate
from harness.models.lora_scale import LoraDelta, blend_in_place

KINDS = ("lora", "rslora", "dora", "embed")
CASES = [(a, k) for a in ARCHS for k in KINDS]
TOL = {"rtol": 1e-5, "atol": 2e-5}  # LoRA-scale vs lerp of merged weights: fp32 rounding only


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("lm-adapters")


@pytest.fixture(scope="module")
def bases(root):
    out = {arch: save(model(arch, 1), root / arch) for arch in ARCHS}
    out["llama-cls"] = save(model("llama", 1, seq_cls=True), root / "llama-cls")
    return out


_made: dict = {}


def _adapter(bases, root, arch, kind, seq_cls=False):
    key = (arch, kind, seq_cls)
    if key not in _made:
        base = bases["llama-cls" if seq_cls else arch]
        _made[key] = make_adapter(base, root / f"ad-{arch}-{kind}-{seq_cls}", arch, seed=len(_made) + 3, kind=kind,
                                  seq_cls=seq_cls, modules_to_save=["score"] if seq_cls else None)
    return _made[key]


@pytest.mark.parametrize("arch,kind", CASES)
def test_merged_path_matches_peft_merge_and_unload(bases, root, arch, kind):
    ad = _adapter(bases, root, arch, kind)
    lm = loaded(bases[arch])
    base_sd = state(lm.model)
    adp = load_adapted(lm, ad)
    assert adp.kind == ("dora" if kind == "dora" else "lora") and adp.lora is None
    want = lm_logits(peft_merged(bases[arch], ad))
    assert not torch.allclose(want, lm_logits(lm.model), atol=1e-3)  # the adapter matters
    torch.testing.assert_close(lm_logits(with_state(lm.model, interpolate(base_sd, adp.state_dict, 1.0))), want,
                               rtol=0, atol=1e-5)
    assert torch.equal(lm_logits(with_state(lm.model, interpolate(base_sd, adp.state_dict, 0.0))),
                       lm_logits(lm.model))


def _lora_scale_matches_lerp(base_dir, ad, seq_cls=False):
    ref_base = loaded(base_dir, seq_cls)
    base_sd = state(ref_base.model)
    merged = load_adapted(ref_base, ad).state_dict
    lm = loaded(base_dir, seq_cls)
    adp = load_adapted(lm, ad, lora_scale=True)
    assert isinstance(adp.lora, LoraDelta) and adp.info["blend_path"] == "lora-scale"
    engine = BlendEngine(lm.model, base_sd, adp.state_dict, lora=adp.lora)
    assert engine.path == "lora-scale"
    want0 = lm_logits(ref_base.model)
    for alpha in (0.0, 0.3, 1.0, 0.5, 0.0):
        engine.apply(alpha)
        got = lm_logits(lm.model)
        if alpha == 0.0:
            assert torch.equal(got, want0)
        else:
            ref = lm_logits(with_state(ref_base.model, interpolate(base_sd, merged, alpha)))
            torch.testing.assert_close(got, ref, **TOL, msg=f"alpha={alpha}")
    return engine, base_sd


@pytest.mark.parametrize("arch,kind", [c for c in CASES if c[1] != "dora"])
def test_lora_scale_path_matches_the_lerp_definition(bases, root, arch, kind):
    engine, base_sd = _lora_scale_matches_lerp(bases[arch], _adapter(bases, root, arch, kind))
    assert set(engine.lora.target_names) <= engine.changed_names()
    n_weights = sum(v.numel() * v.element_size() for v in base_sd.values())
    assert engine.n_bytes < n_weights / 2  # the factors (and a few biases), not copies of the model


def test_sequence_classifier_head_is_interpolated_on_the_lora_scale_path(bases, root):
    ad = _adapter(bases, root, "llama", "lora", seq_cls=True)
    engine, _ = _lora_scale_matches_lerp(bases["llama-cls"], ad, seq_cls=True)
    assert "score.weight" in engine.changed_names()
    assert "score.weight" in {n for g in engine._groups for n in g.names}  # lerped as a weight


@pytest.mark.parametrize("arch", ARCHS)
def test_dora_stays_on_the_merged_path(bases, root, arch):
    adp = load_adapted(loaded(bases[arch]), _adapter(bases, root, arch, "dora"), lora_scale=True)
    assert adp.lora is None and adp.kind == "dora" and adp.info["blend_path"] == "merged"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_blend_in_place_writes_the_lerp_of_merged_weights(bases, root, arch):
    ad = _adapter(bases, root, arch, "embed")
    ref = loaded(bases[arch])
    base_sd = state(ref.model)
    merged = load_adapted(ref, ad).state_dict
    lm = loaded(bases[arch])
    adp = load_adapted(lm, ad, lora_scale=True)
    blend_in_place(lm.model, adp.lora, adp.state_dict, 0.4)
    got = lm.model.state_dict()
    want = interpolate(base_sd, merged, 0.4)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6, msg=k)


def test_an_alpha_change_on_the_lora_scale_path_writes_no_weight(bases, root):
    lm = loaded(bases["llama"])
    adp = load_adapted(lm, _adapter(bases, root, "llama", "lora"), lora_scale=True)
    engine = BlendEngine(lm.model, state(lm.model), adp.state_dict, lora=adp.lora)
    weights = {n: (p.data_ptr(), p.detach().clone()) for n, p in lm.model.named_parameters() if "lora_" not in n}
    for alpha in (0.25, 0.75):
        engine.apply(alpha)
        assert all(p.data_ptr() == weights[n][0] and torch.equal(p, weights[n][1])
                   for n, p in lm.model.named_parameters() if "lora_" not in n)
        assert {m.scaling["default"] for m in engine.lora._layers} == {alpha * adp.lora.config.lora_alpha
                                                                      / adp.lora.config.r}
    assert engine.bytes_per_apply() == 0  # no weight is read or written: only the adapters' scale changes


@pytest.mark.slow
def test_compiled_layers_do_not_recompile_when_alpha_changes(bases, root):
    """--compile with a LoRA adapter: after the first alpha, further alphas reuse the compiled graph (torch.compile
    does not specialise peft's float scale: a recompile per alpha would cost a warm-up each) and give the eager
    logits."""
    from harness.models.scorer import compile_layers

    ad = _adapter(bases, root, "llama", "lora")
    lm, eager = loaded(bases["llama"]), loaded(bases["llama"])
    base_sd = state(lm.model)
    adp, adp_e = load_adapted(lm, ad, lora_scale=True), load_adapted(eager, ad, lora_scale=True)
    engine = BlendEngine(lm.model, base_sd, adp.state_dict, lora=adp.lora)
    ref = BlendEngine(eager.model, base_sd, adp_e.state_dict, lora=adp_e.lora)
    assert compile_layers(lm.model) == lm.model.config.num_hidden_layers
    torch._dynamo.reset()
    engine.apply(0.3)
    lm_logits(lm.model)  # compiles
    with torch._dynamo.config.patch(error_on_recompile=True):
        for alpha in (0.7, 1.0, 0.1):
            engine.apply(alpha)
            ref.apply(alpha)
            torch.testing.assert_close(lm_logits(lm.model), lm_logits(eager.model), rtol=1e-4, atol=1e-4)
