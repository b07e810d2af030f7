"""A generation suite whose exact_match misses answers only by surrounding whitespace gets a note (new-user
trial, 2026-12-01: a prompt ending in 'Answer:' made every answer ' 5' and exact_match 0, silently)."""

from __future__ import annotations

import types

import numpy as np

from harness.pipeline.common import Scoring
from harness.pipeline.notes import whitespace_matches
from harness.records import SplitRef, SplitRole, SuiteRole


def _outputs(answers, scores):
    return {"answer": np.array(answers, dtype=str), "exact_match": np.array(scores, dtype=float)}


def test_counts_only_misses_that_stripping_would_turn_into_matches():
    out = _outputs([" 5", "5", " 6", " seven "], [0.0, 1.0, 0.0, 0.0])
    assert whitespace_matches(out, ["5", "5", "7", "seven"], {}) == 2  # " 5" and " seven "; " 6" is wrong anyway
    assert whitespace_matches(out, ["5", "5", "7", "Seven"], {"ignore_case": True}) == 2  # the suite's options kept
    assert whitespace_matches(out, ["5", "5", "7", "seven"], {"strip": True}) == 0  # the suite strips already
    assert whitespace_matches({"answer": out["answer"]}, ["5"] * 4, {}) == 0  # no exact_match column


def test_scoring_notes_it_once_per_suite_with_the_fix():
    suite = types.SimpleNamespace(task_name="generation",
                                  task=types.SimpleNamespace(normalize=types.SimpleNamespace(model_dump=lambda: {})))
    scoring = Scoring.__new__(Scoring)
    scoring.suites, scoring.notes, scoring._whitespace_noted = {"qa": suite}, [], set()
    ref = SplitRef("qa", "validation", SplitRole.VALIDATION, SuiteRole.SHIFT)
    prep = type("Prep", (), {"ref": ref, "info": {"gold": ("5", "6")}, "__len__": lambda self: 2})()
    scoring._check_whitespace("base", prep, _outputs([" 5", " 6"], [0.0, 0.0]))
    scoring._check_whitespace("adapted", prep, _outputs([" 5", " 6"], [0.0, 0.0]))
    assert len(scoring.notes) == 1
    assert "2 of 2 outputs on qa/validation (base) differ from their reference only by surrounding whitespace" \
        in scoring.notes[0] and "normalize: {strip: true}" in scoring.notes[0]
