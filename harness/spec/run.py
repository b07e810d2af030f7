"""Run config (``kind: run``, ``harness sweep -c run.yaml``): the sweep's models, suites, gate and outputs, plus
every :class:`harness.settings.Settings` field as a key of the same name (generated from it, so the file and the
flags cannot drift). Flags given on the command line override the file. Relative paths resolve against the file's
folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from harness.settings import settings_fields
from harness.spec.schema import Strict

__all__ = ["RunConfig", "PATH_FIELDS", "SETTING_KEYS"]

PATH_FIELDS = ("base", "adapted", "suites", "gate", "baseline", "out", "junit")


class _RunFile(Strict):
    """Settings of a sweep; every key mirrors the ``harness sweep`` flag of the same name (``suites`` is
    ``--suite``; a settings key with underscores is the flag with hyphens, ``max_examples`` is
    ``--max-examples``). Flags on the command line override the file. Relative paths (models, suites, gate,
    baseline, junit, out) resolve against the run file's folder, not the current folder."""

    kind: Literal["run"]
    schema_version: Literal[1] = 1
    base: str | None = Field(default=None, description="base checkpoint (folder or hub id)")
    adapted: str | None = Field(default=None, description="adapted checkpoint or PEFT adapter folder")
    suites: list[str] = Field(default_factory=list, description="suite files or folders")
    gate: str | None = Field(default=None, description="gate policy file (kind: policy)")
    baseline: str | None = Field(default=None, description="baseline run directory for the gate")
    junit: str | None = Field(default=None, description="where to write JUnit XML (default RUN_DIR/junit.xml)")
    out: str | None = Field(default=None, description="run directory to write")


def _setting_fields() -> dict[str, Any]:
    return {name: (info.annotation, info) for name, info in settings_fields().items()}


RunConfig = create_model("RunConfig", __base__=_RunFile, __module__=__name__, **_setting_fields())
RunConfig.__doc__ = _RunFile.__doc__

SETTING_KEYS = tuple(settings_fields())
"""The run-file keys that are settings (the rest name models, suites, the gate and outputs)."""
