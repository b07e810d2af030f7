"""Tiny llama / gpt2 / BERT models from configs (seeded, no hub) and ReFT adapters for the ReFT tests."""

from __future__ import annotations

import torch

from harness.models.reft import InterventionSpec, ReftAdapter, ReftIntervention

HIDDEN, LAYERS, VOCAB = 32, 3, 64


def tiny(arch: str, seed: int = 0, init: float = 0.02) -> torch.nn.Module:
    """A tiny model of ``arch`` (``llama``, ``gpt2`` causal LMs; ``bert`` sequence classifier), eval mode;
    ``init`` is the config's initializer_range (larger: a less uniform output distribution)."""
    import transformers as tf

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             pad_token_id=0, initializer_range=init)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=64,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model = tf.GPT2LMHeadModel(cfg)
    else:
        cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, num_labels=3)
        model = tf.BertForSequenceClassification(cfg)
    model.config._attn_implementation = "eager"
    return model.eval()


def adapter(kind: str = "loreft", specs=None, rank: int = 4, seed: int = 1, scale: float = 0.5) -> ReftAdapter:
    """Random interventions (orthonormal R, W and b scaled by ``scale`` so the edit is visible)."""
    specs = specs or [InterventionSpec(0, "block_output", 0, 1), InterventionSpec(1, "block_output", 1, 1)]
    torch.manual_seed(seed)
    mods = torch.nn.ModuleList()
    for _ in specs:
        m = ReftIntervention(kind, HIDDEN, rank)
        with torch.no_grad():
            m.W.mul_(scale * 4)
            m.b.copy_(torch.randn(rank) * scale)
        mods.append(m)
    return ReftAdapter(kind=kind, specs=list(specs), interventions=mods, hidden_size=HIDDEN, num_layers=LAYERS,
                       info={"source": "test"})


def batch(n: int = 3, length: int = 9, seed: int = 0, pad: str = "none", lengths=(9, 6, 4)):
    """Token ids and attention mask; ``pad`` ``left``/``right`` pads rows to ``length`` from ``lengths``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    if pad == "none":
        return ids, mask
    out_ids = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, L in enumerate(lengths[:n]):
        sl = slice(length - L, length) if pad == "left" else slice(0, L)
        out_ids[i, sl] = ids[i, :L]
        mask[i, sl] = 1
    return out_ids, mask
