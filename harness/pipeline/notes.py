"""Run notes (issue 17): things a reader of the summary must know that are not errors, each also logged as a
warning when it is made. ``summary.json`` holds them as ``notes`` (a list of sentences), the report prints them.

Kinds: a capped ``max_length`` (the model's position table is shorter), non-finite outputs (an fp16 overflow), a
pad token taken from EOS, an adapted model identical to its base, rewritten alphas, overlapping splits; and what
alpha means when the adapted side is a ReFT adaptation (the intervention strength, logged at info level).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from harness.metrics.base import n_non_finite

__all__ = ["count_nonfinite", "nonfinite_note", "cap_note", "identical_note", "intervention_note"]

log = logging.getLogger(__name__)


def count_nonfinite(outputs: Mapping[str, Any]) -> int:
    """Number of examples whose scores hold inf or NaN (:func:`harness.metrics.base.n_non_finite`: logits, the
    log-likelihood of a real choice or of a document; a multiple-choice row's padding past its last choice is NaN
    by design and not counted)."""
    return n_non_finite(outputs)


def nonfinite_note(point: str, split_key: str, n_bad: int, n: int, dtype: str) -> str:
    """The note (and warning) for a point whose outputs overflowed on one split."""
    hint = ("--dtype fp16 overflows past 65504; rerun with --dtype bf16 or fp32" if dtype == "fp16" else
            "rerun with --dtype fp32" if dtype != "fp32" else "check the model's weights and inputs")
    note = (f"point {point}, split {split_key}: {n_bad} of {n} examples have non-finite logits (inf/NaN, an "
            f"overflow in {dtype}); the point's metrics on this split are NaN, so it is never selected and a gate "
            f"fails on it; {hint}")
    log.warning("%s", note)
    return note


def cap_note(suite: str, asked: int, limit: int) -> str:
    """The note for a suite ``max_length`` above the model's position table (capped, truncation counted)."""
    note = (f"suite {suite}: max_length {asked} exceeds the model's {limit} positions; inputs are truncated to "
            f"{limit} tokens (the summary's n_truncated counts them)")
    log.warning("%s", note)
    return note


def identical_note(base: str, adapted: str) -> str:
    """The note for an adapted model whose weights equal the base's (a copy, or a LoRA with B = 0)."""
    note = (f"the adapted model {adapted} is identical to the base {base}: no weight differs (a copy of the base, "
            "or an adapter whose update is zero, e.g. a LoRA with B = 0), so every alpha scores the same model")
    log.warning("%s", note)
    return note


def intervention_note(description: str) -> str:
    """The note for a ReFT adaptation: alpha is the intervention strength, not a weight of a weight blend."""
    note = (f"the adapted side is a ReFT adaptation, so alpha is the {description}; no weight is blended, and "
            "selection, gate and report treat alpha as for a weight blend")
    log.info("%s", note)
    return note
