"""Run notes (issue 17): things a reader of the summary must know that are not errors, each also logged as a
warning when it is made. ``summary.json`` holds them as ``notes`` (a list of sentences), the report prints them.

Kinds: a capped ``max_length`` (the model's position table is shorter), non-finite outputs (an fp16 overflow), a
pad token taken from EOS, an adapted model identical to its base, rewritten alphas, overlapping splits; and what
alpha means when the adapted side is a ReFT adaptation (the intervention strength, logged at info level).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from harness.metrics.base import n_non_finite

__all__ = ["count_nonfinite", "nonfinite_note", "cap_note", "identical_note", "intervention_note",
           "training_length_notes"]

# the training records the harness writes beside a model: harness train, and the language-model demo's cache
TRAINING_RECORDS = ("training.json", "training_record.json")

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


def training_length_notes(model: str | Path, suites: list[Any]) -> list[str]:
    """Notes (and warnings) for classification suites evaluated at a ``max_length`` other than the one the model
    was trained with, as its folder's training record says (``training.json`` of ``harness train``, or the
    language-model demo's ``training_record.json``: ``settings.max_length``). A model trained on 128-token inputs
    and scored on 64-token ones (or the reverse) is measured on inputs it was not tuned for. Empty when the model
    is not a folder or has no readable record."""
    folder = Path(model)
    record = next((folder / n for n in TRAINING_RECORDS if (folder / n).is_file()), None)
    if record is None:
        return []
    try:
        trained = int(json.loads(record.read_text(encoding="utf-8"))["settings"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    notes = []
    for suite in suites:
        if getattr(suite, "task_name", "classification") == "classification" and suite.max_length != trained:
            notes.append(f"suite {suite.name}: evaluated at max_length {suite.max_length}, but {folder} was trained "
                         f"at max_length {trained} ({record.name}); scores may differ from those at the training "
                         f"length (set the suite's max_length or --max-length to {trained} to compare)")
            log.warning("%s", notes[-1])
    return notes


def intervention_note(description: str) -> str:
    """The note for a ReFT adaptation: alpha is the intervention strength, not a weight of a weight blend."""
    note = (f"the adapted side is a ReFT adaptation, so alpha is the {description}; no weight is blended, and "
            "selection, gate and report treat alpha as for a weight blend")
    log.info("%s", note)
    return note


def whitespace_matches(outputs: Mapping[str, Any], golds: Any, normalize: Mapping[str, Any]) -> int:
    """How many generation records score 0 on ``exact_match`` but would score 1 with surrounding whitespace
    stripped (a prompt ending in ``Answer:`` makes most models answer ``' 5'``; lm-eval does not strip, so
    neither does the harness unless the suite says ``normalize: {strip: true}``)."""
    from harness.metrics.text import exact_match

    if normalize.get("strip") or "exact_match" not in outputs or "answer" not in outputs:
        return 0
    options = {**normalize, "strip": True}
    return sum(1 for score, answer, gold in zip(outputs["exact_match"], outputs["answer"], golds)
               if score == 0 and exact_match(str(answer), str(gold), **options) == 1.0)


def regex_misses(outputs: Mapping[str, Any], pattern: str | None) -> int:
    """How many generation records' outputs ``answer_regex`` did not match: their answer is lm-eval's fallback
    ``[invalid]`` (:func:`harness.metrics.text.extract_answer`), which scores 0 on every match metric."""
    from harness.metrics.text import INVALID

    if not pattern or "answer" not in outputs:
        return 0
    return int(sum(1 for answer in outputs["answer"] if str(answer) == INVALID))


def regex_note(suite: str, split_key: str, point: str, n_missed: int, n: int, pattern: str) -> str:
    """The note for a generation suite whose ``answer_regex`` did not match some outputs (all of them: likely a
    regex written for the dataset's reference format, not for what the model writes)."""
    note = (f"suite {suite}: answer_regex {pattern!r} did not match {n_missed} of {n} outputs on {split_key} "
            f"({point}); each scores 0 as '[invalid]', as in lm-eval")
    if n_missed == n:
        note += ("; no output matched, so every match metric is 0: check the regex against what the model writes "
                 "(predictions.parquet, column output), e.g. a regex for '#### 42' on outputs that say "
                 "'The answer is 42'")
    log.warning("%s", note)
    return note


def whitespace_note(suite: str, split_key: str, point: str, n_close: int, n: int) -> str:
    """The note for a generation suite whose exact_match misses answers only by surrounding whitespace."""
    note = (f"suite {suite}: {n_close} of {n} outputs on {split_key} ({point}) differ from their reference only "
            "by surrounding whitespace and score 0 on exact_match; add `normalize: {strip: true}` to the suite's "
            "task if that is not intended (lm-eval does not strip either)")
    log.warning("%s", note)
    return note
