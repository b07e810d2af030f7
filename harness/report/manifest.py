"""The run manifest (manifest.json): harness and library versions, git sha, command line, models and their
fingerprints, suites and split fingerprints, seeds, device, dtype and wall time per stage."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import harness
from harness.io import library_versions
from harness.records import SplitData
from harness.spec.load import spec_hash
from harness.spec.schema import Suite

__all__ = ["build_manifest"]


def _git_sha() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(harness.__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(*, command: str, argv: list[str] | None, models: dict[str, Any],
                   suites: list[tuple[Suite, Path | None]], splits: list[SplitData], seed: int, n_resamples: int,
                   dtype: str, batch_tokens: int, device: str, timings: dict[str, float],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest.json content: versions, command line, models and fingerprints, suites and fingerprints,
    seeds, device, dtype, wall time per stage (seconds)."""
    return {
        "harness_version": harness.__version__, "versions": library_versions(), "git_sha": _git_sha(),
        "command": command, "argv": argv if argv is not None else sys.argv, "created": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": models,
        "suites": {s.name: {"version": s.version, "spec_hash": spec_hash(s), "path": str(p) if p else None,
                            "classes": list(s.classes), "task": s.task_name,
                            "selection_metric": s.selection_metric} for s, p in suites},
        "splits": {sd.ref.key: {"fingerprint": sd.ref.fingerprint, "n": len(sd)} for sd in splits},
        "seeds": {"bootstrap": seed}, "bootstrap_resamples": n_resamples,
        "device": device, "dtype": dtype, "batch_tokens": batch_tokens,
        "platform": platform.platform(), "timings_s": {k: round(v, 3) for k, v in timings.items()},
        **(extra or {}),
    }
