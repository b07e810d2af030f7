"""Peak memory and wall time of ``harness blend`` on a synthetic sharded llama checkpoint larger than a few GB.

Builds a random-weight llama (default: hidden 2048, 28 layers, 32,000-token vocabulary, untied head, bf16: about
1.57B parameters, 3.1 GB per checkpoint) as base and fine-tune, written shard by shard (``--shard-gb``) under a
temporary folder (``--dir``, default ``/tmp``), blends them at one alpha in a fresh child process and prints its
wall time and peak resident memory (``ru_maxrss`` of the child; ``psutil`` is not needed) against the largest
input shard; everything is deleted afterwards. Needs about three checkpoints of disk (check ``df -h /tmp``).

    python benchmarks/bench_blend_stream.py                # ~3.1 GB checkpoints, bf16
    python benchmarks/bench_blend_stream.py --layers 4     # a quick smoke run (~0.6 GB)
    python benchmarks/bench_blend_stream.py --adapter      # base + a rank-16 LoRA adapter on every projection

With ``--adapter`` the fine-tune is a PEFT LoRA adapter (r 16, lora_alpha 32, q/k/v/o/gate/up/down of every layer,
random factors written directly as ``adapter_model.safetensors``), blended by the streamed LoRA path
(:mod:`harness.models.lora_stream`): the base is read shard by shard, never loaded whole.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(100)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>") \
        .save_pretrained(str(path))


def build(path: Path, config, seed: int, shard_bytes: int, dtype: torch.dtype, base: Path | None = None) -> int:
    """Write a random checkpoint shard by shard (never more than one shard in memory); the fine-tune is the
    base plus noise. Returns the largest shard's size in bytes."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    path.mkdir(parents=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    shards, pending, size = [], {}, 0
    base_index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"] if base else {}

    def flush() -> None:
        nonlocal pending, size
        if pending:
            f = path / f"part-{len(shards)}.safetensors"
            save_file(pending, str(f), metadata={"format": "pt"})
            shards.append((f, list(pending)))
            pending, size = {}, 0

    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g, dtype=torch.float32).mul_(0.02)
        if base is not None:
            with safe_open(str(base / base_index[name]), framework="pt") as h:
                t = h.get_tensor(name).float().add_(t, alpha=0.05)
        t = t.to(dtype)
        n = t.numel() * t.element_size()
        if pending and size + n > shard_bytes:
            flush()
        pending[name], size = t, size + n
    flush()
    weight_map, total = {}, 0
    for i, (f, names) in enumerate(shards, 1):
        dst = path / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        f.rename(dst)
        total += dst.stat().st_size
        weight_map.update(dict.fromkeys(names, dst.name))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    config.save_pretrained(str(path))
    _tokenizer(path)
    return max(p.stat().st_size for p in path.glob("model-*.safetensors"))


PROJ = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def build_adapter(path: Path, config, base: Path, rank: int = 16, seed: int = 3) -> int:
    """A LoRA adapter folder for the llama ``config`` (random factors, fp32); returns its size in bytes."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    h, m = config.hidden_size, config.intermediate_size
    dims = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h), "gate_proj": (h, m),
            "up_proj": (h, m), "down_proj": (m, h)}  # (in, out)
    tensors = {}
    for i in range(config.num_hidden_layers):
        for block, names in PROJ.items():
            for n in names:
                key = f"base_model.model.model.layers.{i}.{block}.{n}"
                fan_in, fan_out = dims[n]
                tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
                tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 1e-3
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "target_modules": sorted(n for names in PROJ.values() for n in names), "bias": "none",
        "base_model_name_or_path": str(base)}))
    return (path / "adapter_model.safetensors").stat().st_size


def _peak_rss() -> int:
    """Peak resident bytes of this process: ``VmHWM`` (reset by exec; ``ru_maxrss`` is not, so a child forked from
    a large parent would report the parent's size), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(base: str, adapted: str, out: str, alpha: float, dtype: str) -> None:
    """Run in a fresh process: the blend alone, with its own peak RSS."""
    from harness.pipeline import RunOptions
    from harness.pipeline.blend import blend_checkpoint

    rss0 = _peak_rss()
    t0 = time.perf_counter()
    res = blend_checkpoint(base, adapted, alpha, out, options=RunOptions(dtype=dtype))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "peak_rss": _peak_rss(), "rss_after_imports": rss0,
                      "blend_path": res.blend_path, "load_avg": os.getloadavg()[0]}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--shard-gb", type=float, default=1.0)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--adapter", action="store_true", help="blend a rank-16 LoRA adapter instead of a full fine-tune")
    p.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        _child(*a._child[:3], float(a._child[3]), a._child[4])
        return 0
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                         num_hidden_layers=a.layers, num_attention_heads=16, num_key_value_heads=16,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    root = Path(tempfile.mkdtemp(prefix="bench-blend-", dir=a.dir))
    try:
        t0 = time.perf_counter()
        shard = build(root / "base", config, 1, int(a.shard_gb * 2**30), dtype)
        if a.adapter:
            print(f"adapter: {build_adapter(root / 'ft', config, root / 'base') / 1e6:.1f} MB (r 16, all projections)")
        else:
            build(root / "ft", config, 2, int(a.shard_gb * 2**30), dtype, base=root / "base")
        size = sum(f.stat().st_size for f in (root / "base").glob("model-*.safetensors"))
        print(f"checkpoints: {size / 1e9:.2f} GB each ({a.dtype}), largest shard {shard / 1e9:.2f} GB; "
              f"built in {time.perf_counter() - t0:.0f} s")
        cmd = [sys.executable, __file__, "--_child", str(root / "base"), str(root / "ft"), str(root / "out"),
               str(a.alpha), a.dtype]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"the blend failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out = root / "out"
        n_out = len(list(out.glob("model*.safetensors")))
        print(f"harness blend --alpha {a.alpha} ({r['blend_path']}): {r['wall_s']:.1f} s wall "
              f"({(1 if a.adapter else 2) * size / r['wall_s'] / 1e9:.2f} GB/s read), {n_out} output shard(s)")
        print(f"peak RSS {r['peak_rss'] / 1e9:.2f} GB = {r['peak_rss'] / shard:.2f} x the largest shard "
              f"({(r['peak_rss'] - r['rss_after_imports']) / 1e9:.2f} GB above the {r['rss_after_imports'] / 1e9:.2f}"
              f" GB after imports); checkpoint {size / 1e9:.2f} GB; load average {r['load_avg']:.1f} on "
              f"{os.cpu_count()} cores")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
