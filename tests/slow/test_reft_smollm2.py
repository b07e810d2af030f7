"""Slow: SmolLM2-135M-Instruct with a LoReFT trained natively on 100 ARC-Easy train questions. alpha = 0 gives the
base logits exactly, alpha = 1 lowers the answer loss on the training questions, and the saved harness folder
reproduces the trained edit. Run with ``pytest -m slow tests/slow/test_reft_smollm2.py -s`` (prints timings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[3] / "shared/data/llm/arc_easy"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/llm/arc_easy")


def answer_nll(model, tok, pairs) -> float:
    """Mean answer-token NLL of (prompt, answer) pairs, prompts named for the interventions."""
    from harness.demo.reft_train import _collate, _step, encode_pairs

    ids, mask, labels, positions, plens = _collate(encode_pairs(tok, pairs), tok.pad_token_id or 0)
    with torch.no_grad():
        return float(_step(model, ids, mask, labels, positions, plens))


@pytest.mark.slow
def test_smollm2_loreft_alpha_zero_is_base_exactly(tmp_path, smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.demo.reft_train import ReftTrainConfig, arc_pairs, train_reft
    from harness.models.reft import InterventionEngine, prompt_lengths
    from harness.models.reft_io import load_reft, save_reft

    path = smollm2_path
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    pairs = arc_pairs(DATA / "train.jsonl", 100, seed=0)
    cfg = ReftTrainConfig(layers=(18, 24), rank=4, positions="l1", lr=4e-3, batch_size=10, epochs=1, seed=0)
    adapter, stats = train_reft(model, tok, pairs, cfg)
    print(f"\ntrained {adapter.describe()} on {stats.examples} ARC-Easy rows: {stats.steps} steps, "
          f"{stats.seconds:.1f} s wall, {stats.cpu_seconds:.1f} s CPU, loss first {stats.first_step_loss:.4f} last {stats.last_step_loss:.4f}")
    save_reft(adapter, tmp_path / "reft", base_name=str(path), base_model_type="llama")
    loaded = load_reft(tmp_path / "reft")

    evals = arc_pairs(DATA / "validation.jsonl", 6, seed=1)
    enc = [tok(p + a)["input_ids"] for p, a in evals]
    width = max(map(len, enc))
    ids = torch.tensor([e + [tok.pad_token_id or 0] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    plens = [len(tok(p)["input_ids"]) for p, _ in evals]
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
        engine = InterventionEngine(model, loaded, alpha=0.0)
        with prompt_lengths(plens):
            at0 = model(input_ids=ids, attention_mask=mask).logits
            engine.apply(1.0)
            at1 = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(at0, base)
    assert not torch.allclose(at1, base)
    nll1 = answer_nll(model, tok, pairs[:30])
    engine.apply(0.0)
    nll0 = answer_nll(model, tok, pairs[:30])
    engine.remove()
    print(f"answer NLL on 30 training rows: alpha=0 {nll0:.4f}, alpha=1 {nll1:.4f}")
    assert nll1 < nll0
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base)
