"""The gate's evidence checks (issue 18): too few clusters, tiny counts at 0 or 1, strict superiority with the exact
sign test, underpowered margins, the per-class recall floor and the suites a policy declares; plus the exact
statistics behind them (harness.metrics.exact, harness.metrics.evidence, harness.metrics.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from _gate_runs import (build_run, derived_mask, logits_for, only, policy, rule, standard_data,  # noqa: F401
                        std, suite_rows)
from harness.gate import judge
from harness.metrics.calibration import calibration_errors
from harness.metrics.exact import clopper_pearson, effective_n, pass_probability, sign_test

pytestmark = pytest.mark.filterwarnings("error")


def tiny_run(tmp_path, ref_right: np.ndarray, cand_right: np.ndarray, *, n_docs: int | None = None, seed: int = 0):
    """An ID-only run (suite movies) with the given correctness masks; one example per document unless n_docs."""
    rng = np.random.default_rng(seed)
    n = len(ref_right)
    ids, src, labels = suite_rows("movies", n, 1, rng)
    if n_docs is not None:
        src = np.array([f"doc{i % n_docs}" for i in range(n)])
    return build_run(tmp_path, {"movies": {"base": (ids, src, labels, logits_for(labels, ref_right, rng)),
                                           "alpha=0.5": (ids, src, labels, logits_for(labels, cand_right, rng))}})


# --------------------------------------------------------------------------------------------------------------
# Exact statistics
# --------------------------------------------------------------------------------------------------------------

def test_clopper_pearson_reference_values():
    assert clopper_pearson(5, 5, 0.95, "lower") == pytest.approx(0.05 ** (1 / 5))  # 0.549
    assert clopper_pearson(0, 20, 0.95, "upper") == pytest.approx(1 - 0.05 ** (1 / 20))  # 0.139
    assert clopper_pearson(0, 20, 0.95, "lower") == 0.0 and clopper_pearson(20, 20, 0.95, "upper") == 1.0
    from scipy.stats import binomtest
    ci = binomtest(7, 30).proportion_ci(confidence_level=0.90, method="exact")  # two-sided 90% = one-sided 95%
    assert clopper_pearson(7, 30, 0.95, "lower") == pytest.approx(ci.low)
    assert clopper_pearson(7, 30, 0.95, "upper") == pytest.approx(ci.high)


def test_sign_test_and_effective_n():
    assert sign_test(3, 0) == pytest.approx(0.125) and sign_test(0, 0) == 1.0
    assert sign_test(9, 1) < 0.05
    y = np.r_[np.ones(50), np.zeros(50)]
    assert effective_n(y, np.arange(100).astype(str)) == pytest.approx((100.0, 1.0), rel=0.02)
    # whole documents agree: 10 documents of 10 identical outcomes carry 10 examples' worth of evidence
    n_eff, deff = effective_n(y, np.repeat(np.arange(10), 10).astype(str))
    assert n_eff == pytest.approx(10 * 9 / 10 * 10 / 9, rel=0.15) and deff > 5
    assert effective_n(y, np.zeros(100).astype(str)) == (100.0, 1.0)  # one cluster: not estimable


def test_pass_probability_at_the_margin_equals_one_minus_confidence():
    assert pass_probability(-0.02, 0.02, 0.005, 0.90) == pytest.approx(0.10)
    assert pass_probability(0.0, 0.02, 0.005, 0.90) > 0.99


def test_debiased_ece_is_nearer_zero_for_a_calibrated_model_than_plugin():
    out = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n = 150
        conf = rng.uniform(0.55, 0.95, n)
        labels = rng.integers(0, 2, n)
        right = rng.random(n) < conf  # calibrated: P(right | confidence) = confidence, true calibration error 0
        pred = np.where(right, labels, 1 - labels)
        logits = np.zeros((n, 2), np.float32)
        logits[np.arange(n), pred] = np.log(conf / (1 - conf))
        ce = calibration_errors(labels, logits)
        out.append((ce["ece_plugin"], ce["ece_plugin_l2"], ce["ece_debiased_l2"]))
    plugin, plugin_l2, debiased = np.mean(out, axis=0)
    assert plugin > 0.04 and plugin_l2 > 0.05  # the plug-in sees miscalibration that is not there
    assert debiased < 0.5 * plugin_l2


# --------------------------------------------------------------------------------------------------------------
# The evidence checks of the issue
# --------------------------------------------------------------------------------------------------------------

def test_one_cluster_run_fails_every_rule(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.random(1000) < 0.80
    cand = derived_mask(rng, ref, 0.80, 0.791, 0.10)  # 0.9 points worse
    run = tiny_run(tmp_path, ref, cand, n_docs=1)
    for r in (rule(), rule(min_delta=-0.05), rule(kind="negative_flips", max_rate=0.5),
              rule(kind="floor", metric="accuracy", floor=0.1)):
        o = only(judge(run, policy(r)))
        assert not o.passed and "too few clusters: 1 distinct source_id" in o.reason
    assert judge(run, policy(rule(min_delta=-0.05), min_clusters=1)).passed  # only the cluster check failed it


@pytest.mark.parametrize("n", [5, 11])
def test_all_correct_tiny_split_fails_a_095_floor(tmp_path, n):
    run = tiny_run(tmp_path, np.ones(n, bool), np.ones(n, bool))
    o = only(judge(run, policy(rule(kind="floor", metric="accuracy", floor=0.95, min_clusters=1))))
    assert o.value == 1.0 and not o.passed
    assert o.info["bootstrap_bound"] == 1.0 and o.bound == pytest.approx(o.info["exact_bound"])
    assert o.bound == pytest.approx(0.05 ** (1 / n)) and o.info["bound_from"] == "exact"
    big = tiny_run(tmp_path / "big", np.ones(120, bool), np.ones(120, bool))
    assert judge(big, policy(rule(kind="floor", metric="accuracy", floor=0.95, min_clusters=1))).passed


def test_zero_flips_of_twenty_fails_a_five_percent_cap(tmp_path):
    run = tiny_run(tmp_path, np.ones(20, bool), np.ones(20, bool))
    o = only(judge(run, policy(rule(kind="negative_flips", max_rate=0.05, min_clusters=1))))
    assert o.value == 0.0 and o.info["n_negative_flips"] == 0 and not o.passed
    assert o.bound == pytest.approx(1 - 0.05 ** (1 / 20)) and "above the threshold" in o.reason


def test_identical_candidate_fails_a_superiority_rule(tmp_path):
    rng = np.random.default_rng(2)
    right = rng.random(2000) < 0.8
    run = tiny_run(tmp_path, right, right.copy())
    o = only(judge(run, policy(rule(min_delta=0.0), on_underpowered="fail")))
    assert not o.passed and o.value == 0 and o.bound == 0 and "strictly above" in o.reason
    assert o.info["sign_test"]["p_one_sided"] == 1.0
    # a positive min_delta that the bound is below: said the plain way (trial 4 read the "equal candidate" clause
    # on a rule with min_delta 0.05, where it does not apply)
    o = only(judge(run, policy(rule(min_delta=0.05), on_underpowered="fail")))
    assert not o.passed and "below the threshold 0.05" in o.reason and "shows none" not in o.reason


def test_three_favourable_pairs_of_twenty_fail_superiority_on_the_sign_test(tmp_path):
    ref = np.r_[np.zeros(3, bool), np.ones(17, bool)]
    cand = np.ones(20, bool)
    o = only(judge(tiny_run(tmp_path, ref, cand), policy(rule(min_delta=0.0, min_clusters=1), confidence=0.90)))
    assert o.bound > 0  # the bootstrap alone would pass it
    assert not o.passed and "one-sided p = 0.1250 > 0.1000" in o.reason


def test_clear_gain_passes_superiority(std):
    o = only(judge(std, policy(rule(min_delta=0.0))))
    assert o.passed and o.info["sign_test"]["p_one_sided"] < 0.05


def test_missing_declared_suite_fails(tmp_path):
    run = build_run(tmp_path, standard_data())  # movies (id), tweets and amazon (shift)
    pol = policy(rule(suites="shift", max_drop=0.05), suites={"id": ["movies"], "shift": ["tweets", "amazon", "nyt"]})
    v = judge(run, pol)
    by_suite = {o.suite: o for o in v.outcomes}
    assert set(by_suite) == {"tweets", "amazon", "nyt"} and not v.passed
    assert not by_suite["nyt"].passed and "missing suite" in by_suite["nyt"].reason
    assert by_suite["tweets"].passed and by_suite["amazon"].passed
    mean = only(judge(run, policy(rule(suites="shift", aggregate="mean", max_drop=0.05),
                                  suites={"shift": ["tweets", "amazon", "nyt"]})))
    assert not mean.passed and "nyt" in mean.reason
    undeclared = judge(run, policy(rule(suites="shift", max_drop=0.05)))
    assert undeclared.passed and "run only" in undeclared.outcomes[0].info["suites_from"]


def test_declared_suite_with_another_role_fails(tmp_path):
    run = build_run(tmp_path, standard_data())
    o = only(judge(run, policy(rule(suites="shift"), suites={"shift": ["movies"]})))
    assert not o.passed and "records them as id" in o.reason


def test_a_role_rule_judges_the_declared_and_the_run_suites_and_says_which(tmp_path):
    """Issue 19 trial: ``shift: [tweetz, amazon]`` judged worst(tweetz, amazon, tweets). Intended (a shift suite the
    policy does not name is never skipped), and the outputs now say which suites came from where; the missing,
    misspelt one names the closest suite of the run."""
    from harness.gate_outputs import failed_rule_lines, suite_selection, verdict_to_markdown

    run = build_run(tmp_path, standard_data())  # movies (id), tweets and amazon (shift)
    pol = policy(rule(name="shift_worst", suites="shift", aggregate="worst", max_drop=0.05),
                 rule(name="listed", suites=["movies"], max_drop=0.05),
                 suites={"id": ["movies"], "shift": ["tweetz", "amazon"]})
    v = judge(run, pol)
    worst = next(o for o in v.outcomes if o.rule == "shift_worst")
    assert worst.suite == "worst(tweetz, amazon, tweets)" and not worst.passed
    assert "typo? the closest suite of the run is 'tweets'" in worst.reason
    why = suite_selection(v)
    assert set(why) == {"shift_worst"}  # a rule's own list needs no explanation
    assert why["shift_worst"].startswith("'shift' = tweetz, amazon declared in the policy's suites.shift; "
                                         "tweets added: shift suite of the run that the policy does not declare")
    assert f"- `shift_worst`: {why['shift_worst']}" in verdict_to_markdown(v)
    assert f"  suites of shift_worst: {why['shift_worst']}" in failed_rule_lines(v)
    undeclared = suite_selection(judge(run, policy(rule(name="s", suites="shift", max_drop=0.05))))["s"]
    assert "'shift' = amazon, tweets added: shift suites of the run (the policy declares no suites" in undeclared


def test_underpowered_margin_fails_or_warns(tmp_path):
    rng = np.random.default_rng(3)
    ref = rng.random(300) < 0.8
    run = tiny_run(tmp_path, ref, derived_mask(rng, ref, 0.8, 0.8, 0.25))
    o = only(judge(run, policy(rule(max_drop=0.02), on_underpowered="fail")))
    assert not o.passed and o.reason.startswith("underpowered") or "underpowered" in o.reason
    assert o.info["min_detectable_effect"] > 0.02
    w = only(judge(run, policy(rule(max_drop=0.10), on_underpowered="fail")))
    assert "underpowered" not in w.reason and w.info["min_detectable_effect"] < 0.10
    warned = only(judge(run, policy(rule(max_drop=0.02), on_underpowered="warn")))
    assert "underpowered" in warned.info["warning"] and "underpowered" not in warned.reason


def test_class_recall_floor_catches_a_one_class_model(tmp_path):
    rng = np.random.default_rng(4)
    ids, src, labels = suite_rows("movies", 300, 2, rng)
    one_class = np.zeros((len(labels), 2), np.float32)
    one_class[:, 1] = 1.0  # always predicts class 1
    good = logits_for(labels, rng.random(len(labels)) < 0.85, rng)
    run = build_run(tmp_path, {"movies": {"base": (ids, src, labels, good),
                                          "alpha=0.5": (ids, src, labels, one_class)}})
    r = rule(kind="class_recall_floor", floor=0.5)
    o = only(judge(run, policy(r)))
    assert not o.passed and o.value == 0.0 and o.info["per_class"][1]["recall"] == 1.0
    run2 = build_run(tmp_path / "good", {"movies": {"base": (ids, src, labels, good),
                                                    "alpha=0.5": (ids, src, labels, good)}})
    o2 = only(judge(run2, policy(r)))
    assert o2.passed and o2.value > 0.75 and o2.bound <= o2.value
    assert o2.bound == pytest.approx(min(o2.info["bootstrap_bound"], o2.info["exact_bound"]))


def test_class_recall_floor_takes_no_metric():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="remove metric"):
        policy(rule(kind="class_recall_floor", floor=0.5, metric="accuracy"))
    with pytest.raises(ValidationError, match="declared both id and shift"):
        policy(rule(), suites={"id": ["a"], "shift": ["a"]})


def test_gate_uses_of_test_splits_are_counted_in_the_verdict(tmp_path):
    from harness.gate import note_split_uses

    run = build_run(tmp_path / "run", standard_data())
    pol = policy(rule(suites="shift", max_drop=0.05))
    for k in (1, 2):
        v = judge(run, pol)
        counts = note_split_uses(v, run, root=tmp_path / "store")
        assert counts == {"amazon/test": k, "tweets/test": k}  # movies was not judged
        assert {o.suite: o.info["test_split_uses"] for o in v.outcomes} == {
            "tweets": {"tweets/test": k}, "amazon": {"amazon/test": k}}


def test_no_disagreement_in_a_few_examples_is_underpowered_not_detectable_to_zero(tmp_path):
    """CI trial (2026-12-01): 8 examples on which candidate and base agreed everywhere gave se 0, a minimum
    detectable effect of 0 and a pass "at 90%" with no underpowered warning. With no discordant pair the se comes
    from the median-unbiased discordance rate (1 - 0.5 ** (1 / n)); many examples still pass."""
    right = np.r_[np.ones(6, bool), np.zeros(2, bool)]
    run = tiny_run(tmp_path / "eight", right, right.copy())
    o = only(judge(run, policy(rule(max_drop=0.10, min_clusters=1), on_underpowered="fail", confidence=0.90)))
    d = 1 - 0.5 ** (1 / 8)
    assert o.info["se"] == pytest.approx(np.sqrt(d / 8)) and "no discordant pair" in o.info["se_from"]
    assert o.info["min_detectable_effect"] > 0.10 and not o.passed and "underpowered" in o.reason
    # the message says where its se came from (trial: "se 0.1019" beside scores that never differed)
    assert "from the no-disagreement floor: no discordant pair was seen" in o.reason
    rng = np.random.default_rng(5)
    big = rng.random(3000) < 0.8
    o = only(judge(tiny_run(tmp_path / "big", big, big.copy()), policy(rule(max_drop=0.02), on_underpowered="fail")))
    assert o.passed and o.info["min_detectable_effect"] < 0.01 and "se_from" in o.info
    o = only(judge(tiny_run(tmp_path / "some", big, derived_mask(rng, big, 0.8, 0.8, 0.05)),
                   policy(rule(max_drop=0.05), on_underpowered="fail")))
    assert "se_from" not in o.info  # discordant pairs: the bootstrap's own se


def test_the_agreement_floor_counts_clusters_and_covers_rules_over_several_suites():
    """Review: the floor applied to one-suite rules only (a mean or worst rule over agreeing suites kept se 0),
    and counted examples where clustered examples are fewer independent units."""
    import types

    from harness.gate import _agreement_floor
    from harness.metrics.evidence import agreement_se
    from harness.spec.policy import Rule

    def stat(n, clusters, signs=(0, 0)):
        return types.SimpleNamespace(n=n, signs=signs, info={"n_clusters": clusters})

    each = Rule.model_validate(rule(max_drop=0.02))
    floor, why = _agreement_floor(each, {"a": stat(5000, 50)})
    assert floor == pytest.approx(agreement_se(50)) and "a 50" in why  # 50 documents of 100 examples
    mean = Rule.model_validate(rule(suites="shift", aggregate="mean", max_drop=0.02))
    floor, _ = _agreement_floor(mean, {"a": stat(400, 400), "b": stat(100, 100)})
    assert floor == pytest.approx(np.hypot(agreement_se(400), agreement_se(100)) / 2)
    worst = Rule.model_validate(rule(suites="shift", aggregate="worst", max_drop=0.02))
    assert _agreement_floor(worst, {"a": stat(400, 400), "b": stat(100, 100)})[0] == pytest.approx(agreement_se(100))
    assert _agreement_floor(worst, {"a": stat(400, 400), "b": stat(100, 100, (1, 0))}) == (None, None)
    assert _agreement_floor(worst, {"a": stat(400, 400, None)}) == (None, None)  # no right-or-wrong pairing
