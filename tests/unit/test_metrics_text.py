"""Per-example text scorers, multiple-choice predictions and perplexity statistics (no torch)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from harness.metrics import text as T

GSM8K_OPTIONS = dict(ignore_case=True, regexes_to_ignore=[",", r"\$", "(?s).*#### ", r"\.$"])


@pytest.mark.parametrize("pred, gold, options, want", [
    ("Paris", "Paris", {}, 1.0),
    ("paris", "Paris", {}, 0.0),
    ("paris", "Paris", {"ignore_case": True}, 1.0),
    ("Paris!", "Paris", {"ignore_punctuation": True}, 1.0),
    (" Paris ", "Paris", {}, 0.0),
    (" Paris ", "Paris", {"strip": True}, 1.0),
    ("route 66", "route", {"ignore_numbers": True, "strip": True}, 1.0),
    ("The answer is #### 1,200.", "Natalia sold clips.\n#### 1200", GSM8K_OPTIONS, 1.0),
])
def test_exact_match_options(pred, gold, options, want):
    assert T.exact_match(pred, gold, **options) == want


def test_contains_and_f1():
    assert T.contains("It is PARIS.", "paris", ignore_case=True) == 1.0
    assert T.contains("anything", "") == 0.0
    assert T.token_f1("", "") == 1.0 and T.token_f1("a", "b c") == 0.0
    assert T.token_f1("The Cat sat", "cat sat") == 1.0


@pytest.mark.parametrize("text, want", [
    ("#### 1,200", Decimal(1200)), ("so the answer is 1200.", Decimal(1200)), ("it costs $3.50", Decimal("3.50")),
    ("from -4 to -7", Decimal(-7)), ("step 1: 5 apples #### 18\n", Decimal(18)), ("none", None),
])
def test_extract_number(text, want):
    assert T.extract_number(text) == want


def test_numeric_match_compares_numbers_not_strings():
    assert T.numeric_match("... so the answer is 1200.", "#### 1,200") == 1.0
    assert T.numeric_match("3.50", "#### 3.5") == 1.0
    assert T.numeric_match("no idea", "#### 3") == 0.0
    with pytest.raises(ValueError, match="holds no number"):
        T.numeric_match("3", "three")


def test_multiple_choice_uses_character_length_for_acc_norm_and_first_index_on_ties():
    ll = [[-3.0, -3.0], [-10.0, -12.0], [-4.0, -6.0]]
    choices = [["a", "b"], ["short", "much longer text"], ["é", "ab"]]  # é: 1 char, 2 bytes
    s = T.multiple_choice_scores(ll, choices, [0, 1, 1])
    assert s["pred"].tolist() == [0, 0, 0] and s["acc"].tolist() == [1.0, 0.0, 0.0]
    assert s["pred_norm"].tolist() == [0, 1, 1] and s["acc_norm"].tolist() == [1.0, 1.0, 1.0]
    assert s["acc_bytes"].tolist() == [1.0, 1.0, 0.0]  # -4/2 == -6/2 -> first
    assert T.multiple_choice_scores([[-1.0]], [["x"]], [5])["acc"].tolist() == [0.0]
    with pytest.raises(ValueError, match="one entry per example"):
        T.multiple_choice_scores(ll, choices, [0])


def test_perplexity_statistics_resample_as_a_ratio_estimator():
    ll, texts = np.array([-10.0, -30.0, -5.0]), ["two words", "three words here", "é"]
    words = [T.count_words(t) for t in texts]
    nbytes = [T.count_bytes(t) for t in texts]
    assert words == [2, 3, 1] and nbytes == [9, 16, 2]
    assert T.count_words(" lead") == 2  # lm-eval's re.split counts the empty leading field
    sums = T.perplexity_stats(ll, words).sum(0)
    assert T.perplexity_value(sums) == pytest.approx(math.exp(45 / 6))
    b = T.perplexity_stats(ll, nbytes)
    assert T.bits_per_byte_value(b.sum(0)) == pytest.approx(45 / 27 / math.log(2))
    weights = np.array([[2, 0, 1], [1, 1, 1]], dtype=float)  # two resamples of documents
    np.testing.assert_allclose(T.perplexity_value(weights @ b), [math.exp(25 / 20), math.exp(45 / 27)])
    assert np.isnan(T.mean_value(np.zeros(2)))
    assert T.mean_value(T.mean_stats([1, 0, 1]).sum(0)) == pytest.approx(2 / 3)


def test_doctests():
    import doctest

    assert doctest.testmod(T).failed == 0


def test_the_report_defines_acc_norm_by_characters_as_the_metric_computes_it():
    """New-user trial (2026-12-01): the report's note said acc_norm divides by bytes; lm-eval and this metric
    divide by characters (acc_bytes by UTF-8 bytes)."""
    from harness.report.lmsections import _TASK_NOTES

    note = _TASK_NOTES["multiple_choice"]
    assert "acc_norm: the same with each choice's log-likelihood divided by its length in characters" in note
    assert "acc_bytes: in UTF-8 bytes" in note
