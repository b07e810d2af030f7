"""Stage 2, dataset loading: reading a suite's source (:mod:`harness.data.readers`), canonical split rows
(:mod:`harness.data.sources`), labels to classes and their problems (:mod:`harness.data.labels`), the built-in
VADER loader (:mod:`harness.data.vader`), document-level split assignment (:mod:`harness.data.splits`) and the
table of seeded perturbations (:mod:`harness.data.shifts`).

Importing this package reads no data, fetches nothing and registers nothing.
"""

from __future__ import annotations

from harness.data.shifts import TRANSFORMS, apply_transforms, validate_transforms
from harness.data.sources import load_splits, sibling_resolver

__all__ = ["load_splits", "sibling_resolver", "apply_transforms", "validate_transforms", "TRANSFORMS"]
