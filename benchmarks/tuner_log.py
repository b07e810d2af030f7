"""What Inductor's launch-time autotuner measured (issue 20): run ``benchmarks/gen_b1.py`` with the tuner's debug
log written to a file, and summarise such a log.

Inductor tunes each Triton kernel at its first launch: it times the candidate configurations ("Best config for
<kernel>: <config>: <ms>"), then coordinate descent times neighbours of the best one ("COORDESC: <config>: <ms>")
and logs the improvement ("Improve from ... <x>x"). These lines come from the loggers
``torch._inductor.runtime.triton_heuristics`` and ``torch._inductor.runtime.coordinate_descent_tuner`` at DEBUG.

* ``run LOG [gen_b1 arguments]``: gen_b1.py with those loggers writing to ``LOG`` (only there; the log adds host
  time to every timing, so a logged draw's speed is not comparable with an unlogged one's).
* ``summarize LOG``: JSON with the number of coordinate-descent timings and their median, smallest and largest
  (µs), the kernels tuned and how many coordinate descent improved (and by how much at most), and the first
  kernel's first timing and its neighbours' (µs).

    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/tuner_log.py run /tmp/tuner.log --shape llama32 \\
        --variants graph_tuned --repeats 5 --profile --out /tmp/d.json
    python benchmarks/tuner_log.py summarize /tmp/tuner.log

Measured (H200, 2026-12-01h; ``tuner_logs`` in
``benchmarks/results/2026-12-01h-h200-gen_b1-llama32-kerneltime-draws.json``): with Triton's ``do_bench`` as the
timer, coordinate descent's timings had medians of 95-117 µs (none below 37 µs) and it improved 0-2 of 28 kernels;
with the tuned step's kernel time (``causal_decode.KernelTimer``), a median of 5.3 µs and 25 of 28 improved.
"""

from __future__ import annotations

import json
import logging
import re
import runpy
import statistics
import sys
from pathlib import Path

LOGGERS = ("torch._inductor.runtime.triton_heuristics", "torch._inductor.runtime.coordinate_descent_tuner")
_TIMING = r": ([0-9.]+), nreg "  # "COORDESC: <config>: <ms>, nreg ..." (a config may print more fields)


def summarize(text: str) -> dict:
    """The summary of one tuner log (see the module docstring); timings in µs. Each kernel's coordinate descent
    runs from "= Do coordinate descent tuning for <kernel> =" (its baseline timing on the next line) to
    "<kernel>: Improve from ... <x>x"; the first kernel's timings are taken from its own block. Raises
    ``ValueError`` when the log has no coordinate-descent timing (not a tuner log, or no coordinate descent)."""
    timings = [float(x) * 1e3 for x in re.findall(r"COORDESC: .*?" + _TIMING, text)]
    if not timings:
        raise ValueError("no 'COORDESC:' timing in the log: not a debug log of Inductor's coordinate descent")
    gains = [float(x) for x in re.findall(r"Improve from .* ([0-9.]+)x$", text, re.M)]
    out = {"coordinate_descent_timings": len(timings), "timing_us_median": round(statistics.median(timings), 2),
           "timing_us_min": round(min(timings), 2), "timing_us_max": round(max(timings), 2),
           "kernels_tuned": len(gains), "kernels_improved_by_coordinate_descent": sum(g > 1.0005 for g in gains),
           "largest_improvement_x": max(gains, default=1.0)}
    first = re.search(r"= Do coordinate descent tuning for (\w+) =\n(.*?)^\S+ \1: Improve from", text, re.M | re.S)
    if first:
        block = first.group(2)
        baseline = re.search(r"baseline timing ([0-9.]+)", block)
        out["first_kernel"] = first.group(1)
        if baseline:
            out["first_kernel_first_config_us"] = round(float(baseline.group(1)) * 1e3, 2)
        out["first_kernel_neighbours_us"] = [round(float(x) * 1e3, 2)
                                             for x in re.findall(r"COORDESC: .*?" + _TIMING, block)]
    return out


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("run", "summarize"):
        sys.exit(__doc__)
    log = Path(sys.argv[2])
    if sys.argv[1] == "summarize":
        print(json.dumps(summarize(log.read_text()), indent=1))
        return
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.propagate = False
    sys.argv = [str(Path(__file__).with_name("gen_b1.py")), *sys.argv[3:]]
    logging.getLogger(LOGGERS[0]).debug("tuner_log: running %s", " ".join(sys.argv))  # the loggers reach LOG
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
