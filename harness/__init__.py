"""harness: an evaluation-first robustness harness for fine-tuned models.

Importing this package loads no model and registers nothing. Call :func:`register` to make the harness model
classes known to the transformers Auto classes (loaders and the CLI call it for you).

The Python API (one function per CLI command, :mod:`harness.api`) is re-exported lazily under names that no
submodule has, so importing a submodule never changes them: :func:`run_eval`, :func:`run_sweep`,
:func:`run_blend`, :func:`run_gate`, :func:`run_report`, :func:`run_demo`, :func:`run_train`.
"""

from __future__ import annotations

__version__ = "0.1.0"

API = ("run_eval", "run_sweep", "run_blend", "run_gate", "run_report", "run_demo", "run_train")

__all__ = ["__version__", "register", *API]


def register() -> None:
    """Register the harness model classes with the transformers Auto classes (idempotent)."""
    from harness.models.pooling import register as _register  # transformers: only when registering

    _register()


def __getattr__(name: str):
    # Lazy re-exports of the Python API (keeps `import harness` free of pandas, torch and transformers).
    if name in API:
        from harness import api  # the pipeline and pandas: only when the API is used

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
