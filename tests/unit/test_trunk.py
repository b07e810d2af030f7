"""Frozen-trunk reuse: which layers a fine-tune left unchanged, bit-identical logits when the stored states are
replayed, the memory budget, refusal of a differently batched pass, and a real sweep that selects the same alpha
with identical results while running the frozen layers once per split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.models.blend import BlendEngine
from harness.models.scorer import HFScorer
from harness.models.trunk import TrunkCache, frozen_depth, weight_positions
from harness.predict import predict

try:  # tests/ may or may not be a package
    from tests.conftest import make_tiny_bert, write_tokenizer
    from tests.unit._models import bert, state
    from tests.unit.test_predict import tokenized
except ImportError:  # pragma: no cover - depends on the layout
    from _models import bert, state
    from conftest import make_tiny_bert, write_tokenizer
    from test_predict import tokenized

LAYERS = 3


def _bert(seed=1):
    return bert(seed, num_hidden_layers=LAYERS)


def _changed_only(sd, prefixes, seed=5):
    g = torch.Generator().manual_seed(seed)
    return {k: (v + 0.05 * torch.randn(v.shape, generator=g)).to(v.dtype)
            if v.is_floating_point() and k.startswith(prefixes) else v.clone() for k, v in sd.items()}


def test_weight_positions_follow_the_forward():
    pos = weight_positions(_bert())
    assert pos["bert.embeddings.word_embeddings.weight"] == 0
    assert pos["bert.embeddings.LayerNorm.weight"] == 0
    for i in range(LAYERS):
        assert pos[f"bert.encoder.layer.{i}.attention.self.query.weight"] == i + 1
        assert pos[f"bert.encoder.layer.{i}.output.dense.bias"] == i + 1
    assert pos["bert.pooler.dense.weight"] == LAYERS + 1
    assert pos["classifier.weight"] == LAYERS + 1


@pytest.mark.parametrize("changed,k", [
    ({"classifier.weight"}, LAYERS),
    ({"bert.pooler.dense.bias", "classifier.bias"}, LAYERS),
    ({"bert.encoder.layer.2.output.dense.weight", "classifier.weight"}, 2),
    ({"bert.encoder.layer.1.attention.self.key.bias"}, 1),
    ({"bert.encoder.layer.0.intermediate.dense.weight"}, 0),
    ({"bert.embeddings.position_embeddings.weight", "classifier.weight"}, 0),
    ({"unknown.tensor"}, 0),  # not placed by the probe: conservative
    (set(), LAYERS),
])
def test_frozen_depth(changed, k):
    assert frozen_depth(_bert(), changed) == k


def test_engine_reports_exactly_the_changed_tensors():
    model = _bert()
    base = state(model)
    adapted = _changed_only(base, ("classifier.", "bert.encoder.layer.2."))
    engine = BlendEngine(model, base, adapted)
    expected = {k for k in base if k.startswith(("classifier.", "bert.encoder.layer.2.")) and base[k].is_floating_point()}
    assert engine.changed_names() == expected
    assert frozen_depth(model, engine.changed_names()) == 2


@torch.inference_mode()
@pytest.mark.parametrize("prefixes", [("classifier.",), ("classifier.", "bert.pooler.", "bert.encoder.layer.2.")])
def test_replayed_passes_are_bit_identical_to_full_forwards(prefixes):
    model = _bert()
    base = state(model)
    adapted = _changed_only(base, prefixes)
    engine = BlendEngine(model, base, adapted)
    k = frozen_depth(model, engine.changed_names())
    assert k == (LAYERS if prefixes == ("classifier.",) else 2)
    scorer = HFScorer(model)
    toks = [tokenized([12, 7, 3, 9, 12, 5, 30], seed=1), tokenized([4, 4, 20], seed=2)]
    toks[1] = toks[1].__class__(**{**toks[1].__dict__, "cache_key": "k2"})
    cache = TrunkCache(model, k)
    full, reused = {}, {}
    for alpha in (0.0, 0.5, 1.0):
        engine.apply(alpha)
        for tok in toks:
            full[alpha, tok.cache_key] = predict(scorer, tok, point="p", batch_tokens=32).logits
            with cache.scoring(tok.cache_key) as mode:
                reused[alpha, tok.cache_key] = predict(scorer, tok, point="p", batch_tokens=32).logits
            assert mode == ("capture" if alpha == 0.0 else "replay")
    for key in full:
        np.testing.assert_array_equal(reused[key], full[key])
    assert not np.array_equal(full[0.0, "k"], full[1.0, "k"])  # the blend does change the logits
    assert cache.n_replayed == 4 and cache.n_bytes > 0
    assert len(model.bert.encoder.layer) == LAYERS  # the stack is restored after every pass


@torch.inference_mode()
def test_budget_and_batching_checks():
    model = _bert()
    scorer = HFScorer(model)
    tok = tokenized([12, 7, 3, 9])
    small = TrunkCache(model, 1, budget_bytes=100)
    with small.scoring("k") as mode:
        predict(scorer, tok, point="p")
    assert mode == "capture"
    with small.scoring("k") as mode:
        predict(scorer, tok, point="p")
    assert mode == "full" and small.n_bytes == 0
    cache = TrunkCache(model, 1)
    with cache.scoring("k"):
        predict(scorer, tok, point="p", batch_tokens=12)
    with pytest.raises(RuntimeError, match="batched the same way"), cache.scoring("k"):
        predict(scorer, tok, point="p", batch_tokens=1000)
    assert len(model.bert.encoder.layer) == LAYERS
    with pytest.raises(ValueError, match="1 <= k"):
        TrunkCache(model, LAYERS + 1)


def _head_only_pair(root: Path) -> tuple[Path, Path]:
    from transformers import BertForSequenceClassification

    labels = {0: "negative", 1: "positive"}
    base = make_tiny_bert(root / "base", seed=1, id2label=labels, num_hidden_layers=LAYERS)
    model = BertForSequenceClassification.from_pretrained(str(base))
    model.load_state_dict(_changed_only(model.state_dict(), ("classifier.", "bert.encoder.layer.2.")))
    model.save_pretrained(str(root / "adapted"))
    write_tokenizer(root / "adapted")
    return base, root / "adapted"


def test_sweep_with_frozen_layers_matches_full_recompute(tmp_path, tiny_suites, monkeypatch):
    import harness.api as api
    import harness.models.trunk as trunk
    from harness.rundir import read_manifest

    base, adapted = _head_only_pair(tmp_path)
    fast = dict(n_resamples=20, report=False, progress=False, use_store=False)
    reused = api.run_sweep(base, adapted, tiny_suites, out=tmp_path / "reused", **fast)
    info = read_manifest(tmp_path / "reused")["trunk_reuse"]
    assert info["frozen_layers"] == 2 and info["replayed_passes"] > 0 and info["stored_gib"] > 0
    monkeypatch.setattr(trunk, "frozen_depth", lambda *a, **k: 0)
    full = api.run_sweep(base, adapted, tiny_suites, out=tmp_path / "full", **fast)
    assert read_manifest(tmp_path / "full")["trunk_reuse"] is None
    assert reused.summary.selection == full.summary.selection
    assert reused.summary.model_dump()["results"] == full.summary.model_dump()["results"]
    for pid, preds in full.sweep.predictions.items():
        for ref, p in preds.items():
            np.testing.assert_array_equal(reused.sweep.predictions[pid][ref].logits, p.logits)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("compile", [False, True])
@torch.inference_mode()
def test_replay_with_packed_batches_on_cuda(compile):
    """Packed (padding-free) batches store packed states; replaying them gives the full forward's logits."""
    model = bert(1, num_hidden_layers=LAYERS, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=128).to("cuda", torch.bfloat16)
    base = state(model)
    engine = BlendEngine(model, base, _changed_only({k: v.cpu() for k, v in base.items()}, ("classifier.",)))
    k = frozen_depth(model, engine.changed_names())
    assert k == LAYERS
    scorer = HFScorer(model, compile=compile)
    assert scorer.packed
    tok = tokenized(np.random.default_rng(0).integers(2, 60, 300))
    cache = TrunkCache(model, k)
    for alpha in (0.0, 0.3, 1.0):
        engine.apply(alpha)
        full = predict(scorer, tok, point="p", batch_tokens=2048).logits
        with cache.scoring("k") as mode:
            reused = predict(scorer, tok, point="p", batch_tokens=2048).logits
        assert mode == ("capture" if alpha == 0.0 else "replay")
        np.testing.assert_array_equal(reused, full)


def test_budget_from_setting_or_environment(monkeypatch):
    from harness.errors import SpecError
    from harness.settings import Settings

    monkeypatch.delenv("HARNESS_TRUNK_CACHE_GIB", raising=False)
    assert Settings().trunk_cache_bytes == 2 * 2**30
    monkeypatch.setenv("HARNESS_TRUNK_CACHE_GIB", "0.5")
    assert Settings().trunk_cache_bytes == 2**29
    assert Settings(trunk_cache_gib=0.25).trunk_cache_bytes == 2**28  # the setting wins over the variable
    for bad in ("-1", "lots", "nan", "inf"):
        monkeypatch.setenv("HARNESS_TRUNK_CACHE_GIB", bad)
        with pytest.raises(SpecError, match="HARNESS_TRUNK_CACHE_GIB"):
            Settings().trunk_cache_bytes


def test_sweep_runs_every_layer_when_reuse_is_off(tmp_path, tiny_suites, monkeypatch):
    import harness.api as api
    from harness.rundir import read_manifest

    base, adapted = _head_only_pair(tmp_path)
    monkeypatch.setenv("HARNESS_TRUNK_CACHE_GIB", "0")
    api.run_sweep(base, adapted, tiny_suites, out=tmp_path / "off", n_resamples=20, report=False, progress=False,
                  use_store=False, alphas=[0.0, 0.5, 1.0])
    manifest = read_manifest(tmp_path / "off")
    assert manifest["trunk_reuse"] is None and manifest["settings"]["trunk_cache_gib"] == 0.0
    monkeypatch.delenv("HARNESS_TRUNK_CACHE_GIB")
    api.run_sweep(base, adapted, tiny_suites, out=tmp_path / "off2", n_resamples=20, report=False,
                  progress=False, use_store=False, alphas=[0.0, 0.5, 1.0], trunk_cache_gib=0)
    assert read_manifest(tmp_path / "off2")["trunk_reuse"] is None


@torch.inference_mode()
def test_capture_survives_a_first_batch_fallback_to_padded(monkeypatch):
    """The first packed batch fails the layer check after layer k-1 ran: that state must not be stored."""
    model = _bert()
    base = state(model)
    engine = BlendEngine(model, base, _changed_only(base, ("classifier.",)))
    monkeypatch.setattr("harness.models.scorer.packing_unavailable_reason", lambda m: None)
    monkeypatch.setattr("harness.models.packed.packing_unavailable_reason", lambda m: None)
    scorer = HFScorer(model)
    assert scorer.packed
    inner = model.bert.encoder.layer[LAYERS - 1].attention.self  # bypasses packing: caught after the forward
    plain = inner.forward
    inner.forward = lambda *a, **kw: plain(*a, **{k: v for k, v in kw.items() if not k.startswith("harness_")})
    tok = tokenized([12, 7, 3, 9, 12, 5, 30], seed=1)
    cache = TrunkCache(model, LAYERS)
    with cache.scoring("k") as mode:
        predict(scorer, tok, point="p", batch_tokens=32)
    assert mode == "capture" and not scorer.packed  # fell back on the first batch
    inner.forward = plain
    engine.apply(1.0)
    full = predict(scorer, tok, point="p", batch_tokens=32).logits
    with cache.scoring("k") as mode:
        reused = predict(scorer, tok, point="p", batch_tokens=32).logits
    assert mode == "replay"
    np.testing.assert_array_equal(reused, full)


def test_no_reuse_outside_the_bert_family():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=2,
                                                                  hidden_dim=64)).eval()
    assert weight_positions(distil) == {} and frozen_depth(distil, {"classifier.weight"}) == 0
    with pytest.raises(ValueError, match="1 <= k"):
        TrunkCache(distil, 1)
