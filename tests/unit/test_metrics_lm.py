"""Language-model metrics (harness.metrics.lm) against direct computations of lm-eval's definitions, and their
bootstrap (documents resampled as ratio estimators)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import MetricError
from harness.metrics import compute_metrics, point_value
from harness.metrics.lm import choice_prediction


def _mc(rng, n=200, k=5):
    n_choices = rng.integers(2, k + 1, size=n)
    ll = rng.normal(-8, 3, size=(n, k))
    ln = rng.integers(1, 40, size=(n, k)).astype(np.float64)
    for i, m in enumerate(n_choices):
        ll[i, m:] = np.nan
        ln[i, m:] = 0.0
    labels = np.array([rng.integers(0, m) for m in n_choices])
    return labels, {"loglik": ll, "choice_len": ln}, n_choices


def test_acc_and_acc_norm_equal_lm_eval_definitions(rng):
    labels, out, n_choices = _mc(rng)
    acc = np.mean([np.argmax(out["loglik"][i, :m]) == labels[i] for i, m in enumerate(n_choices)])
    norm = np.mean([np.argmax(out["loglik"][i, :m] / out["choice_len"][i, :m]) == labels[i]
                    for i, m in enumerate(n_choices)])
    assert point_value("acc", labels, out) == pytest.approx(acc, abs=1e-12)
    assert point_value("acc_norm", labels, out) == pytest.approx(norm, abs=1e-12)


def test_ties_go_to_the_first_choice_as_numpy_argmax():
    out = {"loglik": np.array([[-1.0, -1.0]]), "choice_len": np.array([[2.0, 2.0]])}
    assert choice_prediction(out).tolist() == [0]


def test_non_finite_loglik_of_a_real_choice_gives_nan_not_a_silent_pick(rng):
    labels, out, _ = _mc(rng, n=10)
    out["loglik"][3, 0] = np.nan  # a real choice (choice_len > 0): an fp16 overflow, say
    assert math.isnan(point_value("acc", labels, out))
    vals = compute_metrics(labels, out, np.arange(10).astype(str), ["acc"], n_resamples=20)
    assert math.isnan(vals["acc"].value) and math.isnan(vals["acc"].ci_low)


def test_perplexity_metrics_are_ratio_estimators():
    ll = np.array([-10.0, -30.0, -5.0])
    words, nbytes = np.array([4.0, 10.0, 2.0]), np.array([20.0, 55.0, 9.0])
    out = {"doc_loglik": ll, "words": words, "bytes": nbytes, "tokens": np.array([5.0, 12.0, 3.0])}
    labels = np.zeros(3, np.int64)
    assert point_value("word_perplexity", labels, out) == pytest.approx(math.exp(45 / 16))
    assert point_value("byte_perplexity", labels, out) == pytest.approx(math.exp(45 / 84))
    assert point_value("bits_per_byte", labels, out) == pytest.approx(45 / 84 / math.log(2))


def test_document_bootstrap_of_a_ratio_resamples_numerator_and_denominator_together(rng):
    n = 300
    nbytes = rng.integers(50, 500, size=n).astype(np.float64)
    out = {"doc_loglik": -0.9 * nbytes * rng.uniform(0.8, 1.2, size=n), "words": nbytes / 5, "bytes": nbytes}
    vals = compute_metrics(np.zeros(n, np.int64), out, np.arange(n).astype(str), ["bits_per_byte"],
                           n_resamples=400, seed=1)
    v = vals["bits_per_byte"]
    assert v.ci_low < v.value < v.ci_high and not v.higher_is_better
    assert v.value == pytest.approx(-out["doc_loglik"].sum() / nbytes.sum() / math.log(2))


def test_generation_metrics_are_means_of_their_columns():
    out = {"output": np.array(["a", "b", "c", "d"]), "exact_match": np.array([1.0, 0.0, 1.0, 1.0]),
           "f1": np.array([1.0, 0.5, 0.25, 0.25])}
    labels = np.zeros(4, np.int64)
    assert point_value("exact_match", labels, out) == 0.75
    assert point_value("f1", labels, out) == 0.5


def test_a_metric_of_another_task_is_refused(rng):
    labels, out, _ = _mc(rng, n=5)
    with pytest.raises(MetricError, match="does not apply"):
        point_value("accuracy", labels, out)
    with pytest.raises(MetricError, match="does not apply"):
        point_value("acc", labels, np.zeros((5, 2), np.float32))


def test_gold_outside_a_rows_choices_is_refused():
    out = {"loglik": np.zeros((2, 3)), "choice_len": np.ones((2, 3))}
    with pytest.raises(MetricError, match="label outside"):
        point_value("acc", np.array([0, 3]), out)
