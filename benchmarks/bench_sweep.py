"""A harness sweep against the naive way, in one process, both selecting alpha on the same validation data.

Naive (what a user would script without the harness): for every alpha, reload base and adapted from disk, blend
the state dicts, load a fresh model, and score each validation split with ``transformers.pipeline`` (which
re-tokenizes every time); then apply the same selection policy. Harness: ``harness.sweep`` with the results store
off (so it really computes), 11-point grid, fp32; then bf16 (``--dtype bf16``) and the adaptive search.
Models: the demo's quick-profile MiniLM pair (built and cached on first use, about 1-2 minutes).

    python benchmarks/bench_sweep.py [--repeats 5] [--max-examples 200]

Prints what the CPU supports, the wall time of each (median of --repeats), the ratios, the chosen alphas, and the
blend cost per alpha.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import cpu_info, timed


def top_layer_checkpoint(base_dir: Path, adapted_dir: Path, out: Path) -> Path:
    """A checkpoint like a top-layer fine-tune: the adapted model's last encoder layer and head, the base's other
    weights (for timing the frozen-trunk reuse; the adapted pair of the demo is a full fine-tune)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapted_dir, out)
    base, adapted = load_file(str(base_dir / "model.safetensors")), load_file(str(adapted_dir / "model.safetensors"))
    last = max(int(k.split(".layer.")[1].split(".")[0]) for k in base if ".layer." in k)
    mixed = {k: adapted[k] if f".layer.{last}." in k or not k.startswith(("encoder.", "bert.")) else base[k]
             for k in base}
    save_file(mixed, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def naive_sweep(base_dir: Path, adapted_dir: Path, splits, alphas, policy, max_length: int) -> float:
    """Reload + blend + pipeline per alpha; returns the chosen alpha."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from harness.metrics import compute_metrics
    from harness.records import SplitResult
    from harness.sweep import select_alpha, validation_scores

    results = {}
    for alpha in alphas:
        base = load_file(str(base_dir / "model.safetensors"))
        adapted = load_file(str(adapted_dir / "model.safetensors"))
        blended = {k: torch.lerp(base[k].float(), adapted[k].float(), alpha) for k in base}
        model = AutoModelForSequenceClassification.from_pretrained(str(base_dir))
        model.load_state_dict(blended, strict=False)
        tok = AutoTokenizer.from_pretrained(str(base_dir))
        pipe = pipeline("text-classification", model=model.eval(), tokenizer=tok, device="cpu", top_k=None)
        per = {}
        for sd in splits:
            outs = pipe(sd.frame["text"].tolist(), batch_size=32, truncation=True, max_length=max_length)
            label_of = {v: int(k) for k, v in model.config.id2label.items()}
            logits = np.zeros((len(outs), 2), dtype=np.float32)
            for i, row in enumerate(outs):
                for item in row:
                    logits[i, label_of[item["label"]]] = np.log(max(item["score"], 1e-12))
            m = compute_metrics(sd.frame["label"].to_numpy(), logits, sd.frame["source_id"].to_numpy(),
                                ["accuracy"], n_resamples=200)
            per[sd.ref] = SplitResult(n=len(outs), n_truncated=0, n_dropped=0, metrics=m)
        results[alpha] = per
    ids, shifts, on = validation_scores(results, [sd.ref for sd in splits], policy.metric)
    return select_alpha(ids, shifts, policy, on).chosen_alpha


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-examples", type=int, default=200)
    a = ap.parse_args(argv)

    import harness
    from harness.demo.run import _build_models, suites_dir
    from harness.pipeline import RunOptions, prepare_splits, load_suites, sweep_models
    from harness.sweep import DEFAULT_GRID, SelectionPolicy

    harness.register()
    torch.manual_seed(0)
    opts = RunOptions(progress=False, use_store=False, report=False, max_examples=a.max_examples, max_length=64,
                      n_resamples=200, split="validation")
    models = _build_models("full", "quick", opts, progress=False)
    sdir = suites_dir()
    suites = [sdir / "vader-movies.yaml", sdir / "vader-tweets.yaml"]
    splits = prepare_splits(load_suites(suites), opts).splits
    n = sum(len(s) for s in splits)
    print(f"splits: {', '.join(f'{s.ref.key} ({len(s)})' for s in splits)}; {cpu_info()}")
    policy = SelectionPolicy()

    def run(fn, label):
        t, chosen = timed(fn, a.repeats)
        print(f"{label:<34} {t:8.1f} s  chosen alpha {chosen:g}")
        return t, chosen

    def harness_sweep(dtype="fp32", alphas=None):
        res = sweep_models(models.base_dir, models.adapted_dir, suites, alphas=alphas,
                           options=replace(opts, dtype=dtype))
        harness_sweep.last = res
        return res.summary.selection.chosen_alpha

    t_naive, a_naive = run(lambda: naive_sweep(models.base_dir, models.adapted_dir, splits, DEFAULT_GRID, policy,
                                               64), "naive loop (11 alphas, fp32)")
    t_h, a_h = run(lambda: harness_sweep(), "harness sweep (11 alphas, fp32)")
    blend_ms = harness_sweep.last.timings.get("blend", 0.0) / 11 * 1e3
    t_b, a_b = run(lambda: harness_sweep("bf16"), "harness sweep (11 alphas, bf16)")
    t_ad, a_ad = run(lambda: harness_sweep(alphas="adaptive"), "harness sweep (adaptive, fp32)")
    n_ad = harness_sweep.last.summary.selection.n_evaluations
    t_adb, a_adb = run(lambda: harness_sweep("bf16", alphas="adaptive"), "harness sweep (adaptive, bf16)")
    # a top-layer fine-tune (the adapted pair's last encoder layer and head on the base's other weights): the
    # harness runs the frozen layers once per split (harness.models.trunk); timed with and without that reuse
    import harness.models.trunk as trunk

    top_dir = top_layer_checkpoint(models.base_dir, models.adapted_dir, Path(tempfile.mkdtemp()) / "top")

    def top_sweep():
        return sweep_models(models.base_dir, top_dir, suites, options=opts).summary.selection.chosen_alpha

    t_top, a_top = run(top_sweep, "top-layer fine-tune, trunk reuse")
    real = trunk.frozen_depth
    trunk.frozen_depth = lambda *args, **kw: 0
    try:
        t_top_full, a_top_full = run(top_sweep, "top-layer fine-tune, full layers")
    finally:
        trunk.frozen_depth = real
    print(f"examples per alpha: {n}; harness blend cost: {blend_ms:.1f} ms per alpha")
    print(f"ratio naive/harness fp32: {t_naive / t_h:.2f}x; bf16: {t_naive / t_b:.2f}x; adaptive fp32: "
          f"{t_naive / t_ad:.2f}x ({n_ad} of 11 alphas evaluated); adaptive bf16: {t_naive / t_adb:.2f}x")
    print(f"same alpha as the naive grid: fp32 {a_h == a_naive}, bf16 {a_b == a_naive} "
          f"(|diff| {abs(a_b - a_naive):g}), adaptive within one grid step {abs(a_ad - a_h) <= 0.1 + 1e-9} "
          f"(fp32 {a_ad:g}, bf16 {a_adb:g})")
    print(f"top-layer fine-tune (11 alphas, fp32): trunk reuse {t_top_full / t_top:.2f}x faster than running every "
          f"layer ({t_top:.1f} vs {t_top_full:.1f} s), {t_naive / t_top:.2f}x the naive loop on the full pair; "
          f"same alpha {a_top == a_top_full} ({a_top:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
