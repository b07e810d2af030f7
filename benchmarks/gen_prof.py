"""Where a batch-1 greedy decoding step spends its time on a GPU (issue 20): the compiled call alone, an eager step,
and a profiler table of the compiled steps (CPU and CUDA time per op).

    TORCH_LOGS=perf_hints python benchmarks/gen_prof.py --out /tmp/gen_prof.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_probe import manual  # noqa: E402
from lm_gpu import DEVICE, build, sync  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from transformers import CompileConfig, StaticCache

    model, tok = build(a.tiny)
    model.generation_config.eos_token_id = None
    cfg = model.config
    ids = torch.randint(4, cfg.vocab_size, (1, 100)).to(DEVICE)
    mask = torch.ones_like(ids)
    n_new = 128
    res = {}
    # 1. the compiled call alone, one token at a time, no host work between (upper bound of a decode loop)
    compiled = model.get_compiled_call(CompileConfig(fullgraph=True, mode="reduce-overhead"))
    for _ in range(2):
        manual(model, ids, mask, n_new, compiled)
    sync()
    cache = StaticCache(config=model.config, max_cache_len=100 + n_new)
    full = torch.ones(1, 100 + n_new, dtype=torch.long, device=DEVICE)
    model(input_ids=ids, attention_mask=full, past_key_values=cache, cache_position=torch.arange(100, device=DEVICE),
          logits_to_keep=1, use_cache=True)
    tok1 = torch.zeros(1, 1, dtype=torch.long, device=DEVICE)
    cps = torch.arange(100, 100 + n_new, device=DEVICE)

    def steps(k):
        for i in range(k):
            j = i % n_new
            compiled(input_ids=tok1, attention_mask=full, position_ids=cps[j:j + 1][None], past_key_values=cache,
                     cache_position=cps[j:j + 1], logits_to_keep=1, use_cache=True)

    steps(8)
    sync()
    t0 = time.perf_counter()
    steps(64)
    t_launch = time.perf_counter() - t0
    sync()
    res["compiled_step_ms_wall"] = 1e3 * (time.perf_counter() - t0) / 64
    res["compiled_step_ms_cpu_launch"] = 1e3 * t_launch / 64
    # 2. eager step for contrast
    sync()
    t0 = time.perf_counter()
    for i in range(16):
        i = i % n_new
        model(input_ids=tok1, attention_mask=full, position_ids=cps[i:i + 1][None], past_key_values=cache,
              cache_position=cps[i:i + 1], logits_to_keep=1, use_cache=True)
    sync()
    res["eager_step_ms"] = 1e3 * (time.perf_counter() - t0) / 16
    # 3. profile of the compiled steps
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with profile(activities=acts) as prof:
        steps(16)
        sync()
    res["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    try:
        res["cudagraph_counters"] = {k: dict(v) for k, v in torch._dynamo.utils.counters.items()
                                     if k in ("inductor", "stats", "graph_break")}
    except Exception as e:  # noqa: BLE001
        res["cudagraph_counters"] = str(e)
    print(json.dumps({k: v for k, v in res.items() if k != "profile"}, indent=1, default=str))
    print(res["profile"])
    if a.out:
        a.out.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
