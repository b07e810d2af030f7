"""Compare compilations ("draws") of one decoding step kernel by kernel: what Inductor's autotuning picked and what
each pick cost (issue 20).

The tuned batch-1 step (``causal_decode.compiled_step(tuned=True)``) runs at a speed that depends on its
compilation (and, in the one reuse measured, ran at the same speed when a later process reused the compilation's
Inductor cache); this tool says which kernels make the difference.

* ``picks CACHE_DIR``: ``{kernel name: {"config": pick, "size_hints": ...}}`` as JSON, from an Inductor cache
  directory. Each tuned kernel's source (``<hash>.py``) sits in a folder with its pick (``<key hash>.best_config``:
  block sizes, ``num_warps``, ``num_stages``, whether coordinate descent found it). Kernel names are the same in
  every compilation of one graph, so two draws' picks compare name by name.
* ``compare B1_JSON ...``: for files written by ``benchmarks/gen_b1.py --profile`` (one draw each, or a collection
  of them), every decoding kernel's fastest time per launch over the draws; per draw, its decoding kernels' time
  per step, the part of it above those fastest times (the "excess") and its largest contributors; and the
  kernels' time per step at the fastest picks. These are kernel times, not wall time: with programmatic dependent
  launch a kernel starts before the one it waits for ends, so they overlap and a draw's kernels may sum to more
  than its step.

    TORCHINDUCTOR_CACHE_DIR=/tmp/ic1 python benchmarks/gen_b1.py --variants graph_tuned --profile --out /tmp/d1.json
    python benchmarks/tuning_draws.py picks /tmp/ic1 > /tmp/picks1.json
    python benchmarks/tuning_draws.py compare /tmp/d1.json /tmp/d2.json /tmp/d3.json
    python benchmarks/tuning_draws.py compare benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json

Measured (H200, torch 2.11, 2026-12-01f, ``benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json``): eight
profiled draws of the Llama-3.2-1B-shaped tuned step took 1.04-1.47 ms per decoding step and their decoding kernels
summed 1.10-1.52 ms (they overlap under programmatic dependent launch); each draw spent 125-536 µs per step above
the fastest picks, and the four slowest had one or two kernels whose pick ran 5-36x slower than another draw's;
the kernels at the fastest picks sum to 0.98 ms per step. With the tuner timed by Triton's ``do_bench`` (the
tuned step on 2026-12-01g, ``benchmarks/results/2026-12-01g-h200-gen_b1-llama32-dobench-draws.json``), twelve
draws took 0.96-1.33 ms per step and the three slowest still had one or two picks 4.8-12.5x slower than another
draw's. With the tuner timed by GPU kernel time (the tuned step since 2026-12-01h, ``causal_decode.KernelTimer``,
``benchmarks/results/2026-12-01h-h200-gen_b1-llama32-kerneltime-draws.json``), six draws took 0.925-0.942 ms per
step and spent 13-25 µs per step above the fastest picks of that file's eleven draws (its five ``do_bench`` draws:
290-762 µs).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def _kernel_def(src: Path) -> tuple[str, str | None] | None:
    """``(kernel name, size hints)`` of a Triton kernel source file (one ``def triton_...`` in it; the graph's own
    module, which holds many kernels' sources as strings, is not one), else ``None``."""
    text = src.read_text(errors="replace")
    names = re.findall(r"^def (triton_\w+)\(", text, re.M)
    if len(names) != 1:
        return None
    hints = re.search(r"size_hints=(\{[^}]*\})", text)
    return names[0], hints.group(1) if hints else None


def _pick_file(src: Path) -> Path | None:
    """The ``.best_config`` path this torch's autotune cache gives kernel source ``src`` (torch's own key: the
    source's file name, the cache key tag and this torch's build key); ``None`` when this torch does not say
    (its private API moved), and the caller pairs by folder instead."""
    try:
        from torch._inductor.runtime.autotune_cache import AutotuneCache

        return Path(AutotuneCache._make_local_cache_key(str(src.parent), AutotuneCache._prepare_key(str(src))))
    except Exception:  # noqa: BLE001 - any change of the private API: fall back
        return None


def picks(cache_dir: Path) -> dict:
    """``{kernel name: {"config": ..., "size_hints": ..., "paired": "key" | "folder"}}`` for every
    ``.best_config`` under ``cache_dir``.

    A pick's file is named by a hash of its kernel's key, and Inductor's folders (named by two characters of a
    hash) may hold several kernels. A pick is paired with its kernel by recomputing that key with this torch
    (``"paired": "key"``: exact, when this torch wrote the cache); failing that, with the only kernel in its folder
    (``"folder"``). A pick paired neither way is listed as ``"?<folder>/<pick file>"`` with the folder's kernels.
    """
    out: dict = {}
    sources = {}
    for src in sorted(cache_dir.rglob("*.py")):
        kernel = _kernel_def(src)
        if kernel:
            sources[src] = kernel
    exact = {}
    for src, kernel in sources.items():
        key = _pick_file(src)
        if key is not None:
            exact[key.resolve()] = kernel
    for cfg in sorted(cache_dir.rglob("*.best_config")):
        try:
            config = json.loads(cfg.read_text())
        except ValueError:
            config = cfg.read_text(errors="replace")[:500]
        here = [k for src, k in sources.items() if src.parent == cfg.parent]
        if cfg.resolve() in exact:
            (name, hints), how = exact[cfg.resolve()], "key"
        elif len(here) == 1:
            (name, hints), how = here[0], "folder"
        else:
            out[f"?{cfg.parent.name}/{cfg.stem[:12]}"] = {"config": config, "kernels": sorted(k[0] for k in here)}
            continue
        out[name] = {"config": config, "size_hints": hints, "paired": how}
    return out


def compare(draws: dict[str, dict], steps: int, top: int = 3) -> dict:
    """Per-kernel costs of several draws. ``draws``: ``{label: {"kernels": {name: [total µs, launches]},
    "step_ms": float}}``, one profiled call of ``steps`` decoding steps each. Kernels launched fewer than ``steps``
    times in a call (the prompt's forward) and rows whose name starts with ``(`` (a summed row) are left out.

    Returns ``{"fastest_us": {name: µs per launch}, "best_kernel_ms": float, "draws": {label: {"step_ms",
    "of_bound" (the draw's share of the bandwidth bound, when given), "kernel_ms", "excess_us", "largest":
    [[name, excess µs per step, µs per launch, fastest µs per launch], ...]}}}``, the draws fastest first.
    ``kernel_ms`` is a draw's decoding kernels summed per step; its ``excess_us`` the part of that above each
    kernel's fastest time per launch in any draw; ``best_kernel_ms`` the decoding kernels per step at those
    fastest times (the median launches over the draws). Kernel times are not wall time: with programmatic
    dependent launch a kernel starts before the one it waits for ends, so a draw's ``kernel_ms`` may exceed its
    ``step_ms``; ``best_kernel_ms`` says what the picks cost, not what a step with them would take.

    Raises ``ValueError`` when a draw has no kernel of ``steps`` launches or more (``gen_b1.py`` without
    ``--profile``, a CPU run, or the wrong ``steps``).
    """
    per_step = {}
    for label, d in draws.items():
        per_step[label] = {n: (us, c) for n, (us, c) in d["kernels"].items() if c >= steps and not n.startswith("(")}
        if not per_step[label]:
            raise ValueError(f"{label} has no kernel launched at every decoding step: run benchmarks/gen_b1.py "
                             f"with --profile on a GPU (or give the profiled call's steps with --steps)")
    fastest: dict[str, float] = {}
    launches: dict[str, list[int]] = {}
    for kernels in per_step.values():
        for name, (us, n) in kernels.items():
            fastest[name] = min(fastest.get(name, float("inf")), us / n)
            launches.setdefault(name, []).append(n)
    best = sum(fastest[n] * statistics.median(c) for n, c in launches.items()) / steps / 1e3
    out: dict = {"fastest_us": fastest, "best_kernel_ms": best, "draws": {}}
    for label in sorted(draws, key=lambda k: draws[k]["step_ms"]):
        rows = sorted(([name, (us - fastest[name] * n) / steps, us / n, fastest[name]]
                       for name, (us, n) in per_step[label].items()), key=lambda r: -r[1])
        out["draws"][label] = {"step_ms": draws[label]["step_ms"], "of_bound": draws[label].get("of_bound"),
                               "kernel_ms": sum(us for us, _ in per_step[label].values()) / steps / 1e3,
                               "excess_us": sum(r[1] for r in rows), "largest": rows[:top]}
    return out


def load_b1(data: dict, where: str, variant: str | None) -> dict:
    """One draw from a ``gen_b1.py --profile`` result: the first batch section's ``variant`` (default: its only
    variant with a kernel table). Exits with a message naming the variants when none or several qualify."""
    section = next((v for k, v in data.items() if re.fullmatch(r"b\d+", k)), {})
    variants = sorted(k for k, v in section.items() if isinstance(v, dict))
    names = [variant] if variant else [k for k in variants if "kernels" in section[k]]
    if len(names) != 1 or names[0] not in variants:
        why = "no variant with a kernel table (run gen_b1.py with --profile)" if not names else \
            f"variant {names[0]!r} not found" if len(names) == 1 else "several variants with a kernel table"
        raise SystemExit(f"{where}: {why}; its variants: {variants or 'none'} (pick one with --variant)")
    r = section[names[0]]
    return {"kernels": r.get("kernels", {}), "step_ms": r["decode_ms_per_step"],
            "of_bound": r["tok_s"] / section["bound_tok_s"]}


def load(paths: list[Path], variant: str | None) -> dict:
    """``{label: draw}`` from ``gen_b1.py`` JSON files, or from a collection of them (a JSON whose ``"draws"``
    maps labels to such results, as ``benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json``). A
    collection's labels are prefixed with its file name when several files are given; a label met twice (the same
    file given twice) exits with a message."""
    draws = {}
    for path in paths:
        data = json.loads(path.read_text())
        if isinstance(data.get("draws"), dict):
            many = {(f"{path.name}:{k}" if len(paths) > 1 else k): v for k, v in data["draws"].items()}
        else:
            many = {str(path): data}
        for label, one in many.items():
            if label in draws:
                raise SystemExit(f"{label} is given twice: give each draw once")
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
        print(f"{label}: {draws[label]['of_bound']:.1%} of the bound, step {d['step_ms'] * 1e3:.0f} µs, its kernels "
              f"{d['kernel_ms'] * 1e3:.0f} µs, of which {d['excess_us']:.0f} µs above the fastest picks")
        for name, ex, us, best in d["largest"]:
            print(f"    {ex:6.1f} µs/step  {us:7.1f} µs per launch (fastest {best:.1f})  {name}")
    print(f"decoding kernels at the fastest pick of each: {res['best_kernel_ms'] * 1e3:.0f} µs per step "
          f"({len(res['draws'])} draws; kernel time, not wall time)")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
