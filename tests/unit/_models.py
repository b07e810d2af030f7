"""Helpers for the model and blend tests: in-memory tiny models, state-dict pairs, fixed inputs and PEFT adapters.

Everything is built from configs with fixed seeds (no hub). Imported by the unit tests as ``_models``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

try:  # tests/ may or may not be a package
    from tests.conftest import tiny_bert_config
except ImportError:  # pragma: no cover - depends on the layout
    from conftest import tiny_bert_config

LORA_R = 4
LORA_ALPHA = 8  # PEFT's scale numerator: unrelated to the blend's alpha


def bert(seed: int, num_labels: int = 2, dtype: torch.dtype = torch.float32, **kw):
    """A tiny BertForSequenceClassification (eval mode) with seeded random weights; every float tensor (LayerNorm
    and biases included, which init to constants) gets seeded noise, so two seeds differ everywhere."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config(num_labels, **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.to(dtype).eval()


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached, cloned copy of ``model.state_dict()``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bert_pair(dtype: torch.dtype = torch.float32, num_labels_adapted: int = 2):
    """(base model, adapted model): seeds 1 and 2, so every float tensor differs."""
    return bert(1, dtype=dtype), bert(2, num_labels_adapted, dtype=dtype)


def inputs(seed: int = 0, n: int = 6, length: int = 12, vocab: int | None = None) -> dict[str, torch.Tensor]:
    """A fixed batch of token ids (no padding) for a tiny BERT."""
    vocab = vocab or tiny_bert_config().vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    ids[:, 0] = 2  # [CLS]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    return model.eval()(**(batch or inputs())).logits.float()


@torch.no_grad()
def with_state(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A deep copy of ``model`` holding ``sd`` (strict)."""
    m = copy.deepcopy(model)
    m.load_state_dict(sd, strict=True)
    return m.eval()


class WithBatchNorm(torch.nn.Module):
    """A toy model with a persistent integer buffer (``bn.num_batches_tracked``) and float buffers."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(4, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.num_batches_tracked.fill_(7)

    def forward(self, x):
        return self.bn(self.lin(x))


# ------------------------------------------------------------------------------------------------ PEFT --

def lora_scale(r: int = LORA_R, lora_alpha: float = LORA_ALPHA, rslora: bool = False) -> float:
    """PEFT's LoRA scale: ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA)."""
    return lora_alpha / (math.sqrt(r) if rslora else r)


def make_lora_adapter(base_dir: Path, out: Path, *, seed: int = 0, bias: str = "lora_only", use_rslora: bool = False,
                      use_dora: bool = False, std: float = 0.2) -> Path:
    """Save a LoRA adapter for the tiny base in ``base_dir``: r=4, lora_alpha=8 on query/value, classifier in
    ``modules_to_save``. Every trainable tensor (lora_B is zero at init, biases, head, DoRA magnitudes) gets seeded
    noise so the adapter changes the model."""
    from peft import LoraConfig
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(base_dir))
    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=["query", "value"],
                     modules_to_save=["classifier"], bias=bias, use_rslora=use_rslora, use_dora=use_dora,
                     task_type="SEQ_CLS")
    return save_perturbed_adapter(model, cfg, out, seed=seed, std=std)


def save_perturbed_adapter(model, cfg, out: Path, *, seed: int, std: float) -> Path:
    """Wrap ``model`` with the peft config ``cfg``, add seeded noise to every trainable tensor (lora_B is zero at
    init), and save the adapter to ``out``."""
    from peft import get_peft_model

    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=g))
    pm.save_pretrained(str(out))
    return out


def peft_logits(base_dir: Path, adapter_dir: Path, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Logits of PEFT's own adapter-applied model (unmerged), the reference for the merged blend."""
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(base_dir))
    pm = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).eval()
    return logits(pm, batch)


def adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The adapter file's tensors, keys without the ``base_model.model.`` prefix."""
    from safetensors.torch import load_file

    sd = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return {k.removeprefix("base_model.model."): v for k, v in sd.items()}
