"""Tiny decoder-family models for the language-model blend tests: llama, gpt2 and qwen2 (causal LM, tied or untied
head), a llama sequence classifier and a BART encoder-decoder, all built from configs with seeded weights (no hub),
plus PEFT adapters for them. Imported by the unit tests as ``_lm_models``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from _models import save_perturbed_adapter

try:  # tests/ may or may not be a package
    from tests.conftest import WORDS, write_tokenizer
except ImportError:  # pragma: no cover - depends on the layout
    from conftest import WORDS, write_tokenizer

VOCAB = 48  # >= the 42 tokens of the conftest tokenizer
ARCHS = ("llama", "gpt2", "qwen2")
TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "gpt2": ["c_attn", "c_proj", "c_fc"]}
EMBED = {"llama": "embed_tokens", "qwen2": "embed_tokens", "gpt2": "wte"}


def config(arch: str, tie: bool = False, vocab: int = VOCAB, **kw):
    """A tiny config of ``arch`` (hidden 16, 2 layers, 2 heads)."""
    from transformers import BartConfig, GPT2Config, LlamaConfig, Qwen2Config

    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=64, tie_word_embeddings=tie,
                          **kw)
    if arch == "bart":
        return BartConfig(vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, tie_word_embeddings=tie, **kw)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return cls(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tie, **kw)


def model(arch: str, seed: int, tie: bool = False, vocab: int = VOCAB, seq_cls: bool = False,
          dtype: torch.dtype = torch.float32):
    """A tiny causal LM (or llama sequence classifier, or BART) with seeded noise on every float tensor."""
    from transformers import (BartForConditionalGeneration, GPT2LMHeadModel, LlamaForCausalLM,
                              LlamaForSequenceClassification, Qwen2ForCausalLM)

    torch.manual_seed(seed)
    if seq_cls:
        m = LlamaForSequenceClassification(config(arch, tie, vocab, num_labels=2, pad_token_id=0))
    else:
        cls = {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel, "qwen2": Qwen2ForCausalLM,
               "bart": BartForConditionalGeneration}[arch]
        m = cls(config(arch, tie, vocab))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.to(dtype).eval()


def save(m, path: Path, words: list[str] | None = None, **kw) -> Path:
    """Save ``m`` with a tiny tokenizer (``words``, default the conftest words)."""
    m.save_pretrained(str(path), **kw)
    write_tokenizer(path, list(WORDS) if words is None else words)
    return path


def ids(seed: int = 0, n: int = 3, length: int = 10, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (n, length), generator=g)


@torch.no_grad()
def lm_logits(m, input_ids: torch.Tensor | None = None) -> torch.Tensor:
    x = ids() if input_ids is None else input_ids
    if m.config.is_encoder_decoder:
        return m.eval()(input_ids=x, decoder_input_ids=x).logits.float()
    return m.eval()(input_ids=x).logits.float()


def make_adapter(base_dir: Path, out: Path, arch: str, *, seed: int = 0, kind: str = "lora", seq_cls: bool = False,
                 modules_to_save: list[str] | None = None, std: float = 0.1) -> Path:
    """A PEFT adapter for the tiny model in ``base_dir``: r=4, lora_alpha=8; ``kind`` is ``lora``, ``rslora``,
    ``dora`` or ``embed`` (LoRA on the token embedding too). Every trainable tensor gets seeded noise."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    m = auto.from_pretrained(str(base_dir))
    targets = TARGETS[arch] + ([EMBED[arch]] if kind == "embed" else [])
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_rslora=kind == "rslora",
                     use_dora=kind == "dora", fan_in_fan_out=arch == "gpt2", modules_to_save=modules_to_save,
                     task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM", bias="lora_only" if arch == "gpt2" else "none")
    return save_perturbed_adapter(m, cfg, out, seed=seed, std=std)


def peft_merged(base_dir: Path, adapter_dir: Path, seq_cls: bool = False):
    """peft's own merged model (``merge_and_unload``): the reference at alpha 1."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    return PeftModel.from_pretrained(auto.from_pretrained(str(base_dir)), str(adapter_dir)).merge_and_unload().eval()


def loaded(path: Path, seq_cls: bool = False):
    """A :class:`harness.models.load.LoadedModel` of the tiny model in ``path`` (CPU, fp32)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from harness.models.load import LoadedModel, model_fingerprint

    auto = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    m = auto.from_pretrained(str(path)).eval()
    return LoadedModel(model=m, tokenizer=None, source=str(path), path=path, fingerprint=model_fingerprint(path),
                       id2label={}, device=torch.device("cpu"), dtype=torch.float32)
