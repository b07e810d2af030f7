"""Tiny causal LMs and byte-level BPE tokenizers built from configs with fixed seeds (no hub), for the causal
scorer tests: a GPT-2 style pair (no pad token, no BOS added) and a Llama style pair (adds ``<s>``)."""

from __future__ import annotations

import torch

CORPUS = [
    "Question: Which of these is a source of energy for plants?\nAnswer: sunlight",
    "The quick brown fox jumps over the lazy dog. Water boils at one hundred degrees.",
    "Is the sky blue? yes no. The passage says the answer is 1,200 apples and 42 pears.",
    "Students measured the mass of a rock, the length of a leaf and the temperature of water.",
    "Plants need water, air and light to grow; animals eat plants or other animals.",
]


def byte_bpe(style: str, vocab_size: int = 400):
    """A trained byte-level BPE as a ``PreTrainedTokenizerFast``: ``"gpt2"`` (``<|endoftext|>`` is BOS, EOS and
    UNK; no pad; nothing added) or ``"llama"`` (``<s>`` BOS added to every encoding, ``</s>`` EOS, no pad)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] if style == "gpt2" else ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    if style == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[0],
                                       unk_token=specials[0])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_causal(style: str, tokenizer, seed: int = 0, n_positions: int = 64):
    """A tiny GPT2LMHeadModel or LlamaForCausalLM in fp32 eval mode with seeded, fairly peaked random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    if style == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=n_positions, n_embd=32, n_layer=2, n_head=2, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=n_positions, **common))
    return model.float().eval()


def reference_loglik(model, ctx: list[int], cont: list[int], max_length: int) -> tuple[float, bool]:
    """Independent plain-torch reference: one unpadded forward of ``(ctx + cont)[-(L+1):][:-1]``, log_softmax,
    gather at the continuation's positions."""
    seq = (ctx + cont)[-(max_length + 1):]
    inp = torch.tensor([seq[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0].double(), -1)
    rows = logp[-len(cont):]
    target = torch.tensor(cont)
    return float(rows[torch.arange(len(cont)), target].sum()), bool((rows.argmax(-1) == target).all())


def llm_data_dir():
    """``<repo>/../shared/data/llm`` (CI layout), or ``$HARNESS_LLM_DATA`` when set; ``None`` if absent."""
    import os
    from pathlib import Path

    path = Path(os.environ.get("HARNESS_LLM_DATA") or Path(__file__).resolve().parents[3] / "shared/data/llm")
    return path if path.is_dir() else None


def read_jsonl(path, n: int) -> list[dict]:
    """The first ``n`` rows of a JSON Lines file."""
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]
