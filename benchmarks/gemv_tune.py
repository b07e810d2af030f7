"""How much the one-row projections of a batch-1 decoding step depend on Inductor's tuning (issue 20).

At batch 1 every projection of a decoding step is a matrix-vector product (GEMV) that reads its whole weight:
Llama-3.2-1B's step is 16 layers of q/k/v/o (2048x2048, 512x2048) and gate/up/down (8192x2048, 2048x8192) plus
the 128,256x2048 lm_head, about 2.47 GB. With ``coordinate_descent_tuning`` Inductor rewrites such a product as
a multiply and a sum (``torch/_inductor/decomposition.py``, ``mm``: "our matrix vector multiplies only achieve
peak bandwidth with coordinate descent tuning") and tunes that reduction kernel by timing its configurations;
without it the product is cuBLAS's. The harness's tuned step (``causal_decode.compiled_step(tuned=True)``)
ranged from 36% to 51% of the bandwidth bound across leases while the untuned one held 38-39%; this benchmark
measures, per projection shape, the spread of the tuned kernels over fresh compilations (each trial a new
process with an empty Inductor cache) against cuBLAS.

Each case is compiled alone (``fullgraph=True, dynamic=False``) and timed as a CUDA graph replay (no launch
gaps), rotating over enough weight copies (>= 256 MiB) that no weight is read from L2; effective bandwidth =
weight bytes / time. Cases: ``norm_mm`` is LlamaRMSNorm (fp32 statistics, bf16 out, times its weight) then the
projection, as the step fuses them; ``mm`` the projection alone; ``argmax`` the greedy pick over a (1, vocab)
bf16 row, as is and upcast to fp32 first (exact for bf16, so the same index).

Variants: ``cublas`` (Inductor's defaults, the harness's untuned step), ``tuned`` (the tuning options of the
harness's tuned step, max-autotune and coordinate-descent tuning, without its programmatic dependent launch and
eager attention; each case compiled alone, not fused with its neighbours as in the step), ``cd``
(coordinate-descent tuning alone), ``cd_wide`` (coordinate-descent tuning checking all directions at radius 2),
``tuned_r2`` (the tuned options with two steps per field, one field at a time) and ``tuned_all`` (the tuned
options trying every combination of the fields' one-step neighbours).
A case whose compiled result differs from eager (``max_err`` above :data:`TOLERANCE`, relative to the largest
output; any argmax index) is listed under ``wrong`` in the JSON; a trial whose process failed under ``failed``.

    python benchmarks/gemv_tune.py --trials 3 --variants cublas tuned cd cd_wide --out /tmp/gemv.json [--tiny]

Measured (H200, torch 2.11, 2026-12-01e, ``benchmarks/results/2026-12-01e-h200-gemv_tune.json``): one layer's
seven products took 64.0-64.3 µs with cuBLAS (3 compilations), 57.1-60.9 µs with the tuned step's options (3;
the k/v product alone 6.9-9.0 µs, slower than cuBLAS's 6.7) and 47.8-48.8 µs with ``cd_wide`` (2; its
compilations took 119-190 s against 30-33 s, ``compile_s`` summed); the bound at the measured copy bandwidth is
29.4 µs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

VARIANTS = {
    "cublas": {},
    "tuned": {"max_autotune": True, "coordinate_descent_tuning": True},
    "cd": {"coordinate_descent_tuning": True},
    "cd_wide": {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True,
                "coordinate_descent_search_radius": 2},
    "tuned_r2": {"max_autotune": True, "coordinate_descent_tuning": True, "coordinate_descent_search_radius": 2},
    "tuned_all": {"max_autotune": True, "coordinate_descent_tuning": True,
                  "coordinate_descent_check_all_directions": True},
}
TOLERANCE = 0.02  # largest |compiled - eager| / max |eager| of a bf16 product (argmax: no index may differ)
# (name, kind, out features, in features): Llama-3.2-1B's projections and lm_head
FULL = [("qo", "norm_mm", 2048, 2048), ("kv", "norm_mm", 512, 2048), ("gate_up", "norm_mm", 8192, 2048),
        ("down", "mm", 2048, 8192), ("o", "mm", 2048, 2048), ("lm_head", "norm_mm", 128256, 2048),
        ("argmax", "argmax", 128256, 0), ("argmax_fp32", "argmax_fp32", 128256, 0)]
TINY = [("qo", "norm_mm", 64, 64), ("down", "mm", 64, 256), ("argmax", "argmax", 1000, 0),
        ("argmax_fp32", "argmax_fp32", 1000, 0)]


def case_fn(kind: str):
    """The function one case compiles."""
    if kind == "norm_mm":
        def f(x, g, w):
            h = x.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
            return torch.nn.functional.linear(g * h.to(x.dtype), w)
    elif kind == "mm":
        def f(x, g, w):
            return torch.nn.functional.linear(x, w)
    elif kind == "argmax":
        def f(x, g, w):
            return x.argmax(-1)
    else:
        def f(x, g, w):
            return x.float().argmax(-1)
    return f


def run_case(kind: str, out: int, inp: int, options: dict, dev: str, min_bytes: int) -> dict:
    """Compile one case, check it against eager, and time it as a CUDA graph replay (µs per call)."""
    dt = torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)
    if kind.startswith("argmax"):
        nbytes = out * 2
        copies = max(2, min_bytes // nbytes)
        xs = [torch.randn(1, out, device=dev, dtype=dt, generator=gen) for _ in range(copies)]
        g = None
        args = [(x, None, None) for x in xs]
    else:
        nbytes = out * inp * 2
        copies = max(2, -(-min_bytes // nbytes))
        ws = [torch.randn(out, inp, device=dev, dtype=dt, generator=gen) / inp ** 0.5 for _ in range(copies)]
        g = torch.rand(inp, device=dev, dtype=dt, generator=gen) + 0.5
        x = torch.randn(1, inp, device=dev, dtype=dt, generator=gen)
        args = [(x, g, w) for w in ws]
    f = case_fn(kind)
    compiled = torch.compile(f, fullgraph=True, dynamic=False, options=dict(options))
    t0 = time.perf_counter()
    got = compiled(*args[0])
    torch.cuda.synchronize() if dev == "cuda" else None
    compile_s = time.perf_counter() - t0
    want = f(*args[0])
    if kind.startswith("argmax"):
        err = float((got != want).sum())
    else:
        err = float((got.float() - want.float()).abs().max() / want.float().abs().max())
    for a in args:  # warm every copy
        compiled(*a)
    rounds = 4
    if dev != "cuda":
        t0 = time.perf_counter()
        for _ in range(rounds):
            for a in args:
                compiled(*a)
        us = (time.perf_counter() - t0) / (rounds * len(args)) * 1e6
    else:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(rounds):
                for a in args:
                    compiled(*a)
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(7):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            graph.replay()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) * 1e3 / (rounds * len(args)))
        us = statistics.median(times)
    return {"us": us, "bytes": nbytes, "gb_per_s": nbytes / us / 1e3, "compile_s": compile_s, "copies": len(args),
            "max_err": err}


def child(variant: str, tiny: bool) -> dict:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    min_bytes = (1 << 20) if tiny else (256 << 20)
    res = {}
    for name, kind, out, inp in (TINY if tiny else FULL):
        torch._dynamo.reset()
        res[name] = run_case(kind, out, inp, VARIANTS[variant], dev, min_bytes)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--trials", type=int, default=3, help="fresh processes per variant (empty Inductor cache each)")
    ap.add_argument("--tiny", action="store_true", help="small shapes (a CPU smoke run)")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.tiny)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from lm_gpu import peak  # the bound's copy bandwidth, measured as the other generation benchmarks measure it

    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "peak": peak(a.tiny), "trials": {}, "failed": [], "wrong": [], "summary": {}}
    for trial in range(a.trials):  # interleaved, so a drift of the machine touches every variant alike
        for v in a.variants:
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
                cmd = [sys.executable, __file__, "--child", v] + (["--tiny"] if a.tiny else [])
                t0 = time.perf_counter()
                p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
                if p.returncode or not line:
                    print(f"{v} trial {trial} failed:\n{p.stderr[-3000:]}", file=sys.stderr)
                    out["failed"].append({"variant": v, "trial": trial, "rc": p.returncode,
                                          "stderr": p.stderr[-3000:]})
                    save(out, a.out)
                    continue
                res = json.loads(line[0][7:])
                out["trials"].setdefault(v, []).append(res)
                out["wrong"] += [{"variant": v, "trial": trial, "case": k, "max_err": r["max_err"]}
                                 for k, r in res.items()
                                 if not r["max_err"] <= (0 if k.startswith("argmax") else TOLERANCE)]  # NaN too
                print(f"{v:8s} trial {trial} ({time.perf_counter() - t0:5.1f} s): "
                      + "  ".join(f"{k} {r['us']:.1f}us {r['gb_per_s']:.0f}GB/s" for k, r in res.items()), flush=True)
                save(out, a.out)  # after every trial: a time limit keeps what ran
    print(json.dumps(out["summary"], indent=1))
    if out["failed"] or out["wrong"]:
        print(f"{len(out['failed'])} failed trials, {len(out['wrong'])} wrong results (see the JSON)", file=sys.stderr)
        sys.exit(1)


def save(out: dict, path: str | None) -> None:
    """Recompute the per-variant summary (fastest, slowest, median bandwidth over trials) and write the JSON."""
    out["summary"] = {
        v: {k: {"us_min": min(t[k]["us"] for t in trials), "us_max": max(t[k]["us"] for t in trials),
                "gb_per_s_median": statistics.median(t[k]["gb_per_s"] for t in trials),
                "max_err": max(t[k]["max_err"] for t in trials)} for k in trials[0]}
        for v, trials in out["trials"].items()}
    if path:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
