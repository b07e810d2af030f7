"""The GPU benchmark script runs end to end in its CPU smoke mode (tiny model; numbers are not measurements), so
the script does not rot between GPU sessions: packed/padded runners, numerics, blend, 11-alpha sweep, the
frozen-trunk sweep, all reported as JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_gpu_smoke_reports_every_measurement():
    res = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--n", "120", "--repeats", "1",
                          "--batch-tokens", "4096"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert "none of these numbers is a measurement" in out["smoke"]
    for key in ("runner_examples_s", "runner_packed_flash_examples_s", "runner_padded_examples_s",
                "packed_bf16_vs_fp32_flipped", "blend_vs_bound", "sweep_11_alphas_s",
                "sweep_11_alphas_head_only_trunk_reuse_s"):
        assert key in out, key
    assert out["head_only_frozen_layers"] == 2  # the tiny model's two layers are frozen in the head-only pair


@pytest.mark.dist
def test_dist_sweep_benchmark_runs_on_cpu(tmp_path):
    """benchmarks/dist_sweep_gpu.py --tiny: 1 vs 2 processes (gloo) and the device-map checks, on CPU."""
    res = subprocess.run([sys.executable, "benchmarks/dist_sweep_gpu.py", "--tiny", "--rows", "10", "--json",
                          str(tmp_path / "out.json")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    info = ("chosen_alpha", "predictions_max_rel_diff")
    assert all(v for k, v in out["identical_one_vs_two"].items() if k not in info)
    assert out["identical_one_vs_two"]["predictions_max_rel_diff"] < 1e-6
    assert set(out["two_processes"]["memory"]) == {"rank 0", "rank 1"}
    assert out["device_map"]["within_tolerance"] and out["device_map"]["mc_same_choice"] == 1.0
    assert all(v for k, v in out["device_map_sweep"]["identical_to_one_device"].items() if k not in info)


@pytest.mark.benchmark
def test_lm_gpu_benchmark_tiny_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "lm_gpu.json"
    res = subprocess.run([sys.executable, "benchmarks/lm_gpu.py", "--tiny", "--n-mc", "6", "--repeats", "1",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert "none of these numbers is a measurement" in data["smoke"]
    for name in ("peak", "mc", "gen", "lora", "memory"):
        assert "error" not in data[name], data[name]
    assert data["mc"]["tokens_read"] < data["mc"]["tokens_unshared"]  # each context read once
    assert data["lora"]["path"] == "lora-scale" and data["lora"]["lora_layers"] == 14
    assert set(data["gen"]["batch_64"]) >= {"harness_static", "harness_dynamic", "plain_generate_batched"}


@pytest.mark.benchmark
def test_gen_ceiling_tiny_reports_the_chains_and_generate_on_cpu(tmp_path):
    """benchmarks/gen_ceiling.py --tiny: the matrix-vector chains (cuBLAS-only on a CPU) and static-cache generate."""
    out = tmp_path / "gc.json"
    res = subprocess.run([sys.executable, "benchmarks/gen_ceiling.py", "--tiny", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    for chain in ("cublas_7_per_layer", "cublas_4_per_layer"):
        assert data["gemv"][chain]["bytes_per_s"] > 0
    assert data["generate"]["static_auto"]["tok_s"] > 0
    # the bound counts the matrices the chain reads (norm weights besides): the two byte counts agree within 2%
    read, chain = data["generate"]["bytes_read_per_step"], data["gemv"]["weight_bytes"]
    assert chain <= read <= 1.02 * chain


@pytest.mark.benchmark
def test_bench_bootstrap_agrees_with_explicit_resampling(tmp_path):
    """benchmarks/bench_bootstrap.py on a small case: both sides' distributions and intervals agree."""
    out = tmp_path / "bb.json"
    res = subprocess.run([sys.executable, "benchmarks/bench_bootstrap.py", "--n", "500", "--resamples", "100",
                          "--loop-resamples", "20", "--repeats", "1", "--cluster-size", "3", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["max_abs_difference"] < 1e-9 and data["explicit_loop_measured"]["resamples"] == 20
    assert data["speedup"] > 0  # reported, not judged: a timed assertion has no place in a test (42x measured)


@pytest.mark.benchmark
def test_gemv_tune_tiny_runs_each_variant_in_a_fresh_process_on_cpu(tmp_path):
    """benchmarks/gemv_tune.py --tiny: each case compiled in a child process with its own Inductor cache, checked
    against eager (the argmax exactly; the products to bf16 rounding), summarised per variant."""
    out = tmp_path / "gemv.json"
    res = subprocess.run([sys.executable, "benchmarks/gemv_tune.py", "--tiny", "--trials", "1", "--variants",
                          "cublas", "cd", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["summary"]) == {"cublas", "cd"}
    for variant in data["summary"].values():
        assert set(variant) == {"qo", "down", "argmax", "argmax_fp32"}
        assert variant["argmax"]["max_err"] == 0 and variant["argmax_fp32"]["max_err"] == 0
        assert variant["qo"]["max_err"] < 0.02 and variant["down"]["max_err"] < 0.02
        assert all(case["us_min"] > 0 for case in variant.values())


# the generation benchmarks of issue 20, each in its CPU mode (tiny model): {script: (top-level keys, sections
# whose variants must all have run without an error)}. gen_cb's CUDA-graph and asynchronous variants need a GPU
# and record their error on a CPU by design.
GEN_SCRIPTS = {"gen_b1": (["b1"], ["b1"]), "gen_loop": (["b1"], ["b1"]), "gen_probe": (["b1"], ["b1"]),
               "gen_cb": (["static_generate", "cb"], []), "gen_prof": (["compiled_step_ms_wall", "eager_step_ms"], [])}
# gen_cb's variants that need no GPU, which must run on a CPU too
GEN_CB_CPU = ("cb_default",)


@pytest.mark.benchmark
@pytest.mark.parametrize("script", sorted(GEN_SCRIPTS))
def test_generation_benchmark_runs_on_cpu(script, tmp_path):
    """benchmarks/<script>.py --tiny runs end to end and writes its JSON (so it does not rot between GPU
    sessions, whose device time is scarce)."""
    out = tmp_path / f"{script}.json"
    res = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--tiny", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    keys, sections = GEN_SCRIPTS[script]
    assert set(keys) <= set(data), sorted(data)
    for section in sections:
        variants = {k: v for k, v in data[section].items() if isinstance(v, dict)}
        assert variants, data[section]
        for name, v in variants.items():
            assert "error" not in v, (name, v)
    if script == "gen_cb":
        assert all("error" not in data["cb"][name] for name in GEN_CB_CPU), data["cb"]
    if script == "gen_prof":
        assert data["compiled_step_ms_wall"] > 0 and data["eager_step_ms"] > 0


def _b1(step_ms: float, kernels: dict) -> dict:
    """A gen_b1.py --profile result with one profiled variant (the fields tuning_draws.py reads)."""
    return {"b1": {"bound_tok_s": 1000.0, "graph_tuned": {"tok_s": 1e3 / step_ms / 2, "decode_ms_per_step": step_ms,
                                                           "kernels": kernels}}}


def _draws(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "benchmarks/tuning_draws.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 or not check, res.stderr[-3000:]
    return res


@pytest.mark.benchmark
def test_tuning_draws_compare_charges_each_draw_its_kernels_above_the_fastest_picks(tmp_path):
    """benchmarks/tuning_draws.py compare: per draw, the decoding kernels' time per step and the part of it above
    each kernel's fastest time per launch in any draw; the kernels at those fastest times; the prompt's kernels
    (fewer launches than steps) left out; labels of collections; refusals that name the fix."""
    # 5 steps; kernel a: 10 launches of 2 µs in draw 1, of 8 µs in draw 2; b: 5 of 4 µs, of 3 µs; p: the prompt's
    (tmp_path / "d1.json").write_text(json.dumps(_b1(1.0, {"a": [20.0, 10], "b": [20.0, 5], "p": [500.0, 1]})))
    (tmp_path / "d2.json").write_text(json.dumps(_b1(1.2, {"a": [80.0, 10], "b": [15.0, 5], "p": [900.0, 1]})))
    out = tmp_path / "cmp.json"
    _draws("compare", str(tmp_path / "d1.json"), str(tmp_path / "d2.json"), "--steps", "5", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["fastest_us"] == {"a": 2.0, "b": 3.0}
    assert data["best_kernel_ms"] == pytest.approx((2 * 10 + 3 * 5) / 5 / 1e3)
    d1, d2 = data["draws"][str(tmp_path / "d1.json")], data["draws"][str(tmp_path / "d2.json")]
    assert list(data["draws"]) == [str(tmp_path / "d1.json"), str(tmp_path / "d2.json")]  # fastest step first
    assert d1["kernel_ms"] == pytest.approx(40 / 5 / 1e3) and d2["kernel_ms"] == pytest.approx(95 / 5 / 1e3)
    assert d1["excess_us"] == pytest.approx(5 * 1 / 5)  # b: 1 µs over its fastest, 5 launches, over 5 steps
    assert d2["excess_us"] == pytest.approx(10 * 6 / 5)  # a: 6 µs over, 10 launches
    assert d2["largest"][0][0] == "a"
    # a collection of draws (as the committed results file): its labels, prefixed by its name beside another file
    (tmp_path / "both.json").write_text(json.dumps({"draws": {"x": json.loads((tmp_path / "d1.json").read_text()),
                                                              "y": json.loads((tmp_path / "d2.json").read_text())}}))
    _draws("compare", str(tmp_path / "both.json"), str(tmp_path / "d1.json"), "--steps", "5", "--out", str(out))
    assert set(json.loads(out.read_text())["draws"]) == {"both.json:x", "both.json:y", str(tmp_path / "d1.json")}
    res = _draws("compare", str(tmp_path / "d1.json"), str(tmp_path / "d1.json"), "--steps", "5", check=False)
    assert res.returncode != 0 and "given twice" in res.stderr
    # a result without a kernel table (no --profile) or with none at every step (a CPU run) is refused with the fix
    plain = _b1(1.0, {})
    del plain["b1"]["graph_tuned"]["kernels"]
    (tmp_path / "d3.json").write_text(json.dumps(plain))
    res = _draws("compare", str(tmp_path / "d3.json"), check=False)
    assert res.returncode != 0 and "--profile" in res.stderr and "graph_tuned" in res.stderr
    (tmp_path / "d4.json").write_text(json.dumps(_b1(1.0, {"aten::mm": [9.0, 3]})))
    res = _draws("compare", str(tmp_path / "d4.json"), check=False)
    assert res.returncode != 0 and "--profile on a GPU" in res.stderr


@pytest.mark.benchmark
def test_tuning_draws_on_the_committed_draws_gives_the_readme_figures(tmp_path):
    """The README's kernel-by-kernel figures for the 2026-12-01f draws come from this file and this command."""
    out = tmp_path / "cmp.json"
    _draws("compare", "benchmarks/results/2026-12-01f-h200-gen_b1-llama32-draws.json", "--out", str(out))
    data = json.loads(out.read_text())
    assert round(data["best_kernel_ms"], 2) == 0.98
    draws = data["draws"].values()
    assert len(draws) == 8

    def span(key: str, scale: float = 1.0, digits: int = 2) -> tuple:
        values = [d[key] * scale for d in draws]
        return round(min(values), digits), round(max(values), digits)
    assert span("step_ms") == (1.04, 1.47) and span("kernel_ms") == (1.10, 1.52)
    assert span("excess_us", digits=0) == (125, 536)
    over = [(d["kernel_ms"] - d["step_ms"]) * 1e3 for d in draws]
    assert (round(min(over)), round(max(over))) == (37, 118)


@pytest.mark.benchmark
def test_tuning_draws_picks_pairs_each_pick_with_its_kernel(tmp_path):
    """benchmarks/tuning_draws.py picks: a pick file is named by a hash of its kernel's key, and one folder may hold
    several kernels: each pick is paired by recomputing the key with this torch ("key"), else with the folder's
    only kernel ("folder"); the graph's own module (many kernels' sources as strings) is no kernel."""
    from torch._inductor.runtime.autotune_cache import AutotuneCache

    def kernel(folder: Path, stem: str, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / f"{stem}.py"
        src.write_text('@triton_heuristics.reduction(\n    size_hints={"x": 512, "r0_": 2048},\n)\n'
                       f"def {name}(in_ptr0, out_ptr0):\n    pass\n")
        return src

    shared = tmp_path / "cache" / "ab"
    for stem, name, xblock in (("cab1", "triton_red_fused_mm_15", 1), ("cab2", "triton_per_fused_softmax_7", 8)):
        src = kernel(shared, stem, name)
        key = Path(AutotuneCache._make_local_cache_key(str(src.parent), AutotuneCache._prepare_key(str(src))))
        key.write_text(json.dumps({"XBLOCK": xblock, "num_warps": 4}))
    (shared / "cgraph.py").write_text('k1 = """\ndef triton_a(x):\n    pass\n"""\nk2 = """\ndef triton_b(x):\n"""\n')
    alone = tmp_path / "cache" / "cd"
    kernel(alone, "ccd1", "triton_poi_fused_add_3")
    (alone / "f00d.best_config").write_text(json.dumps({"XBLOCK": 64, "num_warps": 2}))
    (shared / "beef.best_config").write_text(json.dumps({"XBLOCK": 2}))  # a stray pick: two kernels, no key
    got = json.loads(_draws("picks", str(tmp_path / "cache")).stdout)
    hints = '{"x": 512, "r0_": 2048}'
    assert got["triton_red_fused_mm_15"] == {"config": {"XBLOCK": 1, "num_warps": 4}, "size_hints": hints,
                                             "paired": "key"}
    assert got["triton_per_fused_softmax_7"]["config"]["XBLOCK"] == 8
    assert got["triton_per_fused_softmax_7"]["paired"] == "key"
    assert got["triton_poi_fused_add_3"] == {"config": {"XBLOCK": 64, "num_warps": 2}, "size_hints": hints,
                                             "paired": "folder"}
    stray = [v for k, v in got.items() if k.startswith("?ab/")]
    assert stray == [{"config": {"XBLOCK": 2}, "kernels": ["triton_per_fused_softmax_7", "triton_red_fused_mm_15"]}]


@pytest.mark.benchmark
def test_tuning_draws_on_the_do_bench_draws_gives_the_readme_figures(tmp_path):
    """The README's figures for the 2026-12-01g draws (the tuner timed by ``do_bench``) come from this file."""
    path = "benchmarks/results/2026-12-01g-h200-gen_b1-llama32-dobench-draws.json"
    out = tmp_path / "cmp.json"
    _draws("compare", path, "--out", str(out))
    data = json.loads(out.read_text())
    assert round(data["best_kernel_ms"], 2) == 0.96
    draws = data["draws"]
    swap = sorted(round(d["of_bound"] * 100, 1) for k, d in draws.items() if not k.startswith("env"))
    assert len(swap) == 11 and swap[0] == 44.1 and swap[-1] == 60.6  # env-1 is another treatment: not pooled
    assert round(statistics.median(swap), 1) == 54.4 and sum(x >= 50 for x in swap) == 8
    steps = [d["step_ms"] for d in draws.values()]
    assert (round(min(steps), 2), round(max(steps), 2)) == (0.96, 1.33)
    summary = json.loads((ROOT / path).read_text())["summary"]
    assert summary["do_bench_swap"]["median"] == 54.4 and summary["default_timer"]["median"] == 50.25
    assert summary["default_timer"]["n"] == 14 and summary["do_bench_swap"]["vs_default"]["p"] == 0.0502
    assert summary["harness_step_only"]["median"] == 55.9 and summary["harness_step_only"]["vs_default"]["p"] > 0.05


@pytest.mark.benchmark
def test_tuning_draws_on_the_kernel_time_draws_gives_the_readme_figures(tmp_path):
    """The README's figures for the 2026-12-01h draws (the tuner timed by GPU kernel time, the tuned step now)
    come from this file: every draw's share of the bound, the statistics against the earlier timers' draws, what
    the tuner's logs showed, and the kernels above the fastest picks."""
    from scipy.stats import mannwhitneyu

    path = "benchmarks/results/2026-12-01h-h200-gen_b1-llama32-kerneltime-draws.json"
    out = tmp_path / "cmp.json"
    _draws("compare", path, "--out", str(out))
    draws = json.loads(out.read_text())["draws"]
    kernel_time = sorted(round(d["of_bound"] * 100, 1) for k, d in draws.items() if k.startswith("kernel_time"))
    assert kernel_time == [61.7, 62.2, 62.6, 62.9, 63.9, 64.1]
    assert statistics.median(kernel_time) == 62.75
    excess = [d["excess_us"] for k, d in draws.items() if k.startswith("kernel_time")]
    assert (round(min(excess)), round(max(excess))) == (13, 25)
    logged = [d["excess_us"] for k, d in draws.items() if k.startswith("logged")]
    assert (round(draws["control_do_bench-1"]["excess_us"]), round(min(logged)), round(max(logged))) == (290, 468, 762)
    data = json.loads((ROOT / path).read_text())
    summary = data["summary"]
    assert summary["same_lease_control"] == {"control_do_bench-1": 50.3}
    assert summary["logged_do_bench"]["values"] == [36.5, 43.5, 37.6, 39.5]
    assert summary["kernel_time"]["first_two_calls_s"] == [93.7, 95.0, 95.1, 101.1, 105.4, 105.7]

    def result(name: str) -> dict:
        return next(v for v in data["draws"][name]["b1"].values() if isinstance(v, dict))
    assert summary["logged_do_bench"]["values"] == [round(result(f"logged_do_bench-{i}")["of_bound"] * 100, 1)
                                                    for i in (1, 2, 3, 4)]
    times = sorted(round(result(k)["first_two_calls_s"], 1) for k in data["draws"] if k.startswith("kernel_time"))
    assert times == summary["kernel_time"]["first_two_calls_s"]
    assert {k: round(result(k)["of_bound"] * 100, 1) for k in data["draws"]} == data["of_bound_percent"]
    steps = sorted(round(result(k)["decode_ms_per_step"], 3) for k in data["draws"] if k.startswith("kernel_time"))
    assert (steps[0], steps[-1]) == (0.925, 0.942)
    tok_s = sorted(result(k)["tok_s"] for k in data["draws"] if k.startswith("kernel_time"))
    assert (round(tok_s[0]), round(tok_s[-1])) == (1041, 1060)
    assert (round(tok_s[0] / 1685 * 100, 1), round(tok_s[-1] / 1685 * 100, 1)) == (61.8, 62.9)  # a common bound
    assert {result(k)["autotune_timer"] for k in data["draws"] if k.startswith("kernel_time")} == {"KernelTimer"}
    earlier = json.loads((ROOT / "benchmarks/results/2026-12-01g-h200-gen_b1-llama32-dobench-draws.json").read_text())
    swap = [v for k, v in earlier["of_bound_percent"].items() if not k.startswith("env")]
    default = [x for values in earlier["summary"]["default_timer"]["from"].values() for x in values]
    assert len(swap) == 11 and len(default) == 14
    for other, key in ((swap, "vs_do_bench_swap"), (default, "vs_default_timer")):
        test = mannwhitneyu(kernel_time, other, alternative="greater", method="exact")
        assert summary["kernel_time"][key] == {"U": test.statistic, "p": float(f"{test.pvalue:.2g}"),
                                               "method": summary["kernel_time"][key]["method"]}
    assert summary["kernel_time"]["vs_do_bench_swap"]["p"] == 8.1e-05
    assert summary["kernel_time"]["vs_default_timer"]["p"] == 2.6e-05
    logs = data["tuner_logs"]
    improved = [logs[f"logged_do_bench-{i}"]["kernels_improved_by_coordinate_descent"] for i in (1, 2, 3, 4)]
    assert improved == [0, 2, 1, 0]
    assert logs["kernel_time-1"]["kernels_improved_by_coordinate_descent"] == 25
    assert logs["kernel_time-1"]["kernels_tuned"] == 28
    assert logs["kernel_time-1"]["timing_us_median"] == 5.34 and logs["logged_do_bench-1"]["timing_us_min"] == 45.73


_TUNER_LOG = """\
torch._inductor.runtime.triton_heuristics Best config for triton_red_fused_mean_0: XBLOCK: 1, R0_BLOCK: 512, \
num_warps: 4, num_ctas: 1, num_stages: 1, maxnreg: None: 0.004000, nreg 24, nspill 0, #shared-mem 16
torch._inductor.runtime.coordinate_descent_tuner = Do coordinate descent tuning for triton_red_fused_mean_0 =
torch._inductor.runtime.coordinate_descent_tuner triton_red_fused_mean_0: Baseline Config XBLOCK: 1, R0_BLOCK: 512, \
num_warps: 4, num_ctas: 1, num_stages: 1, maxnreg: None, baseline timing 0.004000
torch._inductor.runtime.triton_heuristics COORDESC: XBLOCK: 1, R0_BLOCK: 1024, num_warps: 4, num_ctas: 1, \
num_stages: 1, maxnreg: None: 0.050000, nreg 24, nspill 0, #shared-mem 16
torch._inductor.runtime.triton_heuristics COORDESC: XBLOCK: 1, R0_BLOCK: 256, num_warps: 4, num_ctas: 1, \
num_stages: 1, maxnreg: 128, extra: 1: 0.003000, nreg 24, nspill 0, #shared-mem 16
torch._inductor.runtime.coordinate_descent_tuner triton_red_fused_mean_0: Improve from XBLOCK: 1 0.004 -> XBLOCK: 1 \
0.003, 1.333x
torch._inductor.runtime.coordinate_descent_tuner = Do coordinate descent tuning for triton_red_fused_mm_1 =
torch._inductor.runtime.coordinate_descent_tuner triton_red_fused_mm_1: Baseline Config XBLOCK: 8, \
baseline timing 0.010000
torch._inductor.runtime.triton_heuristics COORDESC: XBLOCK: 16, R0_BLOCK: 512, num_warps: 4, num_ctas: 1, \
num_stages: 1, maxnreg: None: 0.020000, nreg 24, nspill 0, #shared-mem 16
torch._inductor.runtime.coordinate_descent_tuner triton_red_fused_mm_1: Improve from XBLOCK: 8 0.01 -> XBLOCK: 8 \
0.01, 1.000x
"""


@pytest.mark.benchmark
def test_tuner_log_summarizes_what_the_tuner_timed_and_runs_gen_b1_with_the_log(tmp_path):
    """benchmarks/tuner_log.py: the summary counts coordinate descent's timings (µs) and the kernels it improved,
    and gives the first kernel's timings; a log without coordinate descent is refused with a message; ``run``
    writes the tuner's loggers to the file and runs gen_b1.py with the remaining arguments."""
    log = tmp_path / "tuner.log"
    log.write_text(_TUNER_LOG)
    res = subprocess.run([sys.executable, "benchmarks/tuner_log.py", "summarize", str(log)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "coordinate_descent_timings": 3, "timing_us_median": 20.0, "timing_us_min": 3.0, "timing_us_max": 50.0,
        "kernels_tuned": 2, "kernels_improved_by_coordinate_descent": 1, "largest_improvement_x": 1.333,
        "first_kernel": "triton_red_fused_mean_0", "first_kernel_first_config_us": 4.0,
        "first_kernel_neighbours_us": [50.0, 3.0]}
    log.write_text("something else\n")
    res = subprocess.run([sys.executable, "benchmarks/tuner_log.py", "summarize", str(log)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "not a debug log of Inductor's coordinate descent" in res.stderr
    out, log = tmp_path / "b1.json", tmp_path / "run.log"
    res = subprocess.run([sys.executable, "benchmarks/tuner_log.py", "run", str(log), "--tiny", "--repeats", "1",
                          "--variants", "graph", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tuner_log: running" in log.read_text()  # the tuner's loggers write to the file
    assert json.loads(out.read_text())["b1"]["graph"]["tok_s"] > 0


@pytest.mark.benchmark
def test_gen_b1_search_and_pdl_variants_and_profile_run_on_cpu(tmp_path):
    """gen_b1.py's ``_nopdl``, ``_dobench`` and search-widening suffixes compile and run (tiny model) with the
    options they name, ``_dobench`` swaps the autotuner's timer to ``do_bench``, the variants "as the harness's
    tuned step" to its kernel time (KernelTimer), the next untuned variant gets the default back, and
    ``--profile`` records a table per variant (on a CPU, the operators' times)."""
    names = ["graph", "graph_tuned", "graph_tuned_r2", "graph_tuned_all", "graph_tuned_nopdl", "graph_tuned_dobench"]
    code = f"import json, gen_b1; print(json.dumps({{n: gen_b1.step_options(n) for n in {names!r}}}))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    opts = json.loads(res.stdout.strip().splitlines()[-1])
    assert opts["graph"] == [None, False] and opts["graph_tuned"] == [None, False]  # the harness's own steps
    tuned = {"max_autotune": True, "coordinate_descent_tuning": True, "triton.cudagraphs": False}
    assert opts["graph_tuned_r2"] == [{**tuned, "triton.enable_pdl": True, "coordinate_descent_search_radius": 2},
                                      True]
    assert opts["graph_tuned_all"] == [{**tuned, "triton.enable_pdl": True,
                                        "coordinate_descent_check_all_directions": True}, True]
    assert opts["graph_tuned_nopdl"] == [tuned, True]
    assert opts["graph_tuned_dobench"] == [{**tuned, "triton.enable_pdl": True}, True]
    out = tmp_path / "b1.json"
    res = subprocess.run([sys.executable, "benchmarks/gen_b1.py", "--tiny", "--repeats", "1", "--profile",
                          "--variants", "graph,graph_tuned_dobench,graph_tuned_nopdl,graph_tuned_r2", "--out",
                          str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    section = json.loads(out.read_text())["b1"]
    from torch._inductor.runtime import benchmarking

    default_timer = type(benchmarking.benchmarker).__name__  # InductorBenchmarker unless the environment says
    for name in ("graph", "graph_tuned_dobench", "graph_tuned_nopdl", "graph_tuned_r2"):
        assert "error" not in section[name], section[name]
        assert section[name]["kernels"] and all(us >= 0 and n >= 1 for us, n in section[name]["kernels"].values())
        assert section[name]["same_tokens_as_first"] == 1.0
        timer = {"graph": default_timer, "graph_tuned_dobench": "TritonBenchmarker"}.get(name, "KernelTimer")
        assert section[name]["autotune_timer"] == timer, (name, section[name]["autotune_timer"])
