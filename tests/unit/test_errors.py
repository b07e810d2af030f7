"""The error family (STYLE.md section 2): every exception type lives in harness/errors.py, subclasses the matching
built-in, and survives pickling (a worker process or a data-parallel rank hands it back whole)."""

from __future__ import annotations

import pickle

import pytest

from harness import errors
from harness.data.sources import load_splits
from harness.spec.load import load_suite

SUITE = ("kind: suite\nname: typo\nrole: id\nsource: {type: local, files: [data.csv]}\nclasses: [a, bb]\n"
         "splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
         "  - {name: test, role: test, fraction: 0.5}\nmetrics: [accuracy]\n")


def _problems(tmp_path):
    """A misspelt class (bb for the data's b) in both splits, plus one empty label: several problems."""
    rows = ["text,label"] + [f"sentence {i},{'ab'[i % 2]}" for i in range(40)] + ["lonely,"]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "typo.yaml").write_text(SUITE)
    with pytest.raises(errors.DataError) as e:
        load_splits(load_suite(tmp_path / "typo.yaml"), suite_path=tmp_path / "typo.yaml")
    return e.value


@pytest.mark.parametrize("name", ["DataProblems", "LabelsOutsideClasses"])
def test_data_error_classes_live_in_the_errors_module(name):
    cls = getattr(errors, name)
    assert cls.__module__ == "harness.errors" and name in errors.__all__
    assert issubclass(cls, errors.DataError) and issubclass(cls, ValueError)


def test_combined_data_problems_are_one_picklable_error_holding_each(tmp_path):
    err = _problems(tmp_path)
    assert isinstance(err, errors.DataProblems) and str(err).startswith("2 data problems in suite 'typo':")
    outside = next(p for p in err.problems if isinstance(p, errors.LabelsOutsideClasses))
    assert list(outside.counts) == ["validation", "test"] and sum(outside.counts.values()) == 20
    assert outside.values == ["b"] and len(outside.ids) == 20
    assert outside.suite == "typo" and outside.unseen == ["bb"]
    assert "the data has 'b', the classes 'bb'" in str(outside)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.DataProblems and str(back) == str(err)
    assert [str(p) for p in back.problems] == [str(p) for p in err.problems]
    again = pickle.loads(pickle.dumps(outside))
    assert str(again) == str(outside) and (again.counts, again.ids, again.values, again.unseen, again.where) == (
        outside.counts, outside.ids, outside.values, outside.unseen, outside.where)


def test_edit_distance_counts_the_four_typing_errors():
    from harness.errors import edit_distance

    assert edit_distance("tweets", "tweets") == 0
    assert edit_distance("twets", "tweets") == 1  # deletion
    assert edit_distance("tweeets", "tweets") == 1  # insertion
    assert edit_distance("twaets", "tweets") == 1  # substitution
    assert edit_distance("twetes", "tweets") == 1  # adjacent swap (plain Levenshtein says 2)
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("kitten", "sitting") == 3


def test_likely_typo_ignores_a_shared_prefix_and_scales_with_length():
    from harness.errors import likely_typo

    suites = ["vader-movies", "vader-tweets", "vader-amazon", "vader-nyt"]
    assert likely_typo("vader-twets", suites) == "vader-tweets"
    assert likely_typo("Vader-Tweets", suites) == "vader-tweets"  # case only
    assert likely_typo("vader-amzon", suites) == "vader-amazon"
    assert likely_typo("vader-books", suites) is None  # another suite, not a typo
    assert likely_typo("amazon", ["amazn"]) == "amazn" and likely_typo("amazon", ["amzn"]) is None  # 1 edit to 7
    assert likely_typo("arc-challenge", ["arc-chalenge"]) == "arc-chalenge"
    assert likely_typo("arc-challenge", ["arc-chllnge"]) == "arc-chllnge"  # 2 edits, 13 characters
    assert likely_typo("vader-tweets", ["vader-tweets"]) is None  # the same name is no typo


@pytest.mark.parametrize("name, other", [("arc-e", "arc-c"), ("wmt16", "wmt14"), ("mnli-mm", "mnli-m"),
                                         ("tweets-v2", "tweets-v1"), ("amazon-2024", "amazon-2023"), ("v3", "v1")])
def test_likely_typo_leaves_names_of_one_family_alone(name, other):
    """Review of the typo rule: members of one family (versions, years, short variant codes) are one edit apart
    but name different suites; calling them typos would fail validate on a policy meant for the sibling."""
    from harness.errors import likely_typo

    assert likely_typo(name, [other]) is None
    assert likely_typo(name, [other], families=False) == other  # a fixed vocabulary (metric names) has no family
    assert likely_typo(name.upper(), [other, name]) == name  # the same name in other case still is a typo
    if "-" in name:
        assert likely_typo(name.replace("-", "_"), [other, name]) == name  # and so is another separator


def test_several_problems_are_one_per_line():
    """CI trial (2026-12-01): eleven problems of one gate policy came on one ';'-joined line."""
    from harness.errors import format_error, problem_lines

    msg = format_error("the gate policy cannot pass", got=problem_lines(["rule 'a': x", "rule 'b': y"]))
    assert msg.splitlines()[1:] == ["  got:", "    - rule 'a': x", "    - rule 'b': y"]
    assert problem_lines(["only one"]) == "only one"
