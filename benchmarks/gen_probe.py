"""Greedy decoding paths on a GPU, side by side (issue 20): plain ``generate`` (dynamic cache), ``generate`` with
transformers' static cache (its own compile; and with an explicit fullgraph ``CompileConfig``), with stop strings
(``StopStringCriteria``), and a hand-written loop over transformers' ``StaticCache`` and the model's compiled call;
tokens/s at batch 1 and 64 against the bandwidth bound, and the share of rows whose tokens equal plain ``generate``'s
(bf16 random weights: any rounding difference changes a greedy path, so this is not a correctness check).

    python benchmarks/gen_probe.py --out /tmp/gen_probe.json [--tiny]

Measured on an H200 (1.1B llama, bf16, 128 new tokens): batch 1: 60 / 342 / 307 / 206 / 414 tokens/s (bound
1,906); batch 64: 3,585 / 11,931 / 10,859 / 10,127 / 13,666.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_gpu import DEVICE, build, peak, timed  # noqa: E402


@torch.inference_mode()
def manual(model, ids, mask, n_new, compiled, check_every=16, eos=None):
    """Greedy decode with transformers' StaticCache and the model's compiled call (transformers docs recipe)."""
    from transformers import StaticCache

    b, p = ids.shape
    L = p + n_new
    cache = StaticCache(config=model.config, max_cache_len=L)
    full = torch.zeros(b, L, dtype=mask.dtype, device=ids.device)
    full[:, :p] = mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=cache,
                cache_position=torch.arange(p, device=ids.device), logits_to_keep=1, use_cache=True).logits
    tok = out[:, -1].argmax(-1)
    toks = torch.empty(b, n_new, dtype=torch.long, device=ids.device)
    toks[:, 0] = tok
    nxt = pos[:, -1:] + 1
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    for i in range(1, n_new):
        cp = torch.tensor([p + i - 1], device=ids.device)
        full[:, p + i - 1] = 1
        logits = compiled(input_ids=toks[:, i - 1:i], attention_mask=full, position_ids=nxt, past_key_values=cache,
                          cache_position=cp, logits_to_keep=1, use_cache=True).logits
        toks[:, i] = logits[:, -1].argmax(-1)
        nxt = nxt + 1
        if eos is not None:
            done |= toks[:, i] == eos
            if i % check_every == 0 and bool(done.all()):
                break
    return toks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--new", type=int, default=128)
    a = ap.parse_args()
    res: dict = {}
    pk = peak(a.tiny)
    res["peak"] = pk
    model, tok = build(a.tiny)
    model.generation_config.eos_token_id = None
    from transformers import CompileConfig

    cfg = model.config
    w_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    g = torch.Generator().manual_seed(1)
    n_new = 8 if a.tiny else a.new

    def dump():
        if a.out:
            a.out.write_text(json.dumps(res, indent=1, default=float))

    for bs in (1, 64):
        ids = torch.randint(4, cfg.vocab_size, (bs, 100), generator=g).to(DEVICE)
        mask = torch.ones_like(ids)
        if bs > 1:  # left padding on some rows
            for r in range(0, bs, 3):
                ids[r, : r % 17] = 0
                mask[r, : r % 17] = 0
        bound = bs * pk["copy_bytes_per_s"] / (w_bytes + kv * bs * (100 + n_new / 2))
        rec = {"bound": bound}
        res[f"b{bs}"] = rec
        variants = {
            "plain_dynamic": lambda: model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                    max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0),
            "static_auto": lambda: model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                  max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0,
                                                  cache_implementation="static"),
            "static_fullgraph": lambda: model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                pad_token_id=0, cache_implementation="static",
                compile_config=CompileConfig(fullgraph=True, mode="reduce-overhead")),
            "static_stopstr": lambda: model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new, pad_token_id=0,
                cache_implementation="static", stop_strings=["t5 t6"], tokenizer=tok),
        }
        compiled = model.get_compiled_call(CompileConfig(fullgraph=True, mode="reduce-overhead"))
        variants["manual_compiled"] = lambda: manual(model, ids, mask, n_new, compiled)
        outs = {}
        for name, fn in variants.items():
            try:
                t0 = time.perf_counter()
                t, o = timed(fn, 3)
                o = o if name.startswith("manual") else o[:, ids.shape[1]:]
                outs[name] = o
                rec[name] = {"s": t, "tok_s": bs * n_new / t, "of_bound": bs * n_new / t / bound,
                             "first_call_s": time.perf_counter() - t0 - 3 * t}
            except Exception as e:  # noqa: BLE001
                rec[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
            print(bs, name, json.dumps(rec[name])[:300], flush=True)
            dump()
        ref = outs.get("plain_dynamic")
        if ref is not None:
            rec["same_as_plain"] = {k: float((v[:, : ref.shape[1]] == ref).all(-1).float().mean())
                                    for k, v in outs.items()}
        dump()
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
