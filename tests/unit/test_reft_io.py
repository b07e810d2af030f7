"""Loading ReFT adaptations (harness.models.reft_io): the harness format, a pyreft 0.1.0 folder built here by the
layout read from its wheel, the pickle opt-in, orthogonality warnings and shape checks against the base."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import pytest
import torch

from _reft_models import HIDDEN, LAYERS, adapter, batch, tiny
from harness.errors import ModelError
from harness.models.reft import InterventionEngine, InterventionSpec
from harness.models.reft_io import CONFIG_NAME, WEIGHTS_NAME, load_reft, reft_format, save_reft


def logits(model, ad, ids, mask):
    engine = InterventionEngine(model, ad)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).logits
    engine.remove()
    return out


def test_harness_format_round_trip(tmp_path):
    ad = adapter("direft")
    save_reft(ad, tmp_path / "r", base_name="tiny-llama", base_fingerprint="abc", base_model_type="llama",
              training={"lr": 0.01})
    assert reft_format(tmp_path / "r") == "harness"
    cfg = json.loads((tmp_path / "r" / CONFIG_NAME).read_text())
    assert cfg["format"] == "harness-reft" and cfg["kind"] == "direft" and cfg["rank"] == 4
    assert cfg["interventions"][1] == {"layer": 1, "component": "block_output", "positions": "f1+l1", "rank": 4}
    assert cfg["base_model"]["fingerprint"] == "abc" and cfg["hidden_size"] == HIDDEN
    back = load_reft(tmp_path / "r")
    assert back.specs == ad.specs and back.kind == "direft" and back.num_layers == LAYERS
    assert back.info["base_model"]["name"] == "tiny-llama" and len(back.info["fingerprint"]) == 64
    model = tiny("llama")
    ids, mask = batch(pad="right")
    assert torch.equal(logits(model, back, ids, mask), logits(model, ad, ids, mask))


class _RotateLayer(torch.nn.Module):
    """pyreft's LowRankRotateLayer: weight (hidden, rank), orthogonal init."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n, m))
        torch.nn.init.orthogonal_(self.weight)


def pyreft_state(kind: str, mod) -> dict:
    """The state dict pyreft 0.1.0 saves for one intervention (read from pyreft/interventions.py and pyvene's
    Intervention base class): LoReFT's overridden state_dict (weight, bias, rotate_layer = R^T), or DiReFT's
    default one (embed_dim and interchange_dim buffers, the orthogonal parametrization's original and base,
    learned_source)."""
    if kind == "loreft":
        return OrderedDict(weight=mod.W.detach().clone(), bias=mod.b.detach().clone(),
                           rotate_layer=mod.R.detach().T.contiguous())
    holder = torch.nn.Module()
    holder.rotate_layer = torch.nn.utils.parametrizations.orthogonal(_RotateLayer(HIDDEN, mod.rank))
    holder.learned_source = torch.nn.Linear(HIDDEN, mod.rank)
    with torch.no_grad():
        holder.rotate_layer.weight = mod.R.detach().T.contiguous()  # through right_inverse
        holder.learned_source.weight.copy_(mod.W)
        holder.learned_source.bias.copy_(mod.b)
        mod.R.copy_(holder.rotate_layer.weight.T)  # the reference uses exactly what the file encodes
    holder.register_buffer("embed_dim", torch.tensor(HIDDEN))
    holder.register_buffer("interchange_dim", torch.tensor(HIDDEN))
    return holder.state_dict()


def write_pyreft(path, ad, components=None) -> None:
    """A folder as ReftModel.save (= pyvene IntervenableModel.save) writes it: config.json with the
    RepresentationConfig tuples as lists, intervention_types as class-repr strings, sorted_keys, and one
    pickled intkey_<key>.bin per intervention (key = layer_<l>_comp_<c>_unit_pos_nunit_1#<repeat>)."""
    path.mkdir(parents=True)
    cls = {"loreft": "LoreftIntervention", "direft": "DireftIntervention"}[ad.kind]
    reps, keys, seen = [], [], {}
    for i, (spec, mod) in enumerate(zip(ad.specs, ad.interventions)):
        comp = components[i] if components else "block_output"
        reps.append([spec.layer, comp, "pos", 1, mod.rank, None, None, None, None, None, None, None, None, None])
        stem = (f"comp_{comp.replace('.', '_')}_unit_pos_nunit_1" if "." in comp
                else f"layer_{spec.layer}_comp_{comp}_unit_pos_nunit_1")
        seen[stem] = seen.get(stem, -1) + 1
        keys.append(f"{stem}#{seen[stem]}")
        torch.save(pyreft_state(ad.kind, mod), path / f"intkey_{keys[-1]}.bin")
    cfg = {"representations": reps, "intervention_types": [f"<class 'pyreft.interventions.{cls}'>"] * len(reps),
           "mode": "parallel", "sorted_keys": keys, "model_type": "<class 'LlamaForCausalLM'>",
           "intervention_dimensions": [HIDDEN] * len(reps), "intervention_constant_sources": [True] * len(reps),
           "transformers_version": "4.45.1"}
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("kind", ["loreft", "direft"])
def test_pyreft_folder_loads_and_gives_the_same_edit(tmp_path, kind):
    """Unshared f1+l1 (pyreft's loreft/train.py doubles the layer list): the first half edits the first token,
    the second half the last one; repeated keys get #1."""
    specs = [InterventionSpec(0, "block_output", 1, 0), InterventionSpec(2, "block_output", 1, 0),
             InterventionSpec(0, "block_output", 0, 1), InterventionSpec(2, "block_output", 0, 1)]
    ad = adapter(kind, specs)
    write_pyreft(tmp_path / "p", ad)
    assert reft_format(tmp_path / "p") == "pyreft"
    loaded = load_reft(tmp_path / "p", positions="f1+l1", allow_pickle=True)
    assert loaded.kind == kind and loaded.specs == specs and loaded.info["format"] == "pyreft"
    for a, b in zip(ad.interventions, loaded.interventions):
        torch.testing.assert_close(a.R, b.R, rtol=0, atol=1e-6)
        assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    model = tiny("llama")
    ids, mask = batch(pad="left")
    torch.testing.assert_close(logits(model, loaded, ids, mask), logits(model, ad, ids, mask), rtol=0, atol=1e-5)
    shared = load_reft(tmp_path / "p", positions="f1+l1", share_weights=True, allow_pickle=True)
    assert all(s.positions == "f1+l1" for s in shared.specs)


def test_pyreft_module_path_components(tmp_path):
    ad = adapter("loreft", [InterventionSpec(1, "block_output", 0, 1)])
    write_pyreft(tmp_path / "p", ad, components=["model.layers[1].output"])
    loaded = load_reft(tmp_path / "p", positions="l1", allow_pickle=True)
    assert loaded.specs == [InterventionSpec(1, "block_output", 0, 1)]
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["representations"][0][1] = "model.layers[1].mlp.output"
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unsupported pyreft component"):
        load_reft(tmp_path / "p", positions="l1", allow_pickle=True)
    cfg["representations"][0][1] = "block_output"
    cfg["intervention_types"] = ["<class 'pyreft.interventions.NoreftIntervention'>"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="unsupported pyreft intervention type"):
        load_reft(tmp_path / "p", positions="l1", allow_pickle=True)


def test_pyreft_pickle_needs_allow_pickle_and_positions(tmp_path):
    write_pyreft(tmp_path / "p", adapter("loreft"))
    with pytest.raises(ModelError, match="allow-pickle") as e:
        load_reft(tmp_path / "p", positions="l1")
    assert "weights_only=True" in str(e.value)
    with pytest.raises(ModelError, match="positions"):
        load_reft(tmp_path / "p", allow_pickle=True)
    (tmp_path / "p" / "intkey_layer_0_comp_block_output_unit_pos_nunit_1#0.bin").unlink()
    with pytest.raises(ModelError, match="file missing"):
        load_reft(tmp_path / "p", positions="l1", allow_pickle=True)


class _Payload:
    """An arbitrary class: torch.load(weights_only=True) refuses to rebuild it."""


def test_pickle_with_code_is_refused_even_with_allow_pickle(tmp_path):
    ad = adapter("loreft", [InterventionSpec(0, "block_output", 0, 1)])
    write_pyreft(tmp_path / "p", ad)
    torch.save({"weight": ad.interventions[0].W, "bias": ad.interventions[0].b, "x": _Payload()},
               tmp_path / "p" / "intkey_layer_0_comp_block_output_unit_pos_nunit_1#0.bin")
    with pytest.raises(ModelError, match="weights_only=True"):
        load_reft(tmp_path / "p", positions="l1", allow_pickle=True)


def test_orthogonality_warning(tmp_path, caplog):
    ad = adapter("loreft")
    save_reft(ad, tmp_path / "ok")
    with caplog.at_level(logging.WARNING, logger="harness.models.reft_io"):
        assert load_reft(tmp_path / "ok").info["orthogonality_deviation"] < 1e-5
    assert not caplog.records
    with torch.no_grad():
        ad.interventions[1].R.mul_(1.1)
    save_reft(ad, tmp_path / "bad")
    with caplog.at_level(logging.WARNING, logger="harness.models.reft_io"):
        dev = load_reft(tmp_path / "bad").info["orthogonality_deviation"]
    assert dev == pytest.approx(0.21, abs=1e-4)
    assert "not orthonormal" in caplog.text and "0.21" in caplog.text and "layer 1" in caplog.text


def test_shapes_are_checked_against_the_base(tmp_path):
    ad = adapter("loreft")
    save_reft(ad, tmp_path / "r")
    bigger = tiny("bert")  # hidden 32, 3 layers: fits
    InterventionEngine(bigger, load_reft(tmp_path / "r")).remove()
    import transformers as tf

    other = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64,
                                               num_hidden_layers=3, num_attention_heads=4))
    with pytest.raises(ModelError, match="hidden size"):
        InterventionEngine(other, load_reft(tmp_path / "r"))
    cfg = json.loads((tmp_path / "r" / CONFIG_NAME).read_text())
    cfg["interventions"][0]["positions"] = "z1"
    (tmp_path / "r" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="positions"):
        load_reft(tmp_path / "r")
    (tmp_path / "r" / WEIGHTS_NAME).unlink()
    cfg["interventions"][0]["positions"] = "l1"
    (tmp_path / "r" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="weights file missing"):
        load_reft(tmp_path / "r")
    with pytest.raises(ModelError, match="not a ReFT folder"):
        load_reft(tmp_path)


def test_a_pyreft_folder_under_other_positions_is_another_adaptation_in_the_store(tmp_path):
    """pyreft saves no positions (--reft-positions gives them), so the results store's identity of base +
    adaptation names where each intervention acts: the same folder under l1 and under f1+l1 differs (review: a
    later run under other positions took the first run's records), and the same positions give the same key."""
    from harness.models.reft_io import adapted_fingerprint

    specs = [InterventionSpec(0, "block_output", 0, 1), InterventionSpec(2, "block_output", 0, 1)]
    write_pyreft(tmp_path / "p", adapter("loreft", specs))
    fps = {pos: adapted_fingerprint("base", load_reft(tmp_path / "p", positions=pos, allow_pickle=True))
           for pos in ("l1", "f1+l1", "f1")}
    assert len(set(fps.values())) == 3
    assert adapted_fingerprint("base", load_reft(tmp_path / "p", positions="l1", allow_pickle=True)) == fps["l1"]
    assert adapted_fingerprint("other", load_reft(tmp_path / "p", positions="l1", allow_pickle=True)) != fps["l1"]
