"""A generation suite whose exact_match misses answers only by surrounding whitespace gets a note (new-user
trial, 2026-12-01: a prompt ending in 'Answer:' made every answer ' 5' and exact_match 0, silently); so does one
whose answer_regex matches no output (CI trial, 2026-12-01: a regex for GSM8K's '#### 42' on a model's outputs
gave exact_match and numeric_match 0 on every row, with no note)."""

from __future__ import annotations

import types

import numpy as np

from harness.pipeline.common import Scoring
from harness.pipeline.notes import regex_misses, whitespace_matches
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
    suite = types.SimpleNamespace(task_name="generation", task=types.SimpleNamespace(
        normalize=types.SimpleNamespace(model_dump=lambda: {}), answer_regex=None))
    scoring = _scoring(suite)
    ref = SplitRef("qa", "validation", SplitRole.VALIDATION, SuiteRole.SHIFT)
    prep = type("Prep", (), {"ref": ref, "info": {"gold": ("5", "6")}, "__len__": lambda self: 2})()
    scoring._check_generation("base", prep, _outputs([" 5", " 6"], [0.0, 0.0]))
    scoring._check_generation("adapted", prep, _outputs([" 5", " 6"], [0.0, 0.0]))
    assert len(scoring.notes) == 1
    assert "2 of 2 outputs on qa/validation (base) differ from their reference only by surrounding whitespace" \
        in scoring.notes[0] and "normalize: {strip: true}" in scoring.notes[0]


def _scoring(suite):
    scoring = Scoring.__new__(Scoring)
    scoring.suites, scoring.notes, scoring._whitespace_noted, scoring._regex_noted = {"qa": suite}, [], set(), set()
    return scoring


def test_an_answer_regex_that_matches_no_output_is_noted_with_the_column_to_look_at():
    from harness.tasks.generation import GenerationTask
    from tests.unit.test_sweep import GEN, _suite

    suite, _ = _suite("qa", "shift", {**GEN, "answer_regex": r"#### (\-?[0-9\.\,]+)"},
                      metrics=["exact_match", "numeric_match"])
    task = GenerationTask(suite)
    prep = type("Prep", (), {"ref": SplitRef("qa", "validation", SplitRole.VALIDATION, SuiteRole.SHIFT),
                             "info": {"gold": ("42", "7", "3")}, "__len__": lambda self: 3})()
    outputs = task.records(prep, {"output": np.array(["The answer is 42.", "so 7", "#### 3"])})
    assert list(outputs["answer"]) == ["[invalid]", "[invalid]", "3"]
    assert regex_misses(outputs, suite.task.answer_regex) == 2 and regex_misses(outputs, None) == 0
    scoring = _scoring(suite)
    scoring._check_generation("base", prep, outputs)
    scoring._check_generation("adapted", prep, outputs)  # once per suite
    assert len(scoring.notes) == 1 and "did not match 2 of 3 outputs on qa/validation (base)" in scoring.notes[0]
    assert "no output matched" not in scoring.notes[0]
    none = task.records(prep, {"output": np.array(["The answer is 42.", "so 7", "3"])})
    scoring = _scoring(suite)
    scoring._check_generation("base", prep, none)
    assert "did not match 3 of 3" in scoring.notes[0] and "no output matched" in scoring.notes[0]
    assert "column output" in scoring.notes[0] and list(none["exact_match"]) == [0.0, 0.0, 0.0]


def test_a_stored_entry_from_before_the_reference_column_gets_it():
    """Records read back from the store are the task's records of the version that stored them; an entry from
    before ``reference`` existed (same store key) gets the column from the split's gold, nothing recomputed."""
    from harness.tasks.generation import GenerationTask
    from tests.unit.test_sweep import GEN, _suite

    suite, _ = _suite("qa", "shift", GEN, metrics=["exact_match"])
    task = GenerationTask(suite)
    prep = type("Prep", (), {"info": {"gold": ("42", "7")}, "__len__": lambda self: 2})()
    old = {"output": np.array(["42", "8"]), "answer": np.array(["42", "8"]), "exact_match": np.array([1.0, 0.0])}
    got = task.stored(prep, old)
    assert list(got["reference"]) == ["42", "7"] and got["exact_match"] is old["exact_match"]
    new = {**old, "reference": np.array(["x", "y"])}
    assert task.stored(prep, new) is new
