"""harness: an evaluation-first robustness harness for fine-tuned models.

Importing this package loads no model and registers nothing. Call :func:`register` to make the harness model
classes known to the transformers Auto classes (loaders and the CLI call it for you).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "register", "evaluate", "sweep", "gate", "report", "blend", "demo"]


def register() -> None:
    """Register the harness model classes with the transformers Auto classes (idempotent)."""
    from harness.models.pooling import register as _register

    _register()


def __getattr__(name: str):
    # Lazy re-exports of the Python API twins of the CLI commands (keeps `import harness` light).
    if name in ("evaluate", "sweep", "gate", "report", "blend", "demo"):
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
