"""The base of every spec model (strict, frozen) and the name type shared by suites, policies and training files."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["Name", "Strict"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_name(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError(f"names must start with a letter or digit and hold only letters, digits, '_', '.', '-'; "
                         f"got {v!r}")
    return v


#: A suite, split, policy, rule or training name: usable in paths and as ``suite/split`` keys.
Name = Annotated[str, AfterValidator(_check_name)]


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
