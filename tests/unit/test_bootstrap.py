"""Cluster bootstrap: weights, vectorised resampling against explicit resampling, intervals, clusters (its speed
against explicit resampling is measured by ``benchmarks/bench_bootstrap.py``, not timed here)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import MetricError
from harness.metrics import (cluster_index, cluster_sums, cluster_weights, compute_metrics, metric_distribution,
                             percentile_interval, point_value, resample_sums)
from harness.records import MetricValue
from harness.spec.schema import TASK_METRICS

pytestmark = pytest.mark.filterwarnings("error")
ALL = list(TASK_METRICS["classification"])


def _data(n=400, c=3, seed=0, acc_boost=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n).astype(np.int64)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += acc_boost
    return labels, logits


def test_cluster_index_is_sorted_and_order_free():
    idx, g = cluster_index(np.array(["b", "a", "b", "c"]))
    assert g == 3 and idx.tolist() == [1, 0, 1, 2] and idx.dtype == np.int64


def test_cluster_weights_shape_sums_and_seed():
    src = np.array([f"d{i // 3}" for i in range(30)])
    w, idx = cluster_weights(src, 50, seed=7)
    assert w.shape == (50, 10) and w.dtype == np.float64 and idx.shape == (30,)
    assert np.all(w.sum(axis=1) == 10) and np.all(w >= 0) and np.all(w == np.round(w))
    assert np.array_equal(w, cluster_weights(src, 50, seed=7)[0])
    assert not np.array_equal(w, cluster_weights(src, 50, seed=8)[0])
    # chunked generation: more rows than one chunk still has the right row sums and mean weight 1
    big, _ = cluster_weights(src, 600, seed=1)
    assert np.all(big.sum(axis=1) == 10) and big.mean() == pytest.approx(1.0)


def test_cluster_weights_rejects_zero_resamples():
    with pytest.raises(MetricError, match="n_resamples"):
        cluster_weights(np.array(["a"]), 0)


def test_cluster_sums_matches_loop():
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(50, 4))
    idx = rng.integers(0, 7, 50)
    want = np.stack([stats[idx == g].sum(axis=0) for g in range(7)])
    assert np.allclose(cluster_sums(stats, idx, 7), want)


@pytest.mark.parametrize("name", ALL)
def test_vectorised_distribution_equals_explicit_resampling(name):
    labels, logits = _data(n=120, c=3, seed=2)
    src = np.array([f"doc{i // 4}" for i in range(120)])
    w, idx = cluster_weights(src, 25, seed=5)
    dist = metric_distribution(name, labels, logits, w, idx)
    for b in range(25):
        rows = np.repeat(np.arange(120), w[b, idx].astype(int))  # each example repeated as often as its cluster
        assert dist[b] == pytest.approx(point_value(name, labels[rows], logits[rows]), abs=1e-12)


def test_resamples_missing_a_class_do_not_warn_or_crash():
    # class 2 has a single example: about a third of resamples miss it entirely
    labels = np.array([0] * 30 + [1] * 30 + [2])
    logits = np.zeros((61, 3), np.float32)
    logits[np.arange(61), labels] = 1.0
    logits[:5] = [0, 0, 1]  # a few wrong predictions of class 2
    w, idx = cluster_weights(np.arange(61).astype(str), 400, seed=0)
    missing = w[:, idx[60]] == 0
    assert missing.any() and (~missing).any()
    for name in ALL:
        dist = metric_distribution(name, labels, logits, w, idx)
        assert np.isfinite(dist).all(), name
    # balanced accuracy averages recall over classes present in the resample: here every present class has
    # recall 1 except class 0, so without class 2 it is (r0 + 1) / 2
    bal = metric_distribution("balanced_accuracy", labels, logits, w, idx)
    assert np.all((bal[missing] >= 0.5) & (bal[missing] <= 1.0))


def test_interval_width_matches_binomial_theory():
    n = 4000
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.8
    logits = np.zeros((n, 2), np.float32)
    logits[np.arange(n), np.where(correct, labels, 1 - labels)] = 1.0
    out = compute_metrics(labels, logits, np.arange(n).astype(str), ["accuracy"], n_resamples=2000, seed=0)
    p = out["accuracy"].value
    analytic = 2 * 1.96 * np.sqrt(p * (1 - p) / n)
    assert out["accuracy"].ci_high - out["accuracy"].ci_low == pytest.approx(analytic, rel=0.1)


def test_clustered_duplicates_widen_the_interval():
    # 300 documents, each with 5 perturbed copies that share the document's prediction outcome
    docs, copies = 300, 5
    rng = np.random.default_rng(4)
    doc_correct = rng.random(docs) < 0.75
    labels = np.repeat(rng.integers(0, 2, docs), copies)
    correct = np.repeat(doc_correct, copies)
    logits = np.zeros((docs * copies, 2), np.float32)
    logits[np.arange(docs * copies), np.where(correct, labels, 1 - labels)] = 1.0
    clustered = compute_metrics(labels, logits, np.repeat(np.arange(docs), copies).astype(str), ["accuracy"],
                                n_resamples=2000, seed=0)["accuracy"]
    independent = compute_metrics(labels, logits, np.arange(docs * copies).astype(str), ["accuracy"],
                                  n_resamples=2000, seed=0)["accuracy"]
    ratio = (clustered.ci_high - clustered.ci_low) / (independent.ci_high - independent.ci_low)
    print(f"\nclustered/independent interval width ratio: {ratio:.2f} (theory sqrt(5) = 2.24)")
    assert clustered.value == independent.value
    assert ratio == pytest.approx(np.sqrt(copies), rel=0.15)


def test_same_weights_pair_identical_models_exactly():
    labels, logits = _data(seed=5)
    w, idx = cluster_weights(np.arange(len(labels)).astype(str), 300, seed=1)
    for name in ALL:
        d1 = metric_distribution(name, labels, logits, w, idx)
        d2 = metric_distribution(name, labels, logits.copy(), w, idx)
        assert np.array_equal(d1, d2)


def test_compute_metrics_values_and_reproducibility():
    labels, logits = _data(seed=6)
    src = np.array([f"d{i // 2}" for i in range(len(labels))])
    a = compute_metrics(labels, logits, src, ALL, n_resamples=500, seed=9)
    b = compute_metrics(labels, logits, src, ALL, n_resamples=500, seed=9)
    c = compute_metrics(labels, logits, src, ALL, n_resamples=500, seed=10)
    assert list(a) == ALL and a == b and a != c
    for name, m in a.items():
        assert isinstance(m, MetricValue)
        assert m.value == pytest.approx(point_value(name, labels, logits))
        assert m.ci_low <= m.ci_high
        assert m.higher_is_better is (name not in ("nll", "ece"))


def test_compute_metrics_zero_resamples_and_bad_arguments():
    labels, logits = _data(n=20)
    src = np.arange(20).astype(str)
    out = compute_metrics(labels, logits, src, ["accuracy"], n_resamples=0)
    assert np.isnan(out["accuracy"].ci_low) and np.isfinite(out["accuracy"].value)
    with pytest.raises(MetricError, match="confidence"):
        compute_metrics(labels, logits, src, ["accuracy"], confidence=95)
    with pytest.raises(MetricError, match="source_ids"):
        compute_metrics(labels, logits, src[:5], ["accuracy"])
    with pytest.raises(MetricError, match="unknown metric"):
        compute_metrics(labels, logits, src, ["accuracy", "f2"])
    with pytest.raises(MetricError, match="does not apply"):  # a generation metric on classification logits
        compute_metrics(labels, logits, src, ["accuracy", "f1"])


def test_percentile_interval():
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert all(np.isnan(percentile_interval(np.array([1.0, np.nan]))))
    assert all(np.isnan(percentile_interval(np.array([]))))


def test_resample_sums_is_weights_times_cluster_sums():
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(40, 3))
    src = np.array([f"s{i % 9}" for i in range(40)])
    w, idx = cluster_weights(src, 10, seed=0)
    assert np.allclose(resample_sums(stats, w, idx), w @ cluster_sums(stats, idx, 9))

