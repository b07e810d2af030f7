"""The language-model task spec (strict, field paths in errors) and reading choices/gold out of rows."""

from __future__ import annotations

import doctest

import pytest
from pydantic import TypeAdapter, ValidationError

from harness.data import lm_rows
from harness.data.lm_rows import field_value, row_choices, row_gold, task_columns
from harness.errors import DataError
from harness.spec import lm
from harness.spec.lm import ChoicesSpec, GoldSpec, LMTask

TASK = TypeAdapter(LMTask)
ARC = {"kind": "multiple_choice", "prompt": {"template": "Question: {{question}}\nAnswer:"},
       "choices": {"field": "choices.text"}, "gold": {"label": "answerKey", "labels": "choices.label"}}
BOOLQ = {"kind": "multiple_choice", "prompt": {"template": "{{passage}}\nQuestion: {{question}}?\nAnswer:"},
         "choices": {"fixed": ["no", "yes"]}, "gold": {"index": "answer"}}
GSM8K = {"kind": "generation", "prompt": {"template": "Question: {{question}}\nAnswer:",
                                          "fewshot": {"k": 5, "split": "train"}},
         "gold": {"text": "answer"}, "stop": ["Question:"], "max_new_tokens": 256,
         "answer_regex": "#### (\\-?[0-9\\.\\,]+)",
         "normalize": {"ignore_case": True, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}}
PPL = {"kind": "perplexity", "text": "passage", "max_length": 512, "stride": 256}
ARC_ROW = {"question": "Which is a gas?", "answerKey": "2",
           "choices": {"text": ["rock", "steam", "ice"], "label": ["1", "2", "3"]}}


def errors(doc):
    with pytest.raises(ValidationError) as e:
        TASK.validate_python(doc)
    return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.value.errors()]


def test_valid_tasks_parse_with_defaults():
    arc, boolq, gsm, ppl = (TASK.validate_python(d) for d in (ARC, BOOLQ, GSM8K, PPL))
    assert arc.prompt.target_delimiter == " " and arc.prompt.fewshot_delimiter == "\n\n"
    assert not arc.prompt.chat
    assert gsm.prompt.fewshot.seed == 1234 and gsm.normalize.ignore_case
    assert ppl.stride == 256


@pytest.mark.parametrize("doc, path, msg", [
    ({**ARC, "extra": 1}, "multiple_choice.extra", "Extra inputs"),
    ({**ARC, "prompt": {"template": "Question: {question}"}}, "multiple_choice.prompt.template", "{{ question }}"),
    ({**ARC, "prompt": {"template": "{{ question "}}, "multiple_choice.prompt.template", "not valid Jinja2"),
    ({**ARC, "choices": {}}, "multiple_choice.choices", "exactly one of field, fields, fixed; got none"),
    ({**ARC, "choices": {"fixed": ["no"]}}, "multiple_choice.choices.fixed", "at least 2"),
    ({**ARC, "choices": {"fixed": ["no", "no"]}}, "multiple_choice.choices.fixed", "unique"),
    ({**ARC, "gold": {"index": "a", "text": "b"}}, "multiple_choice.gold", "exactly one of index, label, text"),
    ({**ARC, "gold": {"label": "answerKey"}}, "multiple_choice.gold", "needs gold.labels"),
    ({**ARC, "metrics": ["acc"]}, "multiple_choice.metrics", "Extra inputs"),  # metrics live at the suite's top
    ({k: v for k, v in GSM8K.items() if k != "max_new_tokens"}, "generation.max_new_tokens", "Field required"),
    ({**GSM8K, "gold": {"index": "label"}}, "generation", "gold is a text column"),
    ({**GSM8K, "stop": [""]}, "generation.stop", "non-empty"),
    ({**GSM8K, "answer_regex": "(("}, "generation.answer_regex", "not a valid regular expression"),
    ({**GSM8K, "normalize": {"regexes_to_ignore": ["["]}}, "generation.normalize.regexes_to_ignore",
     "regexes_to_ignore[0]"),
    ({**GSM8K, "prompt": {"template": "x", "fewshot": {"k": 0, "split": "train"}}},
     "generation.prompt.fewshot.k", "greater than or equal to 1"),
    ({**PPL, "stride": 1024}, "perplexity", "stride (1024) must be at most max_length (512)"),
    ({**PPL, "text": "a..b"}, "perplexity.text", "field path"),
    ({**PPL, "kind": "classify"}, "", "does not match any of the expected tags"),
])
def test_bad_task_specs_fail_with_the_field_path(doc, path, msg):
    errs = errors(doc)
    assert any(p == path and msg in m for p, m in errs), errs


def test_choices_and_gold_from_rows():
    arc = TASK.validate_python(ARC)
    choices = row_choices(ARC_ROW, arc.choices)
    assert choices == ["rock", "steam", "ice"] and row_gold(ARC_ROW, arc.gold, choices) == 1
    boolq = TASK.validate_python(BOOLQ)
    assert row_gold({"answer": True}, boolq.gold, row_choices({}, boolq.choices)) == 1
    cols = ChoicesSpec(fields=["A", "B"])
    assert row_choices({"A": "x", "B": "y"}, cols) == ["x", "y"]
    assert row_gold({"t": "y"}, GoldSpec(text="t"), ["x", "y"]) == 1
    # a CSV cell holds text and pandas gives numpy integers: both are positions (README's own CSV example failed)
    import numpy as np

    assert row_gold({"g": "1"}, GoldSpec(index="g"), ["x", "y"]) == 1
    assert row_gold({"g": " 0 "}, GoldSpec(index="g"), ["x", "y"]) == 0
    assert row_gold({"g": np.int64(1)}, GoldSpec(index="g"), ["x", "y"]) == 1
    assert row_gold({"g": "True"}, GoldSpec(index="g"), ["no", "yes"]) == 1  # BoolQ's answer column in a CSV
    assert row_gold({"g": "false"}, GoldSpec(index="g"), ["no", "yes"]) == 0
    assert row_gold({"t": "#### 4"}, GoldSpec(text="t"), None) == "#### 4"
    # a column with a missing cell reads as floats (left alone, session 33): 1.0 is position 1, as a label
    assert row_gold({"g": 1.0}, GoldSpec(index="g"), ["x", "y"]) == 1
    assert row_gold({"g": np.float64(0.0)}, GoldSpec(index="g"), ["x", "y"]) == 0
    assert row_gold({"g": "1.0"}, GoldSpec(index="g"), ["x", "y"]) == 1


@pytest.mark.parametrize("row, choices, gold, msg", [
    ({"c": []}, ChoicesSpec(field="c"), None, "non-empty list"),
    ({"c": "abc"}, ChoicesSpec(field="c"), None, "non-empty list"),
    ({"c": "['co2', 'n2']"}, ChoicesSpec(field="c"), None, "text that looks like a list"),  # a CSV cell
    ({"d": ["x"]}, ChoicesSpec(field="c"), None, "no field 'c'"),
    ({"c": ["x", "y"], "g": 2}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": "B"}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": "-1"}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": 0.5}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": float("nan")}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": "1.5"}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": 2.0}, ChoicesSpec(field="c"), GoldSpec(index="g"), "not a position"),
    ({"c": ["x", "y"], "g": "z"}, ChoicesSpec(field="c"), GoldSpec(text="g"), "not one of the row's choices"),
    ({"c": ["x", "y"], "k": "E", "l": ["A", "B"]}, ChoicesSpec(field="c"), GoldSpec(label="k", labels="l"),
     "not in the label list"),
])
def test_bad_rows_raise_data_errors_naming_the_spec_field(row, choices, gold, msg):
    with pytest.raises(DataError, match=msg) as e:
        c = row_choices(row, choices)
        row_gold(row, gold, c)
    assert "task." in str(e.value)


@pytest.mark.parametrize("value", [False, True, "true", " FALSE "])
def test_a_boolean_gold_text_points_to_gold_index(value):
    """New-user trial: BoolQ's boolean ``answer`` under ``gold: {text: answer}`` failed every row with "correct or
    remove that row"; the fix now names ``gold: {index: answer}`` (a boolean counts as 0/1) and the choices' order."""
    with pytest.raises(DataError) as e:
        row_gold({"answer": value}, GoldSpec(text="answer"), ["no", "yes"])
    msg = str(e.value)
    assert "use gold: {index: answer} instead of gold: {text: answer}" in msg, msg
    assert "false picks 'no' and true 'yes'" in msg and "correct or remove that row" not in msg
    with pytest.raises(DataError) as e:  # any other text outside the choices: that row is wrong
        row_gold({"answer": "maybe"}, GoldSpec(text="answer"), ["no", "yes"])
    assert "correct or remove that row in the data file" in str(e.value) and "index" not in str(e.value)


def test_task_columns_for_validate():
    assert task_columns(TASK.validate_python(ARC)) == {"task.prompt.template": {"question"},
                                                       "task.gold": {"answerKey", "choices"},
                                                       "task.choices": {"choices"}}
    assert task_columns(TASK.validate_python(GSM8K))["task.gold"] == {"answer"}
    assert field_value({"a": {"b": 1}}, "a.b") == 1


def test_doctests():
    assert doctest.testmod(lm).failed == 0 and doctest.testmod(lm_rows).failed == 0


@pytest.mark.parametrize("task, line", [
    ({**ARC, "choices": {"feild": "choices.text"}},
     "task.multiple_choice.choices.feild: unknown key 'feild' (typo? closest valid key: 'field'); valid keys here: "
     "field, fields, fixed"),
    ({**GSM8K, "stpo": ["Question:"]}, "task.generation.stpo: unknown key 'stpo' (typo? closest valid key: 'stop')"),
    ({**PPL, "strdie": 128}, "task.perplexity.strdie: unknown key 'strdie' (typo? closest valid key: 'stride')"),
])
def test_a_misspelt_key_inside_a_task_names_the_closest_key(task, line):
    """pydantic's path through the task union holds the union's name (``tagged-union[...]``): the key lookup skips
    it, so a key misspelt inside a task gets the closest valid key and the keys of that task, as at the top."""
    from harness.spec.load import problems_of
    from harness.spec.schema import Suite

    doc = {"kind": "suite", "name": "t", "role": "id", "source": {"type": "local", "files": ["d.jsonl"]},
           "task": task, "metrics": ["acc" if task["kind"] == "multiple_choice" else "exact_match"
                                     if task["kind"] == "generation" else "word_perplexity"],
           "splits": [{"name": "test", "role": "test", "fraction": 1.0}]}
    with pytest.raises(ValidationError) as e:
        Suite.model_validate(doc)
    assert any(p.startswith(line) for p in problems_of(e.value, Suite)), problems_of(e.value, Suite)


def test_repeated_choices_in_a_row_are_refused_with_the_text():
    """New-user trial (2026-12-01): 'Paris, London, Berlin, Paris' was scored; the two Paris choices tie and the
    first is always picked, so the row's correctness was the tie-break's, not the model's."""
    spec = ChoicesSpec(fields=["a", "b", "c", "d"])
    with pytest.raises(DataError) as e:
        row_choices({"a": "Paris", "b": "London", "c": "Berlin", "d": "Paris"}, spec)
    assert "repeat a text" in str(e.value) and "'Paris' more than once" in str(e.value)
    assert row_choices({"a": "Paris", "b": "paris", "c": "Berlin", "d": "Rome"}, spec) == ["Paris", "paris",
                                                                                            "Berlin", "Rome"]
