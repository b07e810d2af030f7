"""The gate's power benchmark runs end to end on a few small runs (its numbers here are not measurements), so the
script does not rot: both settings, intervals, the failing rules and the analytic plan are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_gate_power_smoke():
    res = subprocess.run([sys.executable, "benchmarks/bench_gate_power.py", "--runs", "3", "--n", "1200",
                          "--drop", "0.10"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["policy"] == "release" and out["runs_per_setting"] == 3
    for key in ("equal", "drop"):
        assert set(out[key]) >= {"rate", "failed", "runs", "ci95", "failed_rules"}
    assert out["drop"]["rate"] == 1.0  # a 10-point drop is always caught
    assert 0.0 <= out["plan"]["false_fail"] <= 1.0
