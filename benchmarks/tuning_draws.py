"""Compare compilations ("draws") of one decoding step kernel by kernel: what Inductor's autotuning picked and what
each pick cost (issue 20).

The tuned batch-1 step (``causal_decode.compiled_step(tuned=True)``) runs at a speed that depends on its
compilation and stays the same when the compilation's Inductor cache is reused; this tool says which kernels make
the difference.

* ``picks CACHE_DIR``: ``{kernel name: {"config": pick, "size_hints": ...}}`` as JSON, from an Inductor cache
  directory. Each tuned kernel's source (``<hash>.py``) sits in a folder with its pick (``<key hash>.best_config``:
  block sizes, ``num_warps``, ``num_stages``, whether coordinate descent found it). Kernel names are the same in
  every compilation of one graph, so two draws' picks compare name by name.
* ``compare B1_JSON ...``: for files written by ``benchmarks/gen_b1.py --profile`` (one draw each), every kernel's
  fastest time per launch over the draws, and per draw the microseconds per decoding step spent above those
  fastest times (the "excess"), its largest contributors, and the step minus its excess: the step each draw would
  take with the fastest pick seen for every kernel, if the kernels' times add up. (With programmatic dependent
  launch a kernel's profiled time includes its wait for the one before it, so per-kernel times are approximate.)

    TORCHINDUCTOR_CACHE_DIR=/tmp/ic1 python benchmarks/gen_b1.py --variants graph_tuned --profile --out /tmp/d1.json
    python benchmarks/tuning_draws.py picks /tmp/ic1 > /tmp/picks1.json
    python benchmarks/tuning_draws.py compare /tmp/d1.json /tmp/d2.json /tmp/d3.json
    python benchmarks/tuning_draws.py compare benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json

Measured (H200, torch 2.11, 2026-12-01f, ``benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json``): eight
profiled draws of the Llama-3.2-1B-shaped tuned step took 1.04-1.47 ms per decoding step; their excess was
124-532 µs, mostly one or two kernels whose pick was 3-36x slower than another draw's pick for the same kernel;
the steps minus their excess were 0.86-0.94 ms (about 64% of the bandwidth bound).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def picks(cache_dir: Path) -> dict:
    """``{kernel name: {"config": ..., "size_hints": ...}}`` for every ``.best_config`` under ``cache_dir``. The
    pick's file is named by a hash of the kernel's key, not by the kernel's file, so it is paired with the Triton
    kernel source in its folder (Inductor puts each kernel in a folder of its own, named by its hash); a folder with
    several kernels gives a ``"?<folder>/<pick file>"`` entry listing their names under ``"kernels"``."""
    out: dict = {}
    for cfg in sorted(cache_dir.rglob("*.best_config")):
        kernels = {}
        for src in sorted(cfg.parent.glob("*.py")):
            text = src.read_text(errors="replace")
            name = re.search(r"^def (triton_\w+)\(", text, re.M)
            if name:
                hints = re.search(r"size_hints=(\{[^}]*\})", text)
                kernels[name.group(1)] = hints.group(1) if hints else None
        try:
            config = json.loads(cfg.read_text())
        except ValueError:
            config = cfg.read_text(errors="replace")[:500]
        if len(kernels) == 1:
            (name, hints), = kernels.items()
            out[name] = {"config": config, "size_hints": hints}
        else:
            out[f"?{cfg.parent.name}/{cfg.stem[:12]}"] = {"config": config, "kernels": sorted(kernels)}
    return out


def compare(draws: dict[str, dict], steps: int, top: int = 3) -> dict:
    """Excess per draw. ``draws``: ``{label: {"kernels": {name: [total µs, launches]}, "step_ms": float}}`` (one
    profiled call of ``steps`` decoding steps each; a kernel absent from a draw counts as not run there).

    Returns ``{"fastest_us": {name: µs per launch}, "draws": {label: {"step_ms", "excess_us", "step_minus_excess_ms",
    "largest": [[name, excess µs per step, µs per launch, fastest µs per launch], ...]}}}``, the draws fastest first.
    Raises ``ValueError`` when a draw has no kernel table (``gen_b1.py`` without ``--profile``, or a run on a CPU).
    """
    for label, d in draws.items():
        if not d["kernels"]:
            raise ValueError(f"{label} has no kernel table: run benchmarks/gen_b1.py with --profile on a GPU")
    fastest: dict[str, float] = {}
    for d in draws.values():
        for name, (us, n) in d["kernels"].items():
            if n:
                fastest[name] = min(fastest.get(name, float("inf")), us / n)
    out: dict = {"fastest_us": fastest, "draws": {}}
    for label in sorted(draws, key=lambda k: draws[k]["step_ms"]):
        d = draws[label]
        rows = sorted(([name, (us - fastest[name] * n) / steps, us / n, fastest[name]]
                       for name, (us, n) in d["kernels"].items() if n), key=lambda r: -r[1])
        excess = sum(r[1] for r in rows)
        out["draws"][label] = {"step_ms": d["step_ms"], "excess_us": excess,
                               "step_minus_excess_ms": d["step_ms"] - excess / 1e3, "largest": rows[:top]}
    return out


def load_b1(data: dict, where: str, variant: str | None) -> dict:
    """One draw from a ``gen_b1.py --profile`` result: the first batch section's ``variant`` (default: its only
    variant with a kernel table). Exits with a message naming the variants when none or several qualify."""
    section = next((v for k, v in data.items() if re.fullmatch(r"b\d+", k)), {})
    names = [variant] if variant else [k for k, v in section.items() if isinstance(v, dict) and "kernels" in v]
    if len(names) != 1 or names[0] not in section:
        raise SystemExit(f"{where}: name the variant to read with --variant (found {sorted(section)})")
    r = section[names[0]]
    return {"kernels": r.get("kernels", {}), "step_ms": r["decode_ms_per_step"],
            "of_bound": r["tok_s"] / section["bound_tok_s"]}


def load(paths: list[Path], variant: str | None) -> dict:
    """``{label: draw}`` from ``gen_b1.py`` JSON files, or from a collection of them (a JSON whose ``"draws"``
    maps labels to such results, as ``benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json``)."""
    draws = {}
    for path in paths:
        data = json.loads(path.read_text())
        many = data.get("draws") if isinstance(data.get("draws"), dict) else {str(path): data}
        for label, one in many.items():
            draws[label] = load_b1(one, f"{path}: {label}", variant)
    return draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("picks", help="the picks in an Inductor cache directory, as JSON")
    p.add_argument("cache_dir", type=Path)
    c = sub.add_parser("compare", help="per-kernel excess of gen_b1.py --profile draws")
    c.add_argument("files", type=Path, nargs="+", help="gen_b1.py --profile JSONs, or collections of them")
    c.add_argument("--variant", help="the variant to read from each file (default: its only profiled one)")
    c.add_argument("--steps", type=int, default=127, help="decoding steps in the profiled call (gen_b1: 127)")
    c.add_argument("--top", type=int, default=3)
    c.add_argument("--out", type=Path, help="also write the comparison as JSON")
    a = ap.parse_args()
    if a.cmd == "picks":
        print(json.dumps(picks(a.cache_dir), indent=1, sort_keys=True))
        return
    draws = load(a.files, a.variant)
    try:
        res = compare(draws, a.steps, a.top)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    for label, d in res["draws"].items():
        print(f"{label}: {draws[label]['of_bound']:.1%} of the bound, {d['step_ms'] * 1e3:.0f} µs per step, "
              f"excess {d['excess_us']:.0f} µs, step minus excess {d['step_minus_excess_ms'] * 1e3:.0f} µs")
        for name, ex, us, best in d["largest"]:
            print(f"    {ex:6.1f} µs/step  {us:7.1f} µs per launch (fastest {best:.1f})  {name}")
    rest = [d["step_minus_excess_ms"] for d in res["draws"].values()]
    print(f"step minus excess: median {statistics.median(rest) * 1e3:.0f} µs over {len(rest)} draws")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
