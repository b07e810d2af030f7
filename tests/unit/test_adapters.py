"""Tests of harness.models.adapters.load_adapted: full checkpoints and PEFT adapters (LoRA, rsLoRA, DoRA) on the
tiny base, through the merged path.

For plain LoRA the blend at alpha must equal "the LoRA update scaled by alpha" on the LoRA layers,
W_base + alpha * (lora_alpha / r) * B @ A, while the ``modules_to_save`` head and trained biases are interpolated as
weights; alpha 1 must reproduce PEFT's own adapter-applied model. Loading never changes the base model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from _models import (LORA_ALPHA, LORA_R, adapter_tensors, inputs, logits, lora_scale, make_lora_adapter,
                     peft_logits, state, with_state)
from harness.errors import ModelError
from harness.models.adapters import load_adapted
from harness.models.blend import interpolate
from harness.models.load import load_model, model_fingerprint

LORA_LAYERS = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
ALPHAS = (0.0, 0.3, 0.5, 1.0)


@pytest.fixture(scope="module")
def base_dir(tiny_pair) -> Path:
    return tiny_pair[0]


@pytest.fixture(scope="module")
def adapters(base_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lora": make_lora_adapter(base_dir, root / "lora", seed=1, bias="lora_only"),
        "lora_all_bias": make_lora_adapter(base_dir, root / "lora_all_bias", seed=2, bias="all"),
        "rslora": make_lora_adapter(base_dir, root / "rslora", seed=3, use_rslora=True),
        "dora": make_lora_adapter(base_dir, root / "dora", seed=4, use_dora=True),
    }


@pytest.fixture(scope="module")
def base(base_dir):
    return load_model(base_dir, device="cpu")


def _blend_logits(base_model, base_sd, adapted_sd, alpha, batch=None):
    return logits(with_state(base_model, interpolate(base_sd, adapted_sd, alpha)), batch)


# ------------------------------------------------------------------------------------------- base safety --

@pytest.mark.parametrize("kind", ["lora", "lora_all_bias", "rslora", "dora"])
def test_loading_an_adapter_never_changes_the_base(base_dir, adapters, kind):
    lm = load_model(base_dir, device="cpu")
    batch = inputs(seed=5)
    before_logits, before_sd = logits(lm.model, batch), state(lm.model)
    adp = load_adapted(lm, adapters[kind])
    assert torch.equal(logits(lm.model, batch), before_logits)
    after = lm.model.state_dict()
    assert set(after) == set(before_sd)
    assert all(torch.equal(after[k], before_sd[k]) for k in before_sd)
    assert not any("lora" in n for n, _ in lm.model.named_modules())  # no PEFT layers injected into the base
    # the adapter does change the model: the adapted state differs from the base on the LoRA layers
    assert not torch.equal(adp.state_dict[LORA_LAYERS[0] + ".weight"], before_sd[LORA_LAYERS[0] + ".weight"])


# ------------------------------------------------------------------------------------------- LoRA maths --

@pytest.mark.parametrize("kind,rslora", [("lora", False), ("lora_all_bias", False), ("rslora", True)])
def test_lora_blend_scales_the_update_by_alpha(base, adapters, kind, rslora):
    adp = load_adapted(base, adapters[kind])
    assert adp.kind == "lora"
    assert adp.info["r"] == LORA_R and adp.info["lora_alpha"] == LORA_ALPHA
    tensors = adapter_tensors(adapters[kind])
    scale = lora_scale(rslora=rslora)
    assert scale == (LORA_ALPHA / 2 if rslora else LORA_ALPHA / 4)  # r = 4: sqrt(r) = 2
    base_sd = state(base.model)
    for alpha in ALPHAS:
        blend = interpolate(base_sd, adp.state_dict, alpha)
        for layer in LORA_LAYERS:
            a, b = tensors[f"{layer}.lora_A.weight"], tensors[f"{layer}.lora_B.weight"]
            want = base_sd[f"{layer}.weight"] + alpha * scale * (b @ a)
            torch.testing.assert_close(blend[f"{layer}.weight"], want, rtol=0, atol=2e-6,
                                       msg=f"{kind} {layer} alpha={alpha}")


def _trained_biases(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bias tensors the adapter carries, in the base key space (``query.base_layer.bias`` -> ``query.bias``;
    the ``modules_to_save`` copy of the head is handled separately)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(".bias") and "modules_to_save" not in k and "original_module" not in k \
                and not k.startswith("classifier."):
            out[k.replace(".base_layer.", ".")] = v
    return out


@pytest.mark.parametrize("kind", ["lora", "lora_all_bias", "rslora"])
def test_head_and_biases_are_interpolated_as_weights(base, adapters, kind):
    adp = load_adapted(base, adapters[kind])
    tensors = adapter_tensors(adapters[kind])
    base_sd = state(base.model)
    biases = _trained_biases(tensors)
    if kind == "lora_all_bias":
        assert len(biases) > len(LORA_LAYERS)  # bias="all": every bias was trained, not only the LoRA layers'
        assert "bert.encoder.layer.0.output.dense.bias" in biases
    else:
        assert set(biases) == {f"{layer}.bias" for layer in LORA_LAYERS}
    head = {k: tensors[k] for k in ("classifier.weight", "classifier.bias")}
    carried = {**biases, **head}
    for k, v in carried.items():
        assert not torch.equal(v, base_sd[k]), k  # the adapter really trained it
    for alpha in ALPHAS:
        blend = interpolate(base_sd, adp.state_dict, alpha)
        for k, v in carried.items():
            torch.testing.assert_close(blend[k], torch.lerp(base_sd[k], v, alpha), rtol=0, atol=1e-7,
                                       msg=f"{k} alpha={alpha}")
        untouched = set(base_sd) - set(carried) - {f"{layer}.weight" for layer in LORA_LAYERS}
        for k in untouched:
            assert torch.equal(blend[k], base_sd[k]), (k, alpha)


@pytest.mark.parametrize("kind", ["lora", "lora_all_bias", "rslora", "dora"])
def test_alpha_one_equals_the_peft_model_and_alpha_zero_the_base(base_dir, base, adapters, kind):
    adp = load_adapted(base, adapters[kind])
    assert adp.kind == ("dora" if kind == "dora" else "lora")
    batch = inputs(seed=6)
    base_sd = state(base.model)
    want = peft_logits(base_dir, adapters[kind], batch)
    assert not torch.allclose(want, logits(base.model, batch), atol=1e-3)  # the adapter matters
    torch.testing.assert_close(_blend_logits(base.model, base_sd, adp.state_dict, 1.0, batch), want,
                               rtol=0, atol=1e-5)
    assert torch.equal(_blend_logits(base.model, base_sd, adp.state_dict, 0.0, batch), logits(base.model, batch))


def test_dora_is_merged_first_then_interpolated(base, adapters):
    """DoRA's merged weight is not linear in the LoRA scale; the blend is the interpolation of merged weights."""
    adp = load_adapted(base, adapters["dora"])
    assert adp.info["use_dora"] is True
    base_sd = state(base.model)
    k = LORA_LAYERS[0] + ".weight"
    merged = adp.state_dict[k]
    for alpha in (0.25, 0.5):
        torch.testing.assert_close(interpolate(base_sd, adp.state_dict, alpha)[k],
                                   base_sd[k] + alpha * (merged - base_sd[k]), rtol=0, atol=2e-6)


# ------------------------------------------------------------------------------------------- strictness --

def _copy_adapter(src: Path, dst: Path, rename: tuple[str, str] | None = None, drop: str | None = None) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    f = dst / "adapter_model.safetensors"
    sd = load_file(str(f))
    if rename:
        sd = {k.replace(*rename): v for k, v in sd.items()}
    if drop:
        sd = {k: v for k, v in sd.items() if drop not in k}
    save_file(sd, str(f), metadata={"format": "pt"})
    return dst


def test_adapter_tensor_matching_no_module_is_an_error(base, adapters, tmp_path):
    bad = _copy_adapter(adapters["lora"], tmp_path / "renamed",
                        rename=("layer.1.attention.self.value.lora_A", "layer.1.attention.self.valu.lora_A"))
    with pytest.raises(ModelError, match=r"(?s)match no module.*valu\.lora_A.*--base"):
        load_adapted(base, bad)


def test_adapter_missing_tensors_is_an_error(base, adapters, tmp_path):
    bad = _copy_adapter(adapters["lora"], tmp_path / "dropped", drop="layer.1.attention.self.value.lora_B")
    with pytest.raises(ModelError, match=r"(?s)lacks tensors.*value\.lora_B"):
        load_adapted(base, bad)


def test_pickle_only_adapter_is_refused(base, adapters, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    shutil.copytree(adapters["lora"], d)
    torch.save(load_file(str(d / "adapter_model.safetensors")), d / "adapter_model.bin")
    (d / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="pickle"):
        load_adapted(base, d)


def test_adapter_folder_as_a_full_model_points_to_adapted(adapters):
    with pytest.raises(ModelError, match="--adapted"):
        load_model(adapters["lora"], device="cpu")


def test_adapter_fingerprint_depends_on_the_base(tiny_pair, adapters, tmp_path):
    """The adapted model is base + adapter: the same adapter on another base is another model, so its
    fingerprint (a results-store key part) must differ."""
    from _models import bert

    other_dir = tmp_path / "other-base"
    m = bert(11)
    m.config.id2label, m.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    m.save_pretrained(str(other_dir))
    shutil.copy(tiny_pair[0] / "tokenizer.json", other_dir)
    shutil.copy(tiny_pair[0] / "tokenizer_config.json", other_dir)
    b1, b2 = load_model(tiny_pair[0], device="cpu"), load_model(other_dir, device="cpu")
    with pytest.raises(ModelError, match=r"(?s)trained on another base model.*base_model_name_or_path"):
        load_adapted(b2, adapters["lora"])  # the adapter records tiny_pair[0], a folder with another fingerprint
    moved = _record_base(adapters["lora"], tmp_path / "moved", other_dir)  # the override the error names
    f1, f2 = load_adapted(b1, adapters["lora"]).fingerprint, load_adapted(b2, moved).fingerprint
    assert f1 != f2
    assert load_adapted(b1, adapters["lora"]).fingerprint == f1  # and it is stable


def _record_base(src: Path, dst: Path, base, key: str = "base_model_name_or_path") -> Path:
    import json

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg[key] = str(base)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_recorded_base_checks(base, adapters, tmp_path, caplog):
    """A harness fingerprint that differs is an error; a hub id naming the base folder passes; an unverifiable
    name is warned about, never silently accepted."""
    bad = _record_base(adapters["lora"], tmp_path / "fp", "0" * 64, key="harness_base_fingerprint")
    with pytest.raises(ModelError, match="another base model"):
        load_adapted(base, bad)
    good = _record_base(adapters["lora"], tmp_path / "fp-ok", base.fingerprint, key="harness_base_fingerprint")
    load_adapted(base, good)
    hub = _record_base(adapters["lora"], tmp_path / "hub", f"org/{base.path.name}")
    with caplog.at_level("WARNING"):
        load_adapted(base, hub)
    assert "cannot be checked" not in caplog.text
    other = _record_base(adapters["lora"], tmp_path / "other", "org/some-other-model")
    with caplog.at_level("WARNING"):
        load_adapted(base, other)
    assert "cannot be checked" in caplog.text


def test_loading_an_adapter_makes_no_hub_lookup_and_accepts_saved_embeddings(base, base_dir, adapters, tmp_path,
                                                                               monkeypatch):
    """New-user trial (2026-12-01): the strict key check called peft's ``get_peft_model_state_dict`` with its
    default ``save_embedding_layers="auto"``, which asks the Hugging Face Hub for the recorded base's config.json
    (a network call, and a warning offline). Now no lookup happens, and an adapter saved with its embedding
    matrices (as peft does for a resized vocabulary) still loads: they are accepted, not required."""
    import peft.utils.save_and_load as sl
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    calls = []
    monkeypatch.setattr(sl, "check_file_exists_on_hf_hub", lambda *a, **k: calls.append(a))
    load_adapted(base, _record_base(adapters["lora"], tmp_path / "hub", "org/some-other-model"))
    assert calls == []
    pm = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(str(base_dir)), str(adapters["lora"]))
    pm.save_pretrained(str(tmp_path / "emb"), save_embedding_layers=True)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "emb" / "adapter_model.safetensors"), framework="pt") as fh:
        assert any("word_embeddings" in k for k in fh.keys())
    adp = load_adapted(base, tmp_path / "emb")
    plain = load_adapted(base, adapters["lora"])
    assert all(torch.equal(adp.state_dict[k], plain.state_dict[k]) for k in plain.state_dict)


# ------------------------------------------------------------------------------------------ full models --

def test_full_checkpoint_loads_its_own_weights(base, tiny_pair):
    from safetensors.torch import load_file

    adp = load_adapted(base, tiny_pair[1])
    assert adp.kind == "full"
    assert adp.fingerprint == model_fingerprint(tiny_pair[1])
    assert adp.id2label == {0: "negative", 1: "positive"}
    saved = load_file(str(tiny_pair[1] / "model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(adp.state_dict[k], v), k


def _sharded(src: Path, dst: Path) -> Path:
    from transformers import BertForSequenceClassification

    BertForSequenceClassification.from_pretrained(str(src)).save_pretrained(str(dst), max_shard_size="20KB")
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, dst)
    return dst


def test_sharded_checkpoint_follows_the_index(base, tiny_pair, tmp_path):
    from safetensors.torch import load_file

    d = _sharded(tiny_pair[1], tmp_path / "sharded")
    assert (d / "model.safetensors.index.json").is_file() and not (d / "model.safetensors").exists()
    adp = load_adapted(base, d)
    saved = load_file(str(tiny_pair[1] / "model.safetensors"))
    assert all(torch.equal(adp.state_dict[k], v) for k, v in saved.items())



def test_stray_weights_file_beside_shards_is_ignored(base, tiny_pair, tmp_path):
    from safetensors.torch import load_file

    d = _sharded(tiny_pair[1], tmp_path / "sharded-stray")
    shutil.copy(tiny_pair[0] / "model.safetensors", d / "model.safetensors")  # the base's weights, stray
    adp = load_adapted(base, d)
    saved = load_file(str(tiny_pair[1] / "model.safetensors"))
    assert all(torch.equal(adp.state_dict[k], v) for k, v in saved.items())



def test_wrapper_prefix_in_a_full_checkpoint_is_a_loud_error(base, tiny_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "wrapped"
    shutil.copytree(tiny_pair[1], d)
    sd = load_file(str(d / "model.safetensors"))
    save_file({"module." + k: v for k, v in sd.items()}, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="module."):
        load_adapted(base, d)


def test_an_adapter_is_evaluated_alone_as_the_sweeps_alpha_1(adapters, base_dir, tiny_suites, tmp_path, capsys):
    """LM user trial: ``eval --model ADAPTER`` was refused, and its message told to pass the adapter "as --adapted
    together with --base", which eval lacks. Now eval scores an adapter merged into its base (given, or the folder
    its adapter_config.json records): the same numbers as the sweep's alpha 1; without a base it says so."""
    import json

    from harness.cli import main

    suite = str(tiny_suites[0])
    common = ["--suite", suite, "--no-store", "--no-report", "--n-resamples", "20", "--quiet"]
    assert main(["eval", "--model", str(adapters["lora"]), "--base", str(base_dir), *common,
                 "--out", str(tmp_path / "e")]) == 0, capsys.readouterr().err
    assert main(["eval", "--model", str(adapters["lora"]), *common, "--out", str(tmp_path / "rec")]) == 0
    assert main(["sweep", "--base", str(base_dir), "--adapted", str(adapters["lora"]), "--alphas", "0,1",
                 "--select", "id-only", *common, "--out", str(tmp_path / "s")]) == 0, capsys.readouterr().err
    ev = json.loads((tmp_path / "e" / "summary.json").read_text())["results"]["model"]
    rec = json.loads((tmp_path / "rec" / "summary.json").read_text())["results"]["model"]
    sw = json.loads((tmp_path / "s" / "summary.json").read_text())["results"]["adapted"]
    for split, entry in ev[next(iter(ev))].items():
        want = sw[next(iter(sw))][split]["metrics"]
        # the sweep's blend at alpha 1 is a lerp (base + 1 * (adapted - base)): equal up to float rounding
        assert {k: v["value"] for k, v in entry["metrics"].items()} == pytest.approx(
            {k: v["value"] for k, v in want.items()}, rel=1e-6)
        assert entry["metrics"]["accuracy"]["value"] == want["accuracy"]["value"]
    assert rec == ev  # the recorded base is the same folder
    base_vals = json.loads((tmp_path / "s" / "summary.json").read_text())["results"]["base"]
    assert base_vals != sw  # the adapter changes the scores, so the equality above is not trivial

    orphan = _record_base(adapters["lora"], tmp_path / "orphan", "org/some-model")
    capsys.readouterr()
    assert main(["eval", "--model", str(orphan), *common, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a PEFT adapter needs the base model it adapts" in err and "pass --base BASE_FOLDER" in err
    assert main(["sweep", "--base", str(adapters["lora"]), "--adapted", str(adapters["lora"]), *common,
                 "--select", "id-only", "--out", str(tmp_path / "x")]) == 2
    assert "harness eval --model ADAPTER --base BASE" in capsys.readouterr().err
