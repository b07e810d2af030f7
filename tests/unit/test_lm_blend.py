"""``harness blend`` on tiny llama, gpt2, qwen2 and BART checkpoints: streamed shard by shard into standard
sharded safetensors, tied and untied heads, resized vocabularies, adapters, and the shared checks; every output is
reloaded with ``from_pretrained`` and compared with the base, the fine-tune or the lerp definition.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from _lm_models import ARCHS, VOCAB, lm_logits, loaded, make_adapter, model, save
from _models import state, with_state
from harness.cli import main
from harness.errors import BlendError
from harness.models.blend import interpolate
from harness.pipeline import RunOptions
from harness.pipeline.blend import blend_checkpoint

try:
    from tests.conftest import WORDS
except ImportError:  # pragma: no cover
    from conftest import WORDS


def _reload(path, bart=False):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return (AutoModelForSeq2SeqLM if bart else AutoModelForCausalLM).from_pretrained(str(path)).eval()


def _pair(tmp_path, arch, tie_base, tie_ft, **kw):
    b, a = model(arch, 1, tie=tie_base, **kw), model(arch, 2, tie=tie_ft, **kw)
    return b, a, save(b, tmp_path / "base"), save(a, tmp_path / "ft")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie_base,tie_ft", [(True, False), (False, True)])
def test_tied_and_untied_heads_reproduce_both_endpoints_after_reload(tmp_path, arch, tie_base, tie_ft):
    b, a, bd, ad = _pair(tmp_path, arch, tie_base, tie_ft)
    assert not torch.equal(b.get_output_embeddings().weight, a.get_output_embeddings().weight)
    for alpha, want in ((0.0, b), (1.0, a)):
        res = blend_checkpoint(bd, ad, alpha, tmp_path / f"out{alpha}")
        assert json.loads((res.path / "config.json").read_text())["tie_word_embeddings"] is False
        assert any("tie_word_embeddings=false" in n for n in res.notes)
        m = _reload(res.path)
        assert m.get_output_embeddings().weight is not m.get_input_embeddings().weight
        assert torch.equal(lm_logits(m), lm_logits(want)), alpha
    res = blend_checkpoint(bd, ad, 0.3, tmp_path / "mid")
    m = _reload(res.path)
    head_b, head_a = b.get_output_embeddings().weight, a.get_output_embeddings().weight  # tied side: its embedding
    assert torch.equal(m.get_output_embeddings().weight, torch.lerp(head_b, head_a, 0.3))
    assert torch.equal(m.get_input_embeddings().weight,
                       torch.lerp(b.get_input_embeddings().weight, a.get_input_embeddings().weight, 0.3))


def test_the_reported_case_tied_base_untied_fine_tune_alpha_one_through_the_cli(tmp_path):
    """The issue's report: `harness blend --alpha 1` of a tied base and an untied fine-tune dropped the fine-tune's
    head (logits off by 0.0125); now the reloaded logits are the fine-tune's exactly."""
    _, a, bd, ad = _pair(tmp_path, "llama", True, False)
    assert main(["blend", "--base", str(bd), "--adapted", str(ad), "--alpha", "1", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert torch.equal(lm_logits(_reload(tmp_path / "o")), lm_logits(a))


@pytest.mark.parametrize("arch", ARCHS)
def test_tied_pair_stays_tied_and_matches_the_lerp_definition(tmp_path, arch):
    b, a, bd, ad = _pair(tmp_path, arch, True, True)
    res = blend_checkpoint(bd, ad, 0.4, tmp_path / "out")
    assert res.blend_path == "stream" and not res.notes
    m = _reload(res.path)
    assert m.get_output_embeddings().weight is m.get_input_embeddings().weight
    want = with_state(b, interpolate(state(b), state(a), 0.4))
    assert torch.equal(lm_logits(m), lm_logits(want))


def test_tied_bart_encoder_decoder_pair(tmp_path):
    b, a, bd, ad = _pair(tmp_path, "bart", True, True)
    res = blend_checkpoint(bd, ad, 0.6, tmp_path / "out")
    m = _reload(res.path, bart=True)
    assert m.model.encoder.embed_tokens.weight is m.model.shared.weight is m.lm_head.weight
    want = with_state(b, interpolate(state(b), state(a), 0.6))
    assert torch.equal(lm_logits(m), lm_logits(want))
    assert torch.equal(lm_logits(_reload(blend_checkpoint(bd, ad, 1.0, tmp_path / "one").path, bart=True)),
                       lm_logits(a))


def test_bart_with_a_stored_alias_of_other_values_would_be_retied_and_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, bd, ad = _pair(tmp_path, "bart", True, True)
    sd = load_file(str(ad / "model.safetensors"))
    sd["model.encoder.embed_tokens.weight"] = sd["model.shared.weight"] + 0.5  # saved untied, config ties it
    save_file(sd, str(ad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BlendError, match="tie"):
        blend_checkpoint(bd, ad, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_resized_vocabulary_blends_shared_rows_and_keeps_added_rows(tmp_path):
    b = model("llama", 1)
    a = model("llama", 2, vocab=VOCAB + 4)
    bd = save(b, tmp_path / "base")
    ad = save(a, tmp_path / "ft", words=list(WORDS) + ["newa", "newb", "newc", "newd"])
    res = blend_checkpoint(bd, ad, 0.25, tmp_path / "out")
    assert res.tokenizer_from == "adapted" and any("vocabulary resized" in n for n in res.notes)
    assert "vocabulary resized" in json.loads((res.path / "config.json").read_text())["harness_blend"]["notes"][0]
    m = _reload(res.path)
    emb, head = m.get_input_embeddings().weight, m.get_output_embeddings().weight
    assert emb.shape[0] == VOCAB + 4 and m.config.vocab_size == VOCAB + 4
    for got, wb, wa in ((emb, b.get_input_embeddings().weight, a.get_input_embeddings().weight),
                        (head, b.get_output_embeddings().weight, a.get_output_embeddings().weight)):
        assert torch.equal(got[:VOCAB], torch.lerp(wb, wa[:VOCAB], 0.25))
        assert torch.equal(got[VOCAB:], wa[VOCAB:])
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(res.path))) == len(AutoTokenizer.from_pretrained(str(ad)))
    assert torch.equal(lm_logits(_reload(blend_checkpoint(bd, ad, 1.0, tmp_path / "one").path)), lm_logits(a))


def test_resized_vocabulary_with_a_tokenizer_that_does_not_extend_the_base_is_refused(tmp_path):
    words = list(WORDS)
    words[0], words[1] = words[1], words[0]  # same tokens, other ids
    bd = save(model("llama", 1), tmp_path / "base")
    ad = save(model("llama", 2, vocab=VOCAB + 4), tmp_path / "ft", words=words + ["newa"])
    with pytest.raises(BlendError, match=r"(?s)does not extend the base.*" + words[1]):
        blend_checkpoint(bd, ad, 0.5, tmp_path / "out")
    assert main(["blend", "--base", str(bd), "--adapted", str(ad), "--alpha", "0.5", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


def test_output_is_standard_sharded_safetensors_with_an_index(tmp_path):
    b, a, bd, ad = _pair(tmp_path, "qwen2", False, False)
    res = blend_checkpoint(bd, ad, 0.5, tmp_path / "out", max_shard_bytes=6000)
    index = json.loads((res.path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in res.path.glob("model-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"]) == set(state(b))
    want = with_state(b, interpolate(state(b), state(a), 0.5))
    assert torch.equal(lm_logits(_reload(res.path)), lm_logits(want))


def test_bf16_output_dtype_and_fp32_arithmetic(tmp_path):
    b, a, bd, ad = _pair(tmp_path, "gpt2", False, False, dtype=torch.bfloat16)
    res = blend_checkpoint(bd, ad, 0.3, tmp_path / "out", options=RunOptions(dtype="bf16"))
    from safetensors.torch import load_file

    got = load_file(str(res.path / "model.safetensors"))
    want = interpolate(state(b), state(a), 0.3)
    assert all(got[k].dtype == torch.bfloat16 and torch.equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_blend_as_by_sweep(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    _, _, bd, ad = _pair(tmp_path, "llama", False, False)
    sd = load_file(str(ad / "model.safetensors"))
    k = "model.layers.1.mlp.up_proj.weight"
    sd[k][3, 4] = bad
    save_file(sd, str(ad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BlendError, match=rf"(?s)adapted weights hold NaN.*{k}"):
        blend_checkpoint(bd, ad, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_different_architectures_and_shapes_are_refused_before_reading(tmp_path):
    bd = save(model("llama", 1), tmp_path / "base")
    gd = save(model("gpt2", 2), tmp_path / "gpt2")
    with pytest.raises(BlendError, match="different parameter names"):
        blend_checkpoint(bd, gd, 0.5, tmp_path / "out")


@pytest.mark.parametrize("kind,path", [("lora", "lora-stream"), ("dora", "merged")])
def test_adapter_blend_reloads_and_matches_the_lerp_definition(tmp_path, kind, path):
    bd = save(model("llama", 1, tie=True), tmp_path / "base")
    ad = make_adapter(bd, tmp_path / "ad", "llama", kind=kind, seed=5)
    res = blend_checkpoint(bd, ad, 0.5, tmp_path / "out")
    assert res.blend_path == path
    prov = json.loads((res.path / "config.json").read_text())["harness_blend"]
    assert prov["blend_path"] == path and prov["adapted_kind"] == kind
    ref = loaded(bd)
    from harness.models.adapters import load_adapted

    merged = load_adapted(ref, ad).state_dict
    want = with_state(ref.model, interpolate(state(ref.model), merged, 0.5))
    torch.testing.assert_close(lm_logits(_reload(res.path)), lm_logits(want), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["lora", "rslora", "embed"])
def test_streamed_adapter_blend_matches_peft_merged_lerp(tmp_path, arch, kind):
    """The streamed LoRA path (base read shard by shard, W + alpha s B A per row chunk) against the lerp of the base
    and peft's own merged model: llama q/k/v/o + MLP, gpt2 Conv1D (fan_in_fan_out, lora_only biases), qwen2;
    rsLoRA's scale; embedding LoRA."""
    bd = save(model(arch, 1, tie=False), tmp_path / "base")
    ad = make_adapter(bd, tmp_path / "ad", arch, kind=kind, seed=7)
    res = blend_checkpoint(bd, ad, 0.3, tmp_path / "out", max_shard_bytes=20_000)
    assert res.blend_path == "lora-stream"
    assert json.loads((res.path / "model.safetensors.index.json").read_text())["weight_map"]
    from _lm_models import peft_merged

    base = _reload(bd)
    want = with_state(base, interpolate(state(base), state(peft_merged(bd, ad)), 0.3))
    torch.testing.assert_close(lm_logits(_reload(res.path)), lm_logits(want), rtol=1e-5, atol=2e-5)


def test_streamed_adapter_rank_pattern_and_modules_to_save(tmp_path):
    """Per-module ranks and alphas resolve as peft resolves them; a modules_to_save head is interpolated."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from _lm_models import peft_merged
    from _models import save_perturbed_adapter

    bd = save(model("llama", 1, tie=False), tmp_path / "base")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
                     alpha_pattern={"q_proj": 3}, modules_to_save=["lm_head"], task_type="CAUSAL_LM")
    ad = save_perturbed_adapter(AutoModelForCausalLM.from_pretrained(str(bd)), cfg, tmp_path / "ad", seed=3,
                                std=0.1)
    res = blend_checkpoint(bd, ad, 0.6, tmp_path / "out")
    assert res.blend_path == "lora-stream"
    base = _reload(bd)
    want = with_state(base, interpolate(state(base), state(peft_merged(bd, ad)), 0.6))
    torch.testing.assert_close(lm_logits(_reload(res.path)), lm_logits(want), rtol=1e-5, atol=2e-5)


def test_streamed_adapter_blend_reads_one_tensor_at_a_time(tmp_path, monkeypatch):
    """The base is never loaded whole: no from_pretrained of the base, and every read is one tensor or a row
    chunk of one (the memory bound of :mod:`harness.models.blend_stream`)."""
    import transformers

    bd = save(model("llama", 1, tie=False), tmp_path / "base")
    ad = make_adapter(bd, tmp_path / "ad", "llama", seed=8)

    def refuse(*a, **k):
        raise AssertionError("the streamed path must not load a whole model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    assert blend_checkpoint(bd, ad, 0.5, tmp_path / "out").blend_path == "lora-stream"


def test_adapter_on_a_different_recorded_base_is_exit_2(tmp_path):
    bd = save(model("llama", 1), tmp_path / "base")
    other = save(model("llama", 3), tmp_path / "other")
    ad = make_adapter(bd, tmp_path / "ad", "llama", seed=6)
    assert main(["blend", "--base", str(other), "--adapted", str(ad), "--alpha", "0.5", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    shutil.rmtree(bd)  # the recorded base is gone: unverifiable, so warned about and accepted
    assert main(["blend", "--base", str(other), "--adapted", str(ad), "--alpha", "0.5", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 0


# ------------------------------------------------------------------------------------ real model (slow) --

@pytest.mark.slow
def test_smollm2_lora_blend_reloads_and_matches_the_sweeps_in_memory_logits(tmp_path, smollm2_path):
    """SmolLM2-135M-Instruct + a LoRA adapter with random (non-zero) B: `harness blend --alpha 0.5` reloads with
    AutoModelForCausalLM and matches the in-memory LoRA-scale engine the sweep uses (merged vs unmerged rounding
    only), and the merged-path lerp definition."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.adapters import load_adapted
    from harness.models.arch import load_any
    from harness.models.blend import BlendEngine

    base = smollm2_path
    m = AutoModelForCausalLM.from_pretrained(str(base))
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    torch.manual_seed(0)
    get_peft_model(m, cfg).save_pretrained(str(tmp_path / "adapter"))
    assert main(["blend", "--base", str(base), "--adapted", str(tmp_path / "adapter"), "--alpha", "0.5",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    x = tok(["The capital of France is", "Two plus two equals"], return_tensors="pt", padding=True)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    with torch.no_grad():
        got = reloaded(**x).logits
    live = load_any(base)
    with torch.no_grad():
        base_logits = live.model(**x).logits
    adp = load_adapted(live, tmp_path / "adapter", lora_scale=True)
    engine = BlendEngine(live.model, state(live.model), adp.state_dict, lora=adp.lora)
    engine.apply(0.5)
    with torch.no_grad():
        want = live.model(**x).logits
    assert (got - base_logits).abs().max() > 0.1  # the adapter matters
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-3)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("text", ["[1, 2]", json.dumps({"peft_type": "LORA", "r": "four", "target_modules": ["q_proj"]})])
def test_bad_adapter_config_is_exit_2_on_the_lora_scale_path(tmp_path, text):
    bd = save(model("llama", 1), tmp_path / "base")
    ad = make_adapter(bd, tmp_path / "ad", "llama", seed=7)
    (ad / "adapter_config.json").write_text(text)
    assert main(["blend", "--base", str(bd), "--adapted", str(ad), "--alpha", "0.5", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
