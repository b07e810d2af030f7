"""Cluster bootstrap speed: :func:`harness.metrics.compute_metrics` (one weight matrix, one matrix product for every
built-in metric) against explicit resampling (per resample: draw the clusters, gather their rows, compute each
metric on them with :func:`point_value`), in one process, on the same resample weights. Prints both medians, the
ratio and the largest difference between the two sides' interval bounds (0 up to float rounding: the same
resamples).

    python benchmarks/bench_bootstrap.py [--n 10000] [--resamples 1000] [--loop-resamples 100] [--repeats 5]
                                         [--cluster-size 1] [--out FILE.json]

Data: seeded random 2-class logits with the true class boosted (about 76% accuracy); ``--cluster-size 1`` is the
worst case for the vectorised path (every example its own cluster). The explicit loop is timed on
``--loop-resamples`` resamples and scaled linearly to ``--resamples`` (it is a loop: its time is linear in the
count); its intervals are compared on those resamples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import cpu_info, timed

from harness.metrics import cluster_weights, compute_metrics, metric_distribution, percentile_interval, point_value
from harness.spec.schema import TASK_METRICS


def data(n: int, cluster_size: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels int64 (n,), logits float32 (n, 2) and source ids str (n,) of ``cluster_size`` examples each."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    logits = rng.normal(size=(n, 2)).astype(np.float32)
    logits[np.arange(n), labels] += 1.0
    return labels, logits, (np.arange(n) // cluster_size).astype(str)


def explicit(metrics: list[str], labels: np.ndarray, logits: np.ndarray, w: np.ndarray,
             index: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's bootstrap distribution, one resample at a time: rows repeated as often as their cluster."""
    out = {m: np.empty(w.shape[0]) for m in metrics}
    rows_all = np.arange(labels.size)
    for b in range(w.shape[0]):
        rows = np.repeat(rows_all, w[b, index].astype(np.int64))
        for m in metrics:
            out[m][b] = point_value(m, labels[rows], logits[rows])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="examples (default 10,000)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--loop-resamples", type=int, default=100, help="resamples the explicit loop runs (default 100)")
    ap.add_argument("--cluster-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    metrics = list(TASK_METRICS["classification"])
    labels, logits, src = data(args.n, args.cluster_size)

    compute_metrics(labels[:100], logits[:100], src[:100], metrics, n_resamples=10)  # warm-up
    t_vec, res = timed(lambda: compute_metrics(labels, logits, src, metrics, n_resamples=args.resamples, seed=0),
                       args.repeats)
    w, index = cluster_weights(src, args.resamples, 0)  # the weights compute_metrics(seed=0) draws
    wl = w[:args.loop_resamples]
    t_loop, dists = timed(lambda: explicit(metrics, labels, logits, wl, index), max(1, args.repeats // 2))
    t_loop_scaled = t_loop * args.resamples / wl.shape[0]
    diff = 0.0
    for m in metrics:  # the same resamples on both sides: the distributions, hence the intervals, agree
        vec = metric_distribution(m, labels, logits, wl, index)
        diff = max(diff, float(np.max(np.abs(vec - dists[m]))))
        diff = max(diff, float(np.max(np.abs(np.subtract(percentile_interval(vec), percentile_interval(dists[m]))))))
    out = {
        "cpu": cpu_info(), "examples": args.n, "cluster_size": args.cluster_size, "metrics": metrics,
        "resamples": args.resamples, "vectorised_s": t_vec, "explicit_loop_s": t_loop_scaled,
        "explicit_loop_measured": {"resamples": wl.shape[0], "seconds": t_loop},
        "speedup": t_loop_scaled / t_vec, "max_abs_difference": diff,
        "accuracy": {"value": res["accuracy"].value, "ci": [res["accuracy"].ci_low, res["accuracy"].ci_high]},
    }
    print(f"{args.n:,} examples x {args.resamples} resamples x {len(metrics)} metrics ({cpu_info()})")
    print(f"  compute_metrics (vectorised): {t_vec:.3f} s (median of {args.repeats})")
    print(f"  explicit resampling loop:     {t_loop_scaled:.3f} s ({t_loop:.3f} s for {wl.shape[0]} resamples)")
    print(f"  speedup {out['speedup']:.0f}x; largest difference in distributions and intervals {diff:.2e}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
