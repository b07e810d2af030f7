"""Make a stage module callable as its Python API twin.

``harness.gate``, ``harness.sweep`` and ``harness.report`` are both stage modules (``harness.gate.judge``) and the
Python twins of CLI commands (``harness.gate(run_dir, policy)``). Importing a submodule always binds it on the
package, so instead of fighting that, each of these modules is given a class whose ``__call__`` forwards to the
function of the same name in :mod:`harness.api`.
"""

from __future__ import annotations

import sys
import types

__all__ = ["make_callable"]


def make_callable(module_name: str, api_name: str) -> None:
    """Let ``module_name``'s module be called like ``harness.api.<api_name>`` (idempotent)."""

    class _TwinModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from harness import api

            return getattr(api, api_name)(*args, **kwargs)

    module = sys.modules[module_name]
    if not isinstance(module, _TwinModule):
        module.__class__ = _TwinModule
