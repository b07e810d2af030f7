"""The golden run (``tests/golden/golden_run.py``) against its committed expected files.

Strings, ints, counts, point ids, the chosen alpha and selection are compared exactly; floats to 1e-6 absolute
(logits and metrics of a tiny fp32 model; the same CPU gives bit-identical numbers, another CPU's kernels may move
the last bits). Regenerate only by the explicit command in ``golden_run.py``'s docstring.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_run  # noqa: E402

TOL = 1e-6


def _compare(got, want, path: str = "") -> list[str]:
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r} != {sorted(want)}"]
        return [d for k in want for d in _compare(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: length {len(got) if isinstance(got, list) else got!r} != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _compare(g, w, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isnan(want) and math.isnan(got):
            return []
        return [] if abs(got - want) <= TOL else [f"{path}: {got!r} != {want!r}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return golden_run.canonical(golden_run.run(tmp_path_factory.mktemp("golden")))


@pytest.mark.parametrize("part", ["summary", "per_alpha", "predictions"])
def test_golden_run_matches_committed_files(golden, part):
    import json

    want = golden_run.read_expected()[part]
    got = json.loads(json.dumps(golden[part], allow_nan=True))  # same JSON round trip as the committed file
    diffs = _compare(got, want, part)
    assert not diffs, f"{len(diffs)} differences (first 10):\n" + "\n".join(diffs[:10])


def test_the_comparison_can_fail():
    assert _compare({"a": [1.0, "x"]}, {"a": [1.0 + 1e-3, "x"]})
    assert _compare({"a": [1.0, "y"]}, {"a": [1.0, "x"]})
    assert not _compare({"a": [float("nan")]}, {"a": [float("nan")]})
