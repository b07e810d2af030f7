"""Helpers shared by the reliability tests: CLI invocation that captures stderr, run-directory listings, tiny
adapters, suites and hostile files. Nothing here is collected as a test."""

from __future__ import annotations

import shutil
from pathlib import Path

CLASSES = ("negative", "positive")


def suite_yaml(path: Path, csv: str, *, name: str = "rel", extra: str = "", splits: str | None = None) -> Path:
    """Write a one-split local suite (role id) reading ``csv`` (relative to the suite file)."""
    splits = splits or "  - {name: test, role: test}\n"
    path.write_text(f"kind: suite\nname: {name}\nrole: id\nsource: {{type: local, files: [{csv}]{extra}}}\n"
                    f"classes: [negative, positive]\nsplits:\n{splits}max_length: 32\nmetrics: [accuracy]\n")
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path -> bytes): compare before/after to prove nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary siblings a run or an atomic write could leave behind (``.name.*`` / ``*.tmp``)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


def copy_model(src: Path, dst: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def make_lora_adapter(base_dir: Path, out: Path, seed: int = 0) -> Path:
    """A small LoRA adapter (query/value, r=4, classifier in modules_to_save) with non-zero B, saved as
    safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(base_dir))
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"],
                     task_type="SEQ_CLS")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(str(out))
    return out


def rewrite_weights(folder: Path, fn) -> Path:
    """Replace ``folder/model.safetensors`` by ``fn(its state dict)``."""
    from safetensors.torch import load_file, save_file

    f = folder / "model.safetensors"
    save_file(fn(load_file(str(f))), str(f), metadata={"format": "pt"})
    return folder
