"""How close batch-1 greedy decoding can get to the memory-bandwidth bound on a GPU (issue 20), and why.

Three measurements, one process, one JSON:

1. ``gemv``: a stand-in for the kernels of one decoding step (every projection of every layer and the lm_head of
   the 1.1B llama as matrix-vector products at batch 1, bf16, with a few element-wise kernels between them standing
   in for the model's norms, activations and residual adds), replayed from a CUDA graph so no host time counts:
   cuBLAS with seven products per layer as the model runs them, cuBLAS with q/k/v and gate/up concatenated (four
   per layer), and the four-per-layer chain compiled by Inductor (``max-autotune-no-cudagraphs`` with
   coordinate-descent tuning, which also fuses the element-wise kernels). Bytes of the matrices over time.
2. ``generate``: transformers' ``generate`` with its static cache at batch 1, as the harness calls it, with
   transformers' own compile (``static_auto``) and with Inductor's coordinate-descent tuning (the gpt-fast setting)
   switched on and ``CompileConfig(fullgraph=True, mode="reduce-overhead")`` (``static_cdt``); ``first_calls_s`` is
   the time of the two warm-up calls.
3. ``generate_7b``: the same call on a Llama-2-7B-shaped model (6.7B parameters, bf16), where the weights are a
   larger share of each step.

    python benchmarks/gen_ceiling.py --out /tmp/gen_ceiling.json [--tiny] [--skip-7b]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_gpu import DEVICE, FULL, TINY, peak, sync, timed  # noqa: E402

SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=2048)


def graph_time(fn, x, replays: int = 50) -> float:
    """Seconds per call of ``fn(x)`` replayed from a CUDA graph (eager timing off a GPU)."""
    if DEVICE != "cuda":
        t, _ = timed(lambda: fn(x), 5)
        return t
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(x)
    g.replay()
    sync()
    t0 = time.perf_counter()
    for _ in range(replays):
        g.replay()
    sync()
    return (time.perf_counter() - t0) / replays


def gemv(shape: dict, chains: tuple[str, ...] = ("cublas_7_per_layer", "cublas_4_per_layer",
                                                 "inductor_4_per_layer")) -> dict:
    """The step's matrix-vector products (with the element-wise glue between them) alone: seconds, bytes,
    bandwidth per chain; chains named ``<cublas|inductor>_<7|4>_per_layer`` (4: q/k/v and gate/up concatenated)."""
    h, m, n_layers, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = shape["num_key_value_heads"] * h // shape["num_attention_heads"]
    bf = dict(device=DEVICE, dtype=torch.bfloat16)
    layers = [{k: torch.randn(o, i, **bf) * 0.02 for k, (o, i) in
               dict(q=(h, h), k=(kv, h), v=(kv, h), o=(h, h), g=(m, h), u=(m, h), d=(h, m)).items()}
              for _ in range(n_layers)]
    head = torch.randn(v, h, **bf) * 0.02
    fused = [{"qkv": torch.cat([w["q"], w["k"], w["v"]]), "o": w["o"], "gu": torch.cat([w["g"], w["u"]]),
              "d": w["d"]} for w in layers]
    n_bytes = (sum(t.numel() for w in layers for t in w.values()) + head.numel()) * 2

    def seven(x):
        for w in layers:
            q, k, vv = F.linear(x, w["q"]), F.linear(x, w["k"]), F.linear(x, w["v"])
            a = F.linear(q + k.sum() + vv.sum(), w["o"])
            x = x + F.linear(F.silu(F.linear(a, w["g"])) * F.linear(a, w["u"]), w["d"])
        return F.linear(x, head)

    def four(x):
        for w in fused:
            qkv = F.linear(x, w["qkv"])
            a = F.linear(qkv[:, :h] + qkv[:, h:].sum(), w["o"])
            gu = F.linear(a, w["gu"])
            x = x + F.linear(F.silu(gu[:, :m]) * gu[:, m:], w["d"])
        return F.linear(x, head)

    x = torch.randn(1, h, **bf)
    out = {"weight_bytes": n_bytes}
    fns = {}
    for name in chains:
        fn = seven if name.endswith("7_per_layer") else four
        if name.startswith("inductor"):
            if DEVICE != "cuda":
                continue
            import torch._inductor.config as ic

            ic.coordinate_descent_tuning = True
            fn = torch.compile(fn, mode="max-autotune-no-cudagraphs", fullgraph=True)
        fns[name] = fn
    for name, fn in fns.items():
        try:
            t = graph_time(fn, x)
            out[name] = {"ms": t * 1e3, "bytes_per_s": n_bytes / t}
        except Exception as e:  # noqa: BLE001 - report and go on
            out[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1200:]}
        print("gemv", name, out[name], flush=True)
    return out


def build(shape: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**shape, initializer_range=0.02, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    return model


def generate(model, copy_bps: float, n_new: int, variants: list[str]) -> dict:
    """tokens/s of ``generate`` (static cache, batch 1, 100-token prompt) per compile variant, against the bound."""
    from transformers import CompileConfig

    cfg = model.config
    ids = torch.randint(4, cfg.vocab_size, (1, 100), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    mask = torch.ones_like(ids)
    # bytes read per step: every weight but the input embedding (one row of it is read), plus the KV cache
    read = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed_tokens" not in n)
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    bound = copy_bps / (read + kv * (100 + n_new / 2))
    res = {"bound_tok_s": bound, "bytes_read_per_step": read}
    for name in variants:
        torch._dynamo.reset()
        import torch._inductor.config as ic

        ic.coordinate_descent_tuning = name == "static_cdt"
        kw = {} if name == "static_auto" else {
            "compile_config": CompileConfig(fullgraph=True, mode="reduce-overhead")}
        try:
            t0 = time.perf_counter()
            t, _ = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0,
                                                cache_implementation="static", **kw), 5, warmup=2)
            res[name] = {"tok_s": n_new / t, "of_bound": n_new / t / bound, "ms_per_token": t / n_new * 1e3,
                         "first_calls_s": time.perf_counter() - t0 - 5 * t}
        except Exception as e:  # noqa: BLE001
            res[name] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1200:]}
        print("generate", name, res[name], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke run on a CPU)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--skip-7b", action="store_true")
    a = ap.parse_args()
    res: dict = {"peak": peak(a.tiny)}

    def dump():
        if a.out:
            a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")

    shape = TINY if a.tiny else FULL
    res["gemv"] = gemv(shape)
    for k, v in res["gemv"].items():
        if isinstance(v, dict) and "bytes_per_s" in v:
            v["of_copy_bandwidth"] = v["bytes_per_s"] / res["peak"]["copy_bytes_per_s"]
    dump()
    model = build(shape)
    res["generate"] = generate(model, res["peak"]["copy_bytes_per_s"], 8 if a.tiny else 128,
                               ["static_auto", "static_cdt"] if DEVICE == "cuda" else ["static_auto"])
    dump()
    del model
    if not a.skip_7b and not a.tiny:
        torch.cuda.empty_cache()
        model = build(SEVEN_B)
        res["generate_7b"] = generate(model, res["peak"]["copy_bytes_per_s"], 64, ["static_auto"])
        dump()
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
