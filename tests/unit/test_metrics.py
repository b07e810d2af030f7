"""Metric registry: built-in table, scikit-learn agreement, conventions, errors, lazy ``evaluate`` modules."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from harness.errors import MetricError
from harness.metrics import METRICS, compute_metrics, get_metric, point_value
from harness.metrics import registry
from harness.spec.schema import BUILTIN_METRICS, TASK_METRICS

pytestmark = pytest.mark.filterwarnings("error")


def _random(seed: int, n: int, c: int, label_classes=None, pred_classes=None):
    rng = np.random.default_rng(seed)
    labels = rng.choice(label_classes if label_classes is not None else np.arange(c), size=n).astype(np.int64)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += rng.uniform(0, 2, n).astype(np.float32)
    if pred_classes is not None:  # force predictions into a subset of classes
        mask = np.full(c, -1e4, dtype=np.float32)
        mask[list(pred_classes)] = 0
        logits = logits + mask
    return labels, logits


def _sklearn(labels, logits):
    pred = logits.argmax(axis=1)
    c = logits.shape[1]
    with warnings.catch_warnings():  # the oracle may warn (class in y_pred not in y_true); ours must not
        warnings.simplefilter("ignore")
        return {"accuracy": accuracy_score(labels, pred),
                "macro_f1": f1_score(labels, pred, average="macro", labels=list(range(c)), zero_division=0),
                "balanced_accuracy": balanced_accuracy_score(labels, pred)}


def test_table_keys_equal_schema_builtins():
    assert tuple(METRICS) == tuple(BUILTIN_METRICS)
    assert set(METRICS) == set(BUILTIN_METRICS)


def test_table_is_frozen():
    with pytest.raises(TypeError):
        METRICS["new"] = METRICS["accuracy"]  # type: ignore[index]


@pytest.mark.parametrize("name,hib,rng", [("accuracy", True, (0, 1)), ("macro_f1", True, (0, 1)),
                                          ("balanced_accuracy", True, (0, 1)), ("nll", False, (0, float("inf"))),
                                          ("ece", False, (0, 1))])
def test_direction_and_range(name, hib, rng):
    spec = get_metric(name)
    assert spec.higher_is_better is hib and spec.range == rng and spec.vectorised and spec.description


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("c", [2, 3, 5])
def test_point_values_equal_sklearn(seed, c):
    labels, logits = _random(seed, 257, c)
    for name, want in _sklearn(labels, logits).items():
        assert point_value(name, labels, logits) == pytest.approx(want, abs=1e-12), name


@pytest.mark.parametrize("case", ["label_missing", "pred_missing", "both_missing", "single_label"])
def test_point_values_equal_sklearn_with_missing_classes(case):
    c = 4
    kw = {"label_missing": dict(label_classes=[0, 1, 3]),
          "pred_missing": dict(pred_classes=[0, 2]),
          "both_missing": dict(label_classes=[1, 2], pred_classes=[0, 1, 2]),
          "single_label": dict(label_classes=[2])}[case]
    labels, logits = _random(11, 100, c, **kw)
    for name, want in _sklearn(labels, logits).items():
        assert point_value(name, labels, logits) == pytest.approx(want, abs=1e-12), (case, name)


def test_nll_matches_sklearn_log_loss():
    labels, logits = _random(3, 500, 3)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert point_value("nll", labels, logits) == pytest.approx(log_loss(labels, p, labels=[0, 1, 2]), rel=1e-9)


def test_nll_is_stable_for_large_logits():
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    assert point_value("nll", np.array([0, 1]), logits) == pytest.approx(0.0, abs=1e-12)
    assert point_value("nll", np.array([1, 1]), logits) == pytest.approx(1000.0, rel=1e-6)


def _ece_reference(labels, logits, n_bins=10):
    """Straight transcription of Guo et al. (2017), eq. 3, with the same bin edges."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return ece


@pytest.mark.parametrize("seed", range(4))
def test_ece_matches_reference_loop(seed):
    labels, logits = _random(seed, 1000, 3)
    assert point_value("ece", labels, logits) == pytest.approx(_ece_reference(labels, logits), abs=1e-12)


def test_ece_extremes():
    logits = np.array([[50.0, 0.0]] * 10, dtype=np.float32)  # confidence ~1
    assert point_value("ece", np.zeros(10, np.int64), logits) == pytest.approx(0.0, abs=1e-9)
    assert point_value("ece", np.ones(10, np.int64), logits) == pytest.approx(1.0, abs=1e-9)


def test_ece_bin_edge_goes_to_lower_bin():
    # confidence exactly 0.6 (bin (0.5, 0.6]) and 0.9 (bin (0.8, 0.9]) with known accuracy
    l6, l9 = np.log(0.6 / 0.4), np.log(0.9 / 0.1)
    logits = np.array([[l6, 0], [l6, 0], [l9, 0], [l9, 0]], dtype=np.float64)
    labels = np.array([0, 1, 0, 0])
    assert point_value("ece", labels, logits) == pytest.approx(_ece_reference(labels, logits), abs=1e-9)


def test_unknown_metric_suggests_near_match():
    with pytest.raises(MetricError, match="did you mean 'accuracy'") as e:
        get_metric("acuracy")
    assert "balanced_accuracy" in str(e.value) and "evaluate:NAME_OR_PATH" in str(e.value)


@pytest.mark.parametrize("labels,logits,match", [
    (np.array([0, 2]), np.zeros((2, 2)), "outside the class range"),
    (np.array([0, 1, 1]), np.zeros((2, 2)), "match the logits"),
    (np.array([0.0, 1.0]), np.zeros((2, 2)), "integer"),
    (np.array([0, 1]), np.zeros(2), "2-D"),
])
def test_bad_inputs_raise_metric_error(labels, logits, match):
    with pytest.raises(MetricError, match=match):
        point_value("accuracy", labels, logits)


def test_non_finite_logits_give_nan_everywhere():
    labels, logits = _random(0, 50, 2)
    logits[3, 1] = np.nan
    out = compute_metrics(labels, logits, np.arange(50).astype(str), list(TASK_METRICS["classification"]), n_resamples=50)
    for m in out.values():
        assert np.isnan(m.value) and np.isnan(m.ci_low) and np.isnan(m.ci_high)


def test_empty_split_gives_nan_without_warning():
    out = compute_metrics(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros(0, str), ["accuracy", "ece"])
    assert all(np.isnan(m.value) for m in out.values())


class _FakeModule:
    """Stands in for an ``evaluate`` module (no Hub, no import of evaluate)."""

    def __init__(self, name):
        self.name = name
        self.calls = []

    def compute(self, predictions, references):
        self.calls.append((list(predictions), list(references)))
        p, r = np.array(predictions), np.array(references)
        return {self.name: float((p == r).mean()), "other": 0.0}


@pytest.fixture
def fake_evaluate(monkeypatch):
    modules = {}

    def load(path):
        modules[path] = _FakeModule(path.split("/")[-1])
        return modules[path]

    registry._evaluate_spec.cache_clear()
    monkeypatch.setattr(registry, "_load_evaluate_module", load)
    yield modules
    registry._evaluate_spec.cache_clear()


def test_evaluate_module_is_computed_on_argmax(fake_evaluate, caplog):
    labels, logits = _random(1, 60, 3)
    with caplog.at_level(logging.WARNING, logger="harness.metrics.registry"):
        spec = get_metric("evaluate:my/custom_score")
    assert spec.higher_is_better is True and not spec.vectorised
    assert "assuming higher is better" in caplog.text
    value = point_value("evaluate:my/custom_score", labels, logits)
    assert value == pytest.approx(accuracy_score(labels, logits.argmax(1)))
    preds, refs = fake_evaluate["my/custom_score"].calls[-1]
    assert preds == logits.argmax(1).tolist() and refs == labels.tolist()


def test_evaluate_module_known_direction(fake_evaluate):
    assert get_metric("evaluate:mse").higher_is_better is False
    assert get_metric("evaluate:accuracy").higher_is_better is True


def test_evaluate_module_in_compute_metrics(fake_evaluate):
    labels, logits = _random(2, 80, 2)
    out = compute_metrics(labels, logits, np.arange(80).astype(str), ["accuracy", "evaluate:accuracy"],
                          n_resamples=500, seed=3)
    assert out["evaluate:accuracy"].value == pytest.approx(out["accuracy"].value)
    assert out["evaluate:accuracy"].ci_low <= out["evaluate:accuracy"].value <= out["evaluate:accuracy"].ci_high
    # the loop is capped: first rows of the same weights -> close to the vectorised interval
    assert abs(out["evaluate:accuracy"].ci_low - out["accuracy"].ci_low) < 0.05
    assert len(fake_evaluate["accuracy"].calls) == 1 + registry_cap()


def registry_cap():
    from harness.metrics.bootstrap import MAX_LOOP_RESAMPLES

    return MAX_LOOP_RESAMPLES


def test_evaluate_load_failure_is_metric_error(monkeypatch):
    def load(path):
        raise FileNotFoundError(f"no module {path}")

    registry._evaluate_spec.cache_clear()
    monkeypatch.setattr(registry, "_load_evaluate_module", load)
    try:
        with pytest.raises(MetricError, match="cannot load evaluate module 'nope'"):
            get_metric("evaluate:nope")
    finally:
        registry._evaluate_spec.cache_clear()


def test_builtins_import_no_torch_transformers_or_evaluate():
    code = ("import sys, numpy as np\n"
            "from harness.metrics import compute_metrics\n"
            "import harness.gate, harness.gate_outputs\n"
            "compute_metrics(np.array([0, 1]), np.eye(2, dtype='float32'), np.array(['a', 'b']), "
            "['accuracy', 'macro_f1', 'balanced_accuracy', 'nll', 'ece'], n_resamples=10)\n"
            "bad = [m for m in ('torch', 'transformers', 'evaluate') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", ["harness.metrics.registry", "harness.metrics.bootstrap", "harness.io"])
def test_docstring_examples_run(module):
    """The Examples sections of the public metric functions (and the hashing helpers) are doctests."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
