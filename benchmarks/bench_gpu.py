"""GPU benchmarks (run on a CUDA machine): runner throughput and model FLOP utilisation for a BERT-large-size
encoder in bf16, the sweep wall time for 11 alphas, and the blend's cost against the memory-bandwidth bound.

    python benchmarks/bench_gpu.py [--n 10000] [--repeats 5] [--compile] [--profile]

Model: BertForSequenceClassification built from a config (24 layers, hidden 1024, 16 heads, FFN 4096; random
weights, no download). Inputs: 10,000 English-like token sequences (log-normal lengths, mean about 50 tokens, max
128). FLOPs count real (non-pad) tokens only: per layer 24*d^2 FLOPs per token for the dense layers plus 4*L*d
per token for attention scores and values (L = that sequence's real length), plus the classifier. The peak is the
best bf16 matmul rate measured on the same GPU in the same process (8192^3 and 16384^3). All numbers are medians of
--repeats runs.

Measured: the runner as the harness runs it (packed, padding-free batches: harness.models.packed, attention by
the short-sequence Triton kernel where it applies), packed with the flash kernel only, and padded
(``packed=False``), each at the best of --batch-tokens; their logits against an fp32 reference; a plain padded
loop (batches of 256 in input order); the blend cost per alpha against bytes moved / measured copy bandwidth; the
11-alpha sweep (and for a head-only fine-tune, whose frozen encoder runs once: harness.models.trunk); peak memory
after 1 alpha, after 11 alphas, and with a second 10,000-example split (it must not
grow); with --compile, the runner again with each encoder layer compiled (regional torch.compile).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import statistics
import sys
import time

import numpy as np
import torch


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> float:
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def matmul_peak(sizes=(8192, 16384), repeats: int = 10) -> float:
    """The best bf16 matmul rate (FLOP/s) over square sizes, each the median of 5 timings of ``repeats`` matmuls:
    the highest rate measured, so the MFU derived from it is the conservative one."""
    rates = []
    for n in sizes:
        a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
        t = timed(lambda: [a @ b for _ in range(repeats)], 5) / repeats
        rates.append(2 * n**3 / t)
        del a, b
    return max(rates)


def copy_bandwidth(n_bytes: int = 2 << 30) -> float:
    x = torch.empty(n_bytes // 4, device=DEVICE, dtype=torch.float32)
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), 5)
    return 2 * n_bytes / t


def lengths_like_english(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lens = np.exp(rng.normal(np.log(44), 0.5, size=n)).round().astype(int)
    return np.clip(lens, 8, 128)


def make_split(n: int, vocab: int, seed: int = 1):
    from harness.records import SplitRef, SplitRole, SuiteRole, TokenizedSplit

    rng = np.random.default_rng(seed)
    lengths = lengths_like_english(n, seed=seed - 1)
    ids = tuple(np.concatenate([[101], rng.integers(1000, vocab, size=L - 2), [102]]).astype(np.int32)
                for L in lengths)
    return TokenizedSplit(ref=SplitRef("bench", "test", SplitRole.TEST, SuiteRole.ID), input_ids=ids,
                          token_type_ids=tuple(np.zeros(L, np.int8) for L in lengths), lengths=lengths.astype(np.int32),
                          labels=rng.integers(0, 2, size=n), example_ids=np.arange(n).astype(str),
                          source_ids=np.arange(n).astype(str), max_length=128, n_truncated=0, n_dropped=0,
                          cache_key="bench")


def model_flops(lengths: np.ndarray, layers: int, d: int, ffn: int, n_labels: int = 2) -> float:
    tokens = lengths.sum()
    dense = layers * (2 * 4 * d * d + 2 * 2 * d * ffn) * tokens
    attention = layers * 4 * d * (lengths.astype(np.float64) ** 2).sum()
    head = len(lengths) * (2 * d * d + 2 * d * n_labels)
    return float(dense + attention + head)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-tokens", default="32768,65536,131072", help="comma list; the best is reported")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels that take the time")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    a = ap.parse_args(argv)
    global DEVICE
    if a.smoke:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device; this benchmark needs a GPU (use --smoke to check the script on CPU)")
        return 0
    from transformers import BertConfig, BertForSequenceClassification

    from harness.models.blend import BlendEngine
    from harness.models.scorer import HFScorer
    from harness.predict import predict

    torch.backends.cuda.matmul.allow_tf32 = True
    out: dict = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)",
                 "torch": torch.__version__}
    if a.smoke:
        out["smoke"] = "tiny model on CPU: checks that the script runs; none of these numbers is a measurement"
    out["bf16_matmul_tflops"] = matmul_peak((256, 512) if a.smoke else (8192, 16384)) / 1e12
    out["copy_bandwidth_tb_s"] = copy_bandwidth(1 << 20 if a.smoke else 2 << 30) / 1e12
    layers, d, ffn = (2, 64, 128) if a.smoke else (24, 1024, 4096)
    cfg = BertConfig(vocab_size=30522, hidden_size=d, num_hidden_layers=layers, num_attention_heads=16 if d >= 1024
                     else 2, intermediate_size=ffn, max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).to(DEVICE, torch.bfloat16).eval()
    tok = make_split(a.n, cfg.vocab_size)
    flops = model_flops(tok.lengths, layers, d, ffn)
    scorer = HFScorer(model)  # packed (padding-free) where the model qualifies: it does here
    padded_scorer = HFScorer(model, packed=False)
    out["runner_packed"] = scorer.packed

    def run(sc, bt):
        return predict(sc, tok, point="b", batch_tokens=bt, pad_id=0)

    budgets = [int(x) for x in str(a.batch_tokens).split(",")]
    out["runner_packed_attention"] = scorer.packing_mode

    @contextlib.contextmanager
    def attention(kind: str):
        packer, old = scorer.packer, scorer.packer.attention if scorer.packer else None
        if packer is not None:
            packer.attention = kind
        try:
            yield
        finally:
            if packer is not None:
                packer.attention = old

    for name, sc, kind in (("runner", scorer, "auto"), ("runner_packed_flash", scorer, "flash"),
                           ("runner_padded", padded_scorer, "auto")):
        with attention(kind):
            per_budget = {bt: timed(lambda: run(sc, bt), a.repeats) for bt in budgets}
        best = min(per_budget, key=per_budget.get)
        out[f"{name}_examples_s_by_batch_tokens"] = {k: round(a.n / v) for k, v in per_budget.items()}
        out[f"{name}_batch_tokens"] = best
        out[f"{name}_examples_s"] = a.n / per_budget[best]
        out[f"{name}_mfu"] = flops / per_budget[best] / (out["bf16_matmul_tflops"] * 1e12)
    best = out["runner_batch_tokens"]
    t_run = a.n / out["runner_examples_s"]
    out["mean_real_tokens"] = float(tok.lengths.mean())
    # numerics: both bf16 paths against an fp32 padded reference of the same weights (random weights give tiny
    # logit margins, so some argmax flips are expected from bf16 rounding alone; packed must be no worse)
    lp, lq = run(scorer, best).logits, run(padded_scorer, best).logits
    with attention("flash"):
        lf = run(scorer, best).logits
    ref_model = copy.deepcopy(model).float()
    ref = run(HFScorer(ref_model), best).logits
    del ref_model
    gc.collect()  # the copy carries a reference cycle (its packer's hooks); free it before memory is measured
    for name, lg in (("packed", lp), ("packed_flash", lf), ("padded", lq)):
        out[f"{name}_bf16_vs_fp32_max_abs_logit_diff"] = float(np.abs(lg - ref).max())
        out[f"{name}_bf16_vs_fp32_flipped"] = int((lg.argmax(1) != ref.argmax(1)).sum())
    out["fp32_logit_margin_median"] = float(np.median(np.abs(ref[:, 0] - ref[:, 1])))

    if a.profile and DEVICE == "cuda":
        from torch.profiler import ProfilerActivity, profile

        for name, sc in (("packed", scorer),):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                run(sc, best)
                sync()
            print(f"--- {name}: CUDA time by kernel")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))

    # baseline: fixed-length padded batches of 256 in input order (what a plain DataLoader + pipeline does)
    @torch.inference_mode()
    def padded_loop():
        for s in range(0, a.n, 256):
            idx = np.arange(s, min(s + 256, a.n))
            ids = torch.zeros((len(idx), 128), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                L = tok.lengths[i]
                ids[r, :L] = torch.from_numpy(tok.input_ids[i].astype(np.int64))
                mask[r, :L] = 1
            model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE)).logits.float().cpu()

    t_pad = timed(padded_loop, a.repeats)
    out["padded_loop_examples_s"] = a.n / t_pad
    out["runner_vs_padded"] = t_pad / t_run

    # sweep: 11 alphas with the blend engine (fp32 base/adapted copies on the GPU, bf16 live model)
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator(device=DEVICE).manual_seed(1)
    adapted_sd = {k: (v + 0.01 * torch.randn(v.shape, device=DEVICE, generator=g, dtype=torch.float32).to(v.dtype))
                  if v.is_floating_point() else v.clone() for k, v in base_sd.items()}
    engine = BlendEngine(model, base_sd, adapted_sd)
    del base_sd, adapted_sd
    gib = 2**30
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        out["resident_gib"] = torch.cuda.memory_allocated() / gib  # live model + the engine's fp32 copies
        torch.cuda.reset_peak_memory_stats()
    t_apply = timed(lambda: engine.apply(0.3), 10)
    bytes_moved = engine.bytes_per_apply()
    out["blend_ms_per_alpha"] = t_apply * 1e3
    out["blend_bound_ms"] = bytes_moved / (out["copy_bandwidth_tb_s"] * 1e12) * 1e3
    out["blend_vs_bound"] = out["blend_ms_per_alpha"] / out["blend_bound_ms"]

    def peak() -> float | None:
        return torch.cuda.max_memory_allocated() / gib if DEVICE == "cuda" else None

    def sweep(splits, alphas):
        for alpha in alphas:
            engine.apply(alpha)
            for split in splits:
                predict(scorer, split, point="b", batch_tokens=best, pad_id=0)

    sweep([tok], [0.0])
    out["peak_gib_1_alpha_1_split"] = peak()
    t0 = time.perf_counter()
    sweep([tok], [i / 10 for i in range(11)])
    sync()
    out["sweep_11_alphas_s"] = time.perf_counter() - t0
    out["peak_gib_11_alphas_1_split"] = peak()
    sweep([tok, make_split(a.n, cfg.vocab_size, seed=2)], [i / 10 for i in range(11)])
    out["peak_gib_11_alphas_2_splits"] = peak()
    out["weights_gib_bf16"] = sum(p.numel() for p in model.parameters()) * 2 / gib
    out["engine_fp32_copies_gib"] = engine.n_bytes / gib

    # frozen trunk: a head-only fine-tune (adapted differs from base in the classifier only): the 24 encoder layers
    # run once per split, each alpha runs the head on the stored states (harness.models.trunk)
    from harness.models.trunk import TrunkCache, frozen_depth

    engine.apply(0.0)
    base_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    head_sd = {k: v + 0.01 * torch.randn(v.shape, device=DEVICE, generator=g, dtype=torch.float32).to(v.dtype)
               if k.startswith("classifier.") else v for k, v in base_sd.items()}
    del engine
    engine = BlendEngine(model, base_sd, head_sd)
    del base_sd, head_sd
    gc.collect()
    frozen = frozen_depth(model, engine.changed_names())
    if frozen:
        trunk = TrunkCache(model, frozen)

        def sweep_head_only():
            for alpha in [i / 10 for i in range(11)]:
                engine.apply(alpha)
                with trunk.scoring(tok.cache_key):
                    predict(scorer, tok, point="b", batch_tokens=best, pad_id=0)

        t0 = time.perf_counter()
        sweep_head_only()
        sync()
        out["sweep_11_alphas_head_only_trunk_reuse_s"] = time.perf_counter() - t0
        out["trunk_cache_gib"] = trunk.n_bytes / gib
        trunk.clear()
    out["head_only_frozen_layers"] = frozen

    if a.compile:  # regional compilation: each encoder layer (the packed row's token count is dynamic)
        from harness.models.scorer import compile_layers

        compile_layers(model)
        t0 = time.perf_counter()
        run(scorer, best)
        sync()
        out["compile_warmup_s"] = time.perf_counter() - t0
        t_c = timed(lambda: run(scorer, best), a.repeats)
        out["runner_compiled_layers_examples_s"] = a.n / t_c
        out["runner_compiled_layers_mfu"] = flops / t_c / (out["bf16_matmul_tflops"] * 1e12)
        with attention("flash"):
            t_cf = timed(lambda: run(scorer, best), a.repeats)
        out["runner_compiled_layers_flash_examples_s"] = a.n / t_cf
        out["runner_compiled_layers_flash_mfu"] = flops / t_cf / (out["bf16_matmul_tflops"] * 1e12)
        t0 = time.perf_counter()
        sweep([tok], [i / 10 for i in range(11)])
        sync()
        out["sweep_11_alphas_compiled_s"] = time.perf_counter() - t0
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
