"""Batch-1 greedy decoding through transformers' continuous-batching path (``generate_batch``: paged KV cache,
CUDA graphs, asynchronous batching) beside ``generate`` with the static cache, on the 1.1B llama of
``lm_gpu.py`` (issue 20), against the memory-bandwidth bound; and the step's matrix-vector chain compiled by
Inductor as the model runs it (seven products per layer), the kernel ceiling of any unfused decoder.

    python benchmarks/gen_cb.py --out /tmp/gen_cb.json [--tiny]
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
from gen_ceiling import build, gemv  # noqa: E402
from lm_gpu import DEVICE, FULL, TINY, peak, timed  # noqa: E402


SETTINGS = {"cb_default": {}, "cb_graphs_async": {"use_cuda_graph": True, "use_async_batching": True},
            "cb_level3": {"use_cuda_graph": True, "use_async_batching": True, "default_compile_level": 3}}


def cb_variants(model, ids: list[int], n_new: int, names: list[str]) -> dict:
    """tokens/s of ``generate_batch`` for one prompt per continuous-batching setting (second and later calls)."""
    import transformers
    from transformers import GenerationConfig

    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
    except ImportError as e:
        return {"error": f"transformers {transformers.__version__}: no ContinuousBatchingConfig ({e})"}
    gc = GenerationConfig(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    out: dict = {"transformers": transformers.__version__}
    for name in names:
        try:  # a small paged cache: a manager's cache outlives its call (the next one ran out of memory)
            cfg = ContinuousBatchingConfig(max_memory_percent=0.2, **SETTINGS[name])
            t0 = time.perf_counter()
            t, res = timed(lambda: model.generate_batch(inputs=[ids], generation_config=gc,
                                                        continuous_batching_config=cfg), 3, warmup=1)
            toks = next(iter(res.values())).generated_tokens
            out[name] = {"s": t, "tok_s": len(toks) / t, "n_tokens": len(toks), "tokens": list(map(int, toks)),
                         "first_call_s": time.perf_counter() - t0 - 3 * t}
        except Exception as e:  # noqa: BLE001 - report and go on
            out[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
        print("cb", name, {k: v for k, v in out[name].items() if k != "tokens"}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}")
    ap.add_argument("--no-gemv", action="store_true")
    a = ap.parse_args()
    res: dict = {"peak": peak(a.tiny)}
    shape = TINY if a.tiny else FULL
    n_new = 8 if a.tiny else 128

    def dump():
        if a.out:
            a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")

    model = build(shape)
    cfg = model.config
    read = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    res["bound_tok_s"] = res["peak"]["copy_bytes_per_s"] / (read + kv * (100 + n_new / 2))
    ids = torch.randint(4, cfg.vocab_size, (1, 100), generator=torch.Generator().manual_seed(1))
    t, ref = timed(lambda: model.generate(input_ids=ids.to(DEVICE), attention_mask=torch.ones_like(ids).to(DEVICE),
                                          do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                                          pad_token_id=0, cache_implementation="static"), 3)
    ref = ref[0, ids.shape[1]:].tolist()
    res["static_generate"] = {"tok_s": n_new / t}
    dump()
    res["cb"] = cb_variants(model, ids[0].tolist(), n_new, a.variants.split(","))
    for v in res["cb"].values():
        if isinstance(v, dict) and "tokens" in v:
            v["of_bound"] = v["tok_s"] / res["bound_tok_s"]
            v["same_tokens_as_generate"] = v.pop("tokens") == ref
    dump()
    if DEVICE == "cuda" and not a.no_gemv:
        import torch._inductor.config as ic

        ic.coordinate_descent_tuning = True
        ch = gemv(shape, chains=("inductor_7_per_layer",))
        res["gemv_inductor_7"] = ch
        dump()
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
