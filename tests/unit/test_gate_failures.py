"""Release gate, never pass by accident: every missing, mismatched or non-finite input fails its rule with a
reason (missing suite/split/metric/point, NaN values or logits, predictions inconsistent with the summary,
unpaired ids, label or baseline mismatches, min_n, thresholds outside the metric's range, empty policies)."""

from __future__ import annotations

import numpy as np
import pytest

from _gate_runs import build_run, only, policy, rule, standard_data, std  # noqa: F401 (std: module fixture)
from harness.gate import judge
from harness.records import Verdict
from harness.spec.policy import GatePolicy

pytestmark = pytest.mark.filterwarnings("error")

# --------------------------------------------------------------------------------------------------------------
# Never pass by accident
# --------------------------------------------------------------------------------------------------------------

def fails_with(verdict: Verdict, text: str) -> None:
    assert not verdict.passed and verdict.outcomes
    assert any(text in o.reason for o in verdict.outcomes if not o.passed), [o.reason for o in verdict.outcomes]


def test_missing_suite(std):
    fails_with(judge(std, policy(rule(suites=["movies", "nope"]))), "missing suite")
    fails_with(judge(std, policy(rule(suites=["nope", "tweets"], aggregate="mean"))), "missing suite")
    # the reason says how to fix it, naming the run's suites (issue 19: a user's policy named suites of the demo)
    fails_with(judge(std, policy(rule(suites=["nope"]))),
               "fix: edit the policy's suites: (or this rule's suites:) to the run's suite names: amazon (shift), "
               "movies (id), tweets (shift)")


def test_selector_matching_nothing(tmp_path):
    data = {"movies": standard_data()["movies"]}
    fails_with(judge(build_run(tmp_path, data), policy(rule(suites="shift"))), "no suite with role 'shift'")


def test_missing_split(std):
    fails_with(judge(std, policy(rule(split="validation"))), "missing split")


def test_missing_metric(tmp_path):
    def drop_ece(s):
        del s["results"]["alpha=0.5"]["movies"]["test"]["metrics"]["ece"]

    run = build_run(tmp_path, standard_data(), edit=drop_ece)
    fails_with(judge(run, policy(rule(kind="ceiling", metric="ece", ceiling=0.5))), "missing metric")


def test_nan_value_in_summary(tmp_path):
    def nan_acc(s):
        s["results"]["base"]["movies"]["test"]["metrics"]["accuracy"]["value"] = float("nan")

    run = build_run(tmp_path, standard_data(), edit=nan_acc)
    fails_with(judge(run, policy(rule())), "NaN value")


def test_nan_logits(tmp_path):
    data = standard_data()
    ids, src, labels, logits = data["movies"]["alpha=0.5"]
    logits = logits.copy()
    logits[5, 0] = np.nan
    data["movies"]["alpha=0.5"] = (ids, src, labels, logits)
    fails_with(judge(build_run(tmp_path, data), policy(rule(kind="negative_flips", max_rate=0.5))), "non-finite")
    fails_with(judge(build_run(tmp_path, data), policy(rule())), "NaN value")


def test_summary_inconsistent_with_predictions(tmp_path):
    def tamper(s):
        s["results"]["alpha=0.5"]["movies"]["test"]["metrics"]["accuracy"]["value"] += 0.01

    fails_with(judge(build_run(tmp_path, standard_data(), edit=tamper), policy(rule())), "inconsistent")


def test_different_example_ids(tmp_path):
    data = standard_data()
    ids, src, labels, logits = data["movies"]["base"]
    data["movies"]["base"] = (ids[:-3], src[:-3], labels[:-3], logits[:-3])
    fails_with(judge(build_run(tmp_path, data), policy(rule())), "different examples")
    fails_with(judge(build_run(tmp_path, data), policy(rule(kind="negative_flips", max_rate=1.0))),
               "different examples")


def test_same_ids_in_another_order_are_paired(tmp_path, std):
    data = standard_data()
    ids, src, labels, logits = data["movies"]["base"]
    perm = np.random.default_rng(0).permutation(len(ids))
    data["movies"]["base"] = (ids[perm], src[perm], labels[perm], logits[perm])
    a = only(judge(build_run(tmp_path, data), policy(rule())))
    b = only(judge(std, policy(rule())))
    assert a.passed and (a.value, a.bound) == pytest.approx((b.value, b.bound))


def test_labels_differ(tmp_path):
    data = standard_data()
    ids, src, labels, logits = data["movies"]["base"]
    data["movies"]["base"] = (ids, src, 1 - labels, logits)
    fails_with(judge(build_run(tmp_path, data), policy(rule(kind="negative_flips", max_rate=1.0))),
               "disagree on the labels")


@pytest.mark.parametrize("field,value,text", [("version", "2", "version"), ("spec_hash", "other", "spec hash"),
                                              ("fingerprint", "fp-other", "data of tweets/test differs"),
                                              ("fingerprint", "", "no data fingerprint")])
def test_baseline_mismatch(tmp_path, std, field, value, text):
    baseline = build_run(tmp_path / "b", standard_data(), suite_info={"tweets": {field: value}})
    v = judge(std, policy(rule(reference="baseline", suites="shift", max_drop=0.5)), baseline)
    fails_with(v, text)
    by = {o.suite: o for o in v.outcomes}
    assert by["amazon"].passed and not by["tweets"].passed and "baseline mismatch" in by["tweets"].reason


def test_missing_baseline(std):
    fails_with(judge(std, policy(rule(reference="baseline"))), "no --baseline")
    fails_with(judge(std, policy(rule(reference="baseline")), baseline_error="cannot read x/summary.json"),
               "cannot read x/summary.json")


def test_baseline_lacking_the_suite(tmp_path, std):
    data = {s: per for s, per in standard_data().items() if s != "tweets"}
    fails_with(judge(std, policy(rule(reference="baseline", suites="shift")), build_run(tmp_path, data)),
               "baseline run has no suite 'tweets'")


def test_no_chosen_point(tmp_path):
    run = build_run(tmp_path, standard_data(), chosen=None)
    v = judge(run, policy(rule()))
    fails_with(v, "no chosen point")
    assert v.candidate == "(none)"


def test_missing_reference_point(tmp_path):
    data = {s: {p: v for p, v in per.items() if p != "base"} for s, per in standard_data().items()}
    fails_with(judge(build_run(tmp_path, data), policy(rule())), "missing point")


def test_min_n(std):
    fails_with(judge(std, policy(rule(min_n=1000))), "below min_n = 1000")
    assert judge(std, policy(rule(min_n=800))).passed


def test_threshold_outside_metric_range(std):
    fails_with(judge(std, policy(rule(kind="floor", floor=85))), "outside the range of accuracy")
    fails_with(judge(std, policy(rule(max_drop=2.0))), "larger than the range")


def test_policy_without_rules_fails(std):
    empty = GatePolicy.model_construct(**{**policy(rule()).__dict__, "rules": []})
    v = judge(std, empty)
    assert not v.passed and len(v.outcomes) == 1 and "no check" in v.outcomes[0].reason




def test_a_spec_hash_that_differs_by_the_row_cap_says_so():
    """CI trial (2026-12-01): a baseline scored with --max-examples 12 and a candidate with 8 failed with only
    "spec hash differs" though no suite file changed; the cap is part of the hash, and the reason now names it."""
    import types

    from harness.gate_sides import _cap_hint

    def info(n, cap):
        return types.SimpleNamespace(splits={"test": {"n": n, "drop_reasons": {"cap": cap} if cap else {}}})

    hint = _cap_hint(info(8, 1164), info(12, 1160), "test")
    assert "test kept 12 examples (1160 capped) in the baseline and 8 (1164 capped) in the candidate run" in hint
    assert "--max-examples" in hint
    assert _cap_hint(info(8, 1164), info(8, 1164), "test") == ""  # same counts: the cap is not why
    assert _cap_hint(info(8, 0), info(12, 0), "test") == ""  # no cap on either side
