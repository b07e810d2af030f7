"""The import rule of ../shared/STYLE.md, checked with ast: a stage imports only earlier stages (plus records,
errors and the shared helpers), and metrics/gate never import torch or transformers."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "harness"
# stage order; modules in SHARED may be imported by anything and import nothing but each other
ORDER = ["spec", "data", "tokcache", "models", "predict", "store", "metrics", "tasks", "train", "sweep", "gate_sides",
         "gate", "gate_outputs", "report", "demo", "pipeline", "api", "cli", "__main__"]
SHARED = {"records", "errors", "io", "summary", "rundir", "settings", "numfmt", "progress"}
FACADE = {"__init__"}  # harness/__init__.py: lazy re-exports of the API, imports nothing at import time
NO_TORCH = {"metrics", "gate_sides", "gate", "gate_outputs", "report", "sweep", "spec", "records", "errors", "summary",
            "rundir", "settings", "io", "api", "cli", "tasks", "numfmt", "progress"}
# the demo orchestrator calls the pipeline, like the CLI does
ALLOWED_LATER = {("demo", "pipeline")}


def stage_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return rel.parts[0]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


FILES = sorted(p for p in ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_stage_imports_only_earlier_stages(path):
    stage = stage_of(path)
    if stage in FACADE:
        return
    for mod in imports_of(path):
        if not mod.startswith("harness"):
            continue
        parts = mod.split(".")
        target = parts[1] if len(parts) > 1 else "__init__"
        if target in SHARED or target in FACADE or target == stage:
            continue
        if stage in SHARED:
            assert target in SHARED, f"{path.name} is shared but imports stage {target}"
            continue
        assert target in ORDER, f"unknown stage {target} imported by {path}"
        if (stage, target) in ALLOWED_LATER:
            continue
        assert ORDER.index(target) < ORDER.index(stage), f"{path.relative_to(ROOT)} ({stage}) imports later stage {mod}"


@pytest.mark.parametrize("path", [p for p in FILES if stage_of(p) in NO_TORCH], ids=lambda p: str(p.relative_to(ROOT)))
def test_array_stages_do_not_import_torch(path):
    bad = {m for m in imports_of(path) if m.split(".")[0] in ("torch", "transformers", "peft")}
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_harness_registers_nothing():
    import subprocess
    import sys

    code = ("import sys, harness, harness.records, harness.summary, harness.spec.load, harness.sweep, harness.settings;"
            "assert 'torch' not in sys.modules, 'importing harness pulled in torch';"
            "assert 'transformers' not in sys.modules, 'importing harness pulled in transformers'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_importing_any_submodule_keeps_the_api_names():
    """``harness.run_*`` are the API functions before and after every submodule is imported (no module of the
    package shares their names, so an import never rebinds them)."""
    import importlib
    import pkgutil
    import types

    import harness
    import harness.api

    names = harness.API
    assert all(getattr(harness, n) is getattr(harness.api, n) for n in names)
    for info in pkgutil.walk_packages(harness.__path__, prefix="harness."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as e:  # the Triton kernel module needs triton (CUDA machines only)
            if e.name != "triton":
                raise
        for n in names:
            assert isinstance(getattr(harness, n), types.FunctionType), f"importing {info.name} changed harness.{n}"
            assert getattr(harness, n) is getattr(harness.api, n), f"importing {info.name} changed harness.{n}"
    assert not {n.split(".")[1] for n in sys.modules if n.startswith("harness.")} & set(names)
