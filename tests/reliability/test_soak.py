"""Issue 7, part 6: soak. Twenty consecutive sweeps of the tiny pair over the tiny suites in one process, each one
really computed (no results store) and reported (figures drawn), must not grow memory, open files or figures.

Measured after each sweep (after ``gc.collect()``): resident set size (``/proc/self/statm``), open file descriptors
(``/proc/self/fd``), threads (``/proc/self/task``), live matplotlib ``Figure`` objects (the report draws with
``Figure`` directly, not pyplot) and pyplot's figure numbers if pyplot was imported by anyone. Run with
``pytest -m slow tests/reliability/test_soak.py -s`` to see the series.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

import harness
from _helpers import leftovers

N_SWEEPS = 20
WARMUP = 5  # allocator pools, lazy imports and caches settle in the first sweeps
MAX_GROWTH_MB = 50.0
ALPHAS = "0,0.25,0.5,0.75,1"  # five points (base, three blends, adapted) keep 20 sweeps near a minute on 2 cores


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _n_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _n_threads(settle_s: float = 1.0) -> int:
    """Native threads of this process, the fewest seen over up to ``settle_s`` seconds: a short-lived helper
    thread that is just ending is not a leak; a leaked thread stays and is counted. tqdm's monitor threads are
    not counted: tqdm starts one per bar class the first time any bar of that class is made (a library's bar may
    first appear in a later sweep), also for a disabled bar, and stops it only when a drawn bar closes; there is at
    most one per class, so it cannot grow with the number of sweeps (the harness's own bar class starts none).
    Nor are jemalloc's background threads (``jemalloc_bg_thd``, pyarrow's allocator, under datasets): jemalloc
    starts one per arena when a thread first allocates in a new arena, which can happen in any sweep, and never
    more than its ``max_background_threads`` (the number of CPUs)."""
    import threading
    import time

    def count() -> int:
        monitors = sum(t.name == "tqdm_monitor" for t in threading.enumerate())
        names = _native_thread_names()
        return len(names) - monitors - names.count("jemalloc_bg_thd")

    low = count()
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        low = min(low, count())
    return low


def _native_thread_names() -> list[str]:
    """The kernel's name (``comm``) of every thread of this process, sorted: which pool a new thread belongs to."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(names)


def _live_figures() -> int:
    if "matplotlib.figure" not in sys.modules:
        return 0
    from matplotlib.figure import Figure

    return sum(isinstance(o, Figure) for o in gc.get_objects())


def _pyplot_figures() -> int:
    plt = sys.modules.get("matplotlib.pyplot")
    return len(plt.get_fignums()) if plt is not None else 0


def _sample() -> dict[str, float]:
    gc.collect()
    return {"rss_mb": round(_rss_mb(), 1), "fds": _n_fds(), "threads": _n_threads(), "figures": _live_figures(),
            "pyplot": _pyplot_figures()}


def _soak(tiny_pair, tiny_suites, out: Path, n: int, **kw) -> list[dict[str, float]]:
    series = []
    for i in range(n):
        res = harness.run_sweep(tiny_pair[0], tiny_pair[1], tiny_suites, out=out, alphas=ALPHAS, n_resamples=50,
                            progress=False, **kw)
        assert res.run_dir == out and (out / "summary.json").is_file()
        del res
        series.append(_sample())
        print(f"sweep {i + 1:2d}: {series[-1]} {_native_thread_names()}")
    return series


@pytest.mark.slow
def test_twenty_sweeps_do_not_grow_memory_files_or_figures(tiny_pair, tiny_suites, tmp_path):
    out = tmp_path / "soak" / "run"
    series = _soak(tiny_pair, tiny_suites, out, N_SWEEPS, use_store=False, report=True)
    rss = [s["rss_mb"] for s in series]
    print("RSS MB per sweep:", rss)
    assert (out / "report.html").is_file() and any((out / "figures").glob("*.png"))
    growth = rss[-1] - rss[WARMUP - 1]
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB from sweep {WARMUP} to {N_SWEEPS}: {rss}"
    fds = [s["fds"] for s in series]
    assert max(fds[1:]) <= fds[0], f"open file descriptors grew: {fds}"
    threads = [s["threads"] for s in series]
    import threading

    assert max(threads[1:]) <= threads[0], f"threads grew: {threads}; Python threads now: " \
        f"{[t.name for t in threading.enumerate()]}; native threads now: {_native_thread_names()}"
    assert all(s["figures"] == 0 and s["pyplot"] == 0 for s in series), series
    assert leftovers(out.parent) == []


@pytest.mark.slow
def test_repeated_sweeps_with_the_results_store_close_their_database(tiny_pair, tiny_suites, tmp_path, monkeypatch):
    """The store path: every sweep opens and closes the SQLite store (WAL files included) and leaks no handle."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    series = _soak(tiny_pair, tiny_suites, tmp_path / "run", 8, use_store=True, report=False)
    fds = [s["fds"] for s in series]
    assert max(fds[1:]) <= fds[0], f"open file descriptors grew: {fds}"
    open_db = [p for p in Path("/proc/self/fd").iterdir() if "results.sqlite" in os.path.realpath(p)]
    assert open_db == []
