"""GPU benchmark of language-model scoring, generation and sweeps (issues 20 and 15), for a device machine.

    python benchmarks/lm_gpu.py --out /tmp/lm_gpu.json          # H200: about 6 minutes
    PYTHONPATH=. python benchmarks/lm_gpu.py --tiny --out /tmp/lm_gpu_tiny.json   # CPU smoke (not measurements)

Model: ``LlamaForCausalLM`` built from a TinyLlama-1.1B-shaped config (22 layers, hidden 2048, FFN 5632, 32 heads, 4
KV heads, vocabulary 32,000; 1.10B parameters; ``--shape llama32``: Llama-3.2-1B's, :data:`LLAMA32`) in bf16 with
random weights (``initializer_range`` 0.02; no download). The scorer is called directly on token ids
(:meth:`CausalLMScorer.score_tokens`), so no loader and no random-weight check is involved; the tokenizer is a
word-level one built in memory (``t0`` ... ``t31999``).

Sections (each catches its own error into the JSON, so one failure does not lose the others):

* ``peak``: bf16 matmul rate at 8192^3 (median of 5 timings of 10 matmuls) and device copy bandwidth (2 GiB
  fp32 copy, bytes read + written);
* ``mc``: multiple-choice log-likelihood on synthetic ARC-like rows (context ~100 tokens, log-normal; 4 choices
  of 3-12 tokens), ``--n-mc`` rows, median of ``--repeats`` runs at each ``--batch-tokens``; model FLOP
  utilisation = 2 x (decoder linear-layer parameters) x real tokens read + 2 x (lm_head parameters) x logits
  computed, over the measured matmul peak (attention score/value FLOPs are not counted: at ~110 tokens they add
  under 1%); lm-eval's HFLM on the same token rows (``_loglikelihood_tokens``, ``batch_size="auto"``) when
  importable, and the max |dLL| between both (bf16); with ``--compile-mc`` also a fresh model whose decoder
  blocks are compiled (``--compile``), its first-pass time and MFU;
* ``gen``: greedy decoding of 128 new tokens after ~100-token prompts, tokens/s at batch 1 and 64
  (``--gen-batches``): the harness (``generate_until``) with the static cache (its sync-free loop over its compiled
  greedy step, and the same with ``generation_tuned``: ``max-autotune``, coordinate-descent tuning, programmatic
  dependent launch and eager attention in the step, at ``--gen-tuned-batches`` sizes) and with
  transformers' dynamic cache (``generate``), in ``--gen-variants`` order, the first call's time (compilation),
  and plain ``model.generate`` (batched, dynamic cache; and batch 1 one prompt at a time); the bandwidth bound per step = (weight bytes read + KV
  bytes at the mean sequence length) / measured copy bandwidth, where the weight bytes read are every weight but the
  input embedding table (one row of it is read; a tied lm_head is counted whole);
* ``lora``: time of an alpha change (:meth:`BlendEngine.apply` on the LoRA-scale path) for rank-16 adapters on
  q/k/v/o/gate/up/down of every layer (median of 20); for contrast the merged path's apply (full fine-tune);
* ``memory`` (issue 15): peak GPU memory of a sweep of the bf16 model (base state dict and adapted weights on the
  CPU, as :class:`BlendEvaluator` has them; references on the model's device, as ``--blend-references device``;
  in pinned CPU memory, as ``auto`` for this model; and the LoRA-scale path), each after alpha changes and one
  scoring batch, against the weight bytes, with the median alpha-change time;

lm-eval at runtime (carry as wheels; no downloads): lm_eval 0.4.13 and what HFLM imports: evaluate, datasets,
sqlitedict, jsonlines, pytablewriter, sacrebleu, rouge_score, scikit-learn, dill, word2number, more_itertools,
zstandard, tqdm-multiprocess (``pip install lm_eval==0.4.13`` resolves them); without it ``mc.lm_eval`` says why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
FULL = dict(TINYLLAMA)  # the full-size model's config (set_shape changes it)
# Llama-3.2-1B's shape (16 layers, hidden 2048, FFN 8192, 32 heads, 8 KV heads, vocabulary 128,256, tied
# embeddings; 1.24B parameters): fewer, larger matrices than TinyLlama's, and a large lm_head
LLAMA32 = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=2048)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, max_position_embeddings=512)
TIED = False  # tie_word_embeddings of the built model (set_shape("llama32") sets it)
OUT: Path | None = None  # --out, set by main()
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls (device synchronised), after ``warmup`` calls; the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def section(result: dict, name: str, fn) -> None:
    """Run one section into ``result[name]``; an exception becomes ``{"error": ...}``."""
    t0 = time.perf_counter()
    try:
        result[name] = fn()
    except Exception as e:  # noqa: BLE001 - a benchmark reports what failed and goes on
        result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {json.dumps(result[name], default=float)[:600]}", file=sys.stderr, flush=True)
    if OUT is not None:  # written after every section: a run cut short keeps what it measured
        OUT.write_text(json.dumps(result, indent=2, default=float) + "\n")


def peak(tiny: bool) -> dict:
    n = 512 if tiny else 8192
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    t, _ = timed(lambda: [a @ b for _ in range(10)], 5)
    n_bytes = (64 << 20) if tiny else (2 << 30)
    x = torch.empty(n_bytes // 4, device=DEVICE)
    y = torch.empty_like(x)
    tc, _ = timed(lambda: y.copy_(x), 5)
    return {"matmul_n": n, "bf16_matmul_flops": 2 * n**3 * 10 / t, "copy_bytes_per_s": 2 * n_bytes / tc}


def set_shape(name: str) -> None:
    """``tinyllama`` (the default, :data:`FULL`) or ``llama32`` (:data:`LLAMA32`, tied embeddings) for
    :func:`build`'s full-size model."""
    global FULL, TIED
    FULL, TIED = (dict(LLAMA32), True) if name == "llama32" else (dict(TINYLLAMA), False)


def weight_bytes_read(model) -> int:
    """Bytes of the weights one decoding step reads: every parameter but the input embedding table (one row of it is
    read), and the lm_head whole even when it is tied to that table."""
    read = sum(t.numel() * t.element_size() for n, t in model.named_parameters() if "embed_tokens" not in n)
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:  # tied
        read += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    return read


def decode_bound(model, copy_bytes_per_s: float, rows: int, prompt: int, new: int) -> float:
    """The memory-bandwidth bound of greedy decoding in tokens/s: ``rows`` tokens per step over the time to read
    the step's weights (:func:`weight_bytes_read`) and its KV cache (bf16 keys and values of every layer at the mean
    length, ``prompt + new / 2``) at ``copy_bytes_per_s``."""
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2
    return rows * copy_bytes_per_s / (weight_bytes_read(model) + kv_per_token * rows * (prompt + new / 2))


def random_ids(model, rows: int, width: int, seed: int = 1) -> torch.Tensor:
    """``(rows, width)`` int64 token ids drawn from the model's vocabulary (ids 4 and up), on :data:`DEVICE`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, model.config.vocab_size, (rows, width), generator=g).to(DEVICE)


def decode_batches(model, res: dict, batches: list[int], prompt: int, new: int):
    """For each batch size: ``(rows, ids, mask, bound, record)``: random prompt ids ``(rows, prompt)`` and their
    all-ones mask, the decoding bound (:func:`decode_bound` at ``res["peak"]``'s copy bandwidth) and the dict stored
    as ``res[f"b{rows}"]`` for that size's results."""
    for rows in batches:
        ids = random_ids(model, rows, prompt)
        bound = decode_bound(model, res["peak"]["copy_bytes_per_s"], rows, prompt, new)
        res[f"b{rows}"] = {"bound_tok_s": bound}
        yield rows, ids, torch.ones_like(ids), bound, res[f"b{rows}"]


def build(tiny: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    cfg = LlamaConfig(**(TINY if tiny else FULL), initializer_range=0.02, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0, tie_word_embeddings=TIED and not tiny)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    # id 3 is "abcdef", the probe transformers' StopStringCriteria encodes to read the vocabulary
    # (special tokens are matched as substrings: they must not be prefixes of the "t<i>" words)
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)} | {"<pad>": 0, "<s>": 1, "abcdef": 3}
    vocab = {k: v for k, v in vocab.items() if k not in ("t0", "t1", "t3")}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="abcdef"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # no EOS token: generation runs its full length (random weights could emit any id)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", pad_token="<pad>",
                                  unk_token="abcdef")
    return model, tok


def mc_rows(n: int, vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Token (context, continuation) pairs: ``n`` rows x 4 choices, ARC-like lengths."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        ctx = [1] + rng.integers(4, vocab, size=int(np.clip(rng.lognormal(np.log(100), 0.3), 30, 300))).tolist()
        for _ in range(4):
            pairs.append((ctx, rng.integers(4, vocab, size=int(rng.integers(3, 13))).tolist()))
    return pairs


def linear_params(model) -> tuple[int, int]:
    """(parameters of the decoder's linear layers, of the lm_head)."""
    head = model.get_output_embeddings().weight.numel()
    body = sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    return body, head


def mc(model, tok, args, peak_flops: float | None) -> dict:
    from harness.models.causal import CausalLMScorer
    from harness.models.causal_shared import build_rows

    pairs = mc_rows(args.n_mc, model.config.vocab_size)
    body, head = linear_params(model)
    rows = build_rows(pairs, 2048, share=True)
    real = sum(r.length for r in rows)  # tokens the model reads (each context once)
    scored = sum(len(c) for _, c in pairs)
    out: dict = {"rows": args.n_mc, "requests": len(pairs), "tokens_read": real,
                 "tokens_unshared": sum(len(c) + len(x) - 1 for c, x in pairs), "runs": {}}
    best = None
    for bt in args.batch_tokens:
        sc = CausalLMScorer(model, tok, batch_tokens=bt, batch_size=100_000)
        t, (ll, _) = timed(lambda: sc.score_tokens(pairs), args.repeats)
        # lm_head FLOPs: logits are computed from each batch's first scored position on, ~ the scored tokens
        flops = 2 * body * real + 2 * head * scored
        run = {"seconds": t, "examples_per_s": args.n_mc / t, "tokens_per_s": real / t,
               "mfu": None if not peak_flops else flops / t / peak_flops}
        out["runs"][str(bt)] = run
        if best is None or t < best[0]:
            best = (t, bt, ll)
    out["best"] = {"batch_tokens": best[1], **out["runs"][str(best[1])]}
    out["lm_eval"] = lmeval_mc(model, tok, pairs, args.repeats, best[2], best[0])
    if args.compile_mc:  # a fresh model whose decoder layers are compiled (regional compilation, dynamic shapes)
        from harness.models.reft import find_layers

        cmodel, _ = build(args.tiny)
        layers = find_layers(cmodel)
        for layer in layers:
            layer.compile(dynamic=True)
        n = len(layers)
        sc = CausalLMScorer(cmodel, tok, batch_tokens=best[1], batch_size=100_000)
        t0 = time.perf_counter()
        sc.score_tokens(pairs)
        warm = time.perf_counter() - t0
        t, (ll_c, _) = timed(lambda: sc.score_tokens(pairs), args.repeats, warmup=0)
        flops = 2 * body * real + 2 * head * scored
        out["compiled"] = {"layers": n, "batch_tokens": best[1], "first_pass_s": warm, "seconds": t,
                           "examples_per_s": args.n_mc / t,
                           "mfu": None if not peak_flops else flops / t / peak_flops,
                           "loglik_max_abs_diff_vs_eager_bf16": float(np.abs(ll_c - best[2]).max())}
        del cmodel, sc
    return out


def lmeval_mc(model, tok, pairs, repeats: int, ours_ll: np.ndarray, ours_s: float) -> dict:
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        return {"skipped": f"lm_eval not importable: {e}"}
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size="auto", device=DEVICE)
    reqs = [(("", ""), c, x) for c, x in pairs]
    hflm._loglikelihood_tokens(reqs, disable_tqdm=True)  # warm-up; detects the batch size
    detected = max(hflm.batch_sizes.values())
    hflm.batch_size_per_gpu = detected  # timed runs reuse it (no detection cost)
    t, res = timed(lambda: hflm._loglikelihood_tokens(reqs, disable_tqdm=True), repeats, warmup=0)
    theirs = np.array([r[0] for r in res])
    return {"batch_size_detected": detected, "seconds": t, "examples_per_s": len(pairs) / 4 / t,
            "harness_speedup": t / ours_s, "loglik_max_abs_diff_bf16": float(np.abs(theirs - ours_ll).max()),
            "loglik_mean_abs_diff_bf16": float(np.abs(theirs - ours_ll).mean())}


# the gen section's harness variants: name -> (generation_cache, generation_tuned)
GEN_VARIANTS = {"harness_static": ("static", False), "harness_static_tuned": ("static", True),
                "harness_dynamic": (None, False)}


def gen(model, tok, args, bw: float | None) -> dict:
    from harness.models.causal import CausalLMScorer

    rng = np.random.default_rng(1)
    cfg = model.config
    n_new, plen = args.new_tokens, 100
    prompts = [" ".join(f"t{i}" for i in rng.integers(4, cfg.vocab_size, size=plen)) for _ in range(64)]
    w_bytes = weight_bytes_read(model)
    model.generation_config.eos_token_id = None  # every row generates n_new tokens (random weights)
    out: dict = {"prompt_tokens": plen, "new_tokens": n_new, "weight_bytes": w_bytes}
    for bs in args.gen_batches:
        batch = prompts[:bs]
        rec: dict = {"bound_tokens_per_s": None if not bw else decode_bound(model, bw, bs, plen, n_new)}
        texts_by = {}
        for name in args.gen_variants:
            cache, tuned = GEN_VARIANTS[name]
            if tuned and args.gen_tuned_batches is not None and bs not in args.gen_tuned_batches:
                continue
            sc = CausalLMScorer(model, tok, batch_size=bs, generation_cache=cache, generation_tuned=tuned)
            # one warm-up (the static cache compiles its step on CUDA); stop strings checked every 8 tokens
            t0 = time.perf_counter()
            t, texts = timed(lambda: sc.generate_until(batch, stop=["t5 t6"], max_new_tokens=n_new),
                             args.gen_repeats)
            n_tok = sum(len(x.split()) for x in texts)  # word-level tokens: one word each
            rec[name] = {"seconds": t, "tokens_per_s": n_tok / t, "tokens": n_tok,
                         "first_call_s": time.perf_counter() - t0 - args.gen_repeats * t}
            texts_by[name] = texts
        # bf16: different kernels may round differently and a random-weight model's argmax flips on near ties
        if "harness_dynamic" in texts_by:
            rec["same_text_as_dynamic"] = {k: float(np.mean([a == b for a, b in zip(v, texts_by["harness_dynamic"])]))
                                           for k, v in texts_by.items()}
        enc = tok(batch, return_tensors="pt").to(DEVICE)

        def plain():
            return model.generate(**enc, do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                                  pad_token_id=0)
        t, o = timed(plain, args.gen_repeats)
        rec["plain_generate_batched"] = {"seconds": t, "tokens_per_s": bs * (o.shape[1] - plen) / t}
        # none when --gen-variants has only the tuned step and --gen-tuned-batches leaves out this batch size
        best = max((v["tokens_per_s"] for k, v in rec.items() if k.startswith("harness")), default=None)
        if best is not None:
            rec["harness_vs_plain_batched"] = best / rec["plain_generate_batched"]["tokens_per_s"]
        if best is not None and rec["bound_tokens_per_s"]:
            rec["harness_vs_bound"] = best / rec["bound_tokens_per_s"]
        out[f"batch_{bs}"] = rec
    untuned = [k for k in ("harness_static", "harness_dynamic") if k in args.gen_variants]
    if {1, 64} <= set(args.gen_batches) and untuned:
        b1 = out["batch_1"]["plain_generate_batched"]["tokens_per_s"]
        out["batch_64"]["harness_vs_plain_one_at_a_time"] = (
            max(out["batch_64"][k]["tokens_per_s"] for k in untuned) / b1)
    return out


def lora_factors(model, rank: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in PROJ:
            out[f"{n}.lora_A.weight"] = torch.randn(rank, m.in_features) * 0.01
            out[f"{n}.lora_B.weight"] = torch.randn(m.out_features, rank) * 0.01
    return out


def lora_delta(model, rank: int = 16):
    from peft import LoraConfig

    from harness.models.lora_scale import LoraDelta

    factors = lora_factors(model, rank)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=PROJ, inference_mode=True)
    return LoraDelta(config=cfg, factors=factors, target_names=sorted({k.split(".lora_")[0] + ".weight"
                                                                        for k in factors}))


def lora(tiny: bool) -> dict:
    """Alpha-change time on the LoRA-scale path (a fresh model: the adapter is injected into it)."""
    from harness.models.blend import BlendEngine

    model, _ = build(tiny)
    base = model.state_dict()
    delta = lora_delta(model)
    engine = BlendEngine(model, base, {}, lora=delta)
    alphas = iter(np.linspace(0.05, 0.95, 1000).tolist())
    t, _ = timed(lambda: engine.apply(next(alphas)), 20, warmup=2)
    return {"path": engine.path, "rank": 16, "lora_layers": len(delta._layers), "factor_bytes": delta.n_bytes,
            "alpha_change_ms": 1e3 * t, "engine_bytes_held": engine.n_bytes}


def memory(tiny: bool, args) -> dict:
    """Peak device memory of a sweep's blend + one scoring batch, against the weight bytes (issue 15)."""
    from harness.models.blend import BlendEngine
    from harness.models.causal import CausalLMScorer

    out: dict = {}
    pairs = mc_rows(64, (TINY if tiny else FULL)["vocab_size"], seed=3)
    for name in ("merged_refs_on_device", "merged_refs_on_cpu", "lora_scale"):
        model, tok = build(tiny)
        w_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        base_sd = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}  # as BlendEvaluator
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if DEVICE == "cuda" else 0
        if name == "lora_scale":
            engine = BlendEngine(model, base_sd, {}, lora=lora_delta(model))
        else:
            adapted = {k: (v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in base_sd.items()}
            engine = BlendEngine(model, base_sd, adapted,
                                 reference_device="cpu" if name == "merged_refs_on_cpu" else None)
        engine.apply(0.3)
        alphas = iter([0.7, 0.4, 0.6, 0.5, 0.8])
        t_apply, _ = timed(lambda: engine.apply(next(alphas)), 4, warmup=1)  # ends at alpha 0.8
        CausalLMScorer(model, tok, batch_tokens=args.batch_tokens[0], batch_size=100_000).score_tokens(pairs)
        sync()
        rec = {"weight_bytes": w_bytes, "alpha_change_ms": 1e3 * t_apply, "references": engine.reference_location}
        if DEVICE == "cuda":
            peak_b = torch.cuda.max_memory_allocated()
            rec.update(peak_bytes=peak_b, peak_over_weights=peak_b / w_bytes, resident_before=before,
                       resident_over_weights=torch.cuda.memory_allocated() / w_bytes)
        else:
            rec["note"] = "device memory is measured on CUDA only"
        out[name] = rec
        del engine, model, base_sd
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model, CPU-sized work: a smoke run, not a measurement")
    ap.add_argument("--n-mc", type=int, default=None, help="multiple-choice rows (default 4000; tiny 24)")
    ap.add_argument("--batch-tokens", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gen-repeats", type=int, default=None, help="default 5 (tiny 1)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 128 (tiny 8)")
    ap.add_argument("--sections", nargs="+", default=["peak", "mc", "gen", "lora", "memory"],
                    choices=["peak", "mc", "gen", "lora", "memory"], help="run only these sections")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--shape", choices=["tinyllama", "llama32"], default="tinyllama",
                    help="full-size model: TinyLlama-1.1B's shape (default) or Llama-3.2-1B's")
    ap.add_argument("--gen-batches", type=int, nargs="+", default=[1, 64], help="gen section's batch sizes")
    ap.add_argument("--gen-tuned-batches", type=int, nargs="+", default=None,
                    help="batch sizes that also time the tuned step (default: every --gen-batches size)")
    ap.add_argument("--gen-variants", nargs="+", default=list(GEN_VARIANTS), choices=list(GEN_VARIANTS),
                    help="the gen section's harness variants, run in this order in one process (default: all three, "
                         "untuned static first); e.g. harness_static_tuned alone or first, to see whether compiling "
                         "the untuned step first changes the tuned step's autotuned speed")
    ap.add_argument("--compile-mc", action="store_true",
                    help="also time multiple choice with the decoder layers compiled (a fresh model)")
    args = ap.parse_args()
    global OUT
    OUT = args.out
    t = args.tiny
    set_shape(args.shape)
    args.n_mc = args.n_mc or (24 if t else 4000)
    args.batch_tokens = args.batch_tokens or ([2048] if t else [16384, 65536])
    args.gen_repeats = args.gen_repeats or (1 if t else 5)
    args.new_tokens = args.new_tokens or (8 if t else 128)
    if t:
        args.repeats = min(args.repeats, 2)
    import transformers

    result: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "tiny": t,
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "config": TINY if t else FULL, "shape": args.shape}
    if t:
        result["smoke"] = "tiny model on CPU: none of these numbers is a measurement"
    want = set(args.sections)
    if "peak" in want:
        section(result, "peak", lambda: peak(t))
    pk = result.get("peak", {}).get("bf16_matmul_flops")
    bw = result.get("peak", {}).get("copy_bytes_per_s")
    # the quick sections first: a run cut short by a time limit keeps them
    if "lora" in want:
        section(result, "lora", lambda: lora(t))
    if "memory" in want:
        section(result, "memory", lambda: memory(t, args))
    if want & {"mc", "gen"}:
        model, tok = build(t)
        result["params"] = sum(p.numel() for p in model.parameters())
        if "gen" in want:
            section(result, "gen", lambda: gen(model, tok, args, bw))
        if "mc" in want:
            section(result, "mc", lambda: mc(model, tok, args, pk))
        del model
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
