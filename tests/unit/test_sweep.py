"""Tests of harness.sweep: selection policies on hand-made score tables, the Pareto front, alpha parsing, the
adaptive search and the output-space ensemble. Pure: no torch, no models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.errors import SpecError
from harness.records import MetricValue, SplitRef, SplitResult, SplitRole, SuiteRole
from harness.sweep import (DEFAULT_GRID, POLICIES, TIE_BREAK, SelectionPolicy, adaptive_alphas, ensemble_logits,
                           pareto_front, parse_alphas, select_alpha, validation_scores)

GRID = [0.0, 0.25, 0.5, 0.75, 1.0]
ID_VAL = SplitRef("id", "validation", SplitRole.VALIDATION, SuiteRole.ID)
ID_TEST = SplitRef("id", "test", SplitRole.TEST, SuiteRole.ID)
SH1_VAL = SplitRef("sh1", "validation", SplitRole.VALIDATION, SuiteRole.SHIFT)
SH1_VAL2 = SplitRef("sh1", "validation2", SplitRole.VALIDATION, SuiteRole.SHIFT)
SH1_TEST = SplitRef("sh1", "test", SplitRole.TEST, SuiteRole.SHIFT)
SH2_VAL = SplitRef("sh2", "validation", SplitRole.VALIDATION, SuiteRole.SHIFT)


def table(ids, shifts=None):
    """(id_score, shift_score) dicts over GRID."""
    return dict(zip(GRID, ids)), dict(zip(GRID, shifts if shifts is not None else [None] * len(GRID)))


def select(ids, shifts, **policy):
    i, s = table(ids, shifts)
    return select_alpha(i, s, SelectionPolicy(**policy), ["id/validation"])


# ------------------------------------------------------------------------------------------------ policies --

def test_default_policy_maximises_shift_within_id_tolerance():
    ids = [0.80, 0.86, 0.90, 0.895, 0.85]
    shifts = [0.60, 0.70, 0.65, 0.66, 0.75]
    sel = select(ids, shifts)
    assert sel.policy.name == "max-shift-within-id" and sel.policy.tolerance == 0.01
    assert sel.feasible == {0.0: False, 0.25: False, 0.5: True, 0.75: True, 1.0: False}
    assert sel.chosen_alpha == 0.75  # best shift among ID >= 0.89; 1.0 has better shift but is infeasible
    assert sel.objective[1.0] == 0.75
    assert sel.id_score[0.5] == 0.90 and sel.shift_score[0.75] == 0.66


def test_tolerance_boundary_is_inclusive():
    ids = [0.70, 0.80, 0.90, 0.88, 0.85]
    shifts = [0.5, 0.5, 0.5, 0.9, 0.6]
    assert select(ids, shifts, tolerance=0.02).chosen_alpha == 0.75  # 0.88 == 0.90 - 0.02 exactly: feasible
    assert select(ids, shifts, tolerance=0.0199).chosen_alpha == 0.5
    assert select(ids, shifts, tolerance=0.0).chosen_alpha == 0.5
    assert select(ids, shifts, tolerance=1.0).chosen_alpha == 0.75


def test_ties_go_to_the_smaller_alpha():
    assert select([0.9] * 5, [0.5, 0.7, 0.7, 0.7, 0.6]).chosen_alpha == 0.25
    assert select([0.9] * 5, [0.5, 0.7, 0.7 + 1e-12, 0.7, 0.6]).chosen_alpha == 0.25  # within 1e-9: a tie
    assert select([0.9] * 5, [0.5, 0.7, 0.7 + 1e-6, 0.7, 0.6]).chosen_alpha == 0.5  # beyond: not a tie
    assert select([0.8, 0.9, 0.9, 0.9, 0.7], None, name="id-only").chosen_alpha == 0.25
    assert select([0.5] * 5, [0.5] * 5, name="weighted").chosen_alpha == 0.0
    assert "smallest alpha" in TIE_BREAK


def test_weighted_policy_with_extreme_weights():
    ids = [0.60, 0.80, 0.90, 0.85, 0.70]
    shifts = [0.95, 0.90, 0.60, 0.65, 0.50]
    assert select(ids, shifts, name="weighted", weight=1.0).chosen_alpha == 0.5  # ID only
    assert select(ids, shifts, name="weighted", weight=0.0).chosen_alpha == 0.0  # shift only
    sel = select(ids, shifts, name="weighted", weight=0.5)
    assert sel.chosen_alpha == 0.25  # 0.85 beats 0.775, 0.75, 0.75, 0.6
    assert sel.objective[0.25] == pytest.approx(0.85)
    assert all(sel.feasible.values())


def test_id_only_ignores_shift_scores():
    sel = select([0.6, 0.7, 0.95, 0.9, 0.8], None, name="id-only")
    assert sel.chosen_alpha == 0.5 and sel.policy.params == {}


@pytest.mark.parametrize("name", ["max-shift-within-id", "weighted"])
def test_missing_shift_validation_points_to_id_only(name):
    with pytest.raises(SpecError, match=r"(?s)shift validation split.*--select id-only"):
        select([0.6, 0.7, 0.95, 0.9, 0.8], None, name=name)


def test_policy_parameters_are_validated():
    with pytest.raises(SpecError, match=r"(?s)max-shift-within-id"):
        SelectionPolicy(name="max-shift")  # unknown: the choices are listed
    with pytest.raises(SpecError, match="--tolerance"):
        SelectionPolicy(tolerance=-0.1)
    with pytest.raises(SpecError, match="--weight"):
        SelectionPolicy(name="weighted", weight=1.5)
    with pytest.raises(SpecError, match="--weight"):
        SelectionPolicy(name="weighted", weight=float("nan"))
    assert SelectionPolicy(name="weighted", weight=0.3).params == {"weight": 0.3}
    assert set(POLICIES) == {"max-shift-within-id", "weighted", "id-only"}


# ------------------------------------------------------------------------------------- validation_scores --

def _result(**metrics) -> SplitResult:
    return SplitResult(n=100, n_truncated=0, n_dropped=0,
                       metrics={k: MetricValue(v, v, v, k not in ("nll", "ece")) for k, v in metrics.items()})


def test_validation_scores_use_validation_splits_only_and_macro_average_shift_suites():
    results = {}
    for a in (0.0, 1.0):
        results[a] = {
            ID_VAL: _result(accuracy=0.8 + 0.1 * a),
            ID_TEST: _result(accuracy=0.0),  # a test split: must never count
            SH1_VAL: _result(accuracy=0.6),
            SH1_VAL2: _result(accuracy=0.4),  # suite sh1: mean 0.5
            SH1_TEST: _result(accuracy=0.0),
            SH2_VAL: _result(accuracy=0.9 - 0.2 * a),
        }
    refs = list(results[0.0])
    ids, shifts, on = validation_scores(results, refs, "accuracy")
    assert ids == {0.0: pytest.approx(0.8), 1.0: pytest.approx(0.9)}
    assert shifts[0.0] == pytest.approx((0.5 + 0.9) / 2)  # suites weigh equally, not splits
    assert shifts[1.0] == pytest.approx((0.5 + 0.7) / 2)
    assert on == ["id/validation", "sh1/validation", "sh1/validation2", "sh2/validation"]
    assert not any(k.endswith("/test") for k in on)


def test_lower_is_better_metrics_are_negated():
    results = {a: {ID_VAL: _result(nll=nll), SH1_VAL: _result(nll=2 * nll)}
               for a, nll in ((0.0, 0.9), (0.5, 0.3), (1.0, 0.5))}
    ids, shifts, _ = validation_scores(results, list(results[0.0]), "nll")
    assert ids == {0.0: -0.9, 0.5: -0.3, 1.0: -0.5}
    assert shifts == {0.0: -1.8, 0.5: -0.6, 1.0: -1.0}
    assert select_alpha(ids, shifts, SelectionPolicy(metric="nll"), []).chosen_alpha == 0.5  # lowest nll wins


def test_no_shift_validation_gives_none_and_no_id_validation_is_an_error():
    results = {0.0: {ID_VAL: _result(accuracy=0.8), SH1_TEST: _result(accuracy=0.5)}}
    ids, shifts, on = validation_scores(results, list(results[0.0]), "accuracy")
    assert shifts == {0.0: None} and on == ["id/validation"]
    with pytest.raises(SpecError, match="ID validation split"):
        validation_scores({0.0: {ID_TEST: _result(accuracy=0.8)}}, [ID_TEST], "accuracy")


def test_missing_selection_metric_is_an_error():
    results = {0.0: {ID_VAL: _result(accuracy=0.8)}}
    with pytest.raises(SpecError, match=r"(?s)macro_f1.*id/validation"):
        validation_scores(results, [ID_VAL], "macro_f1")


# ------------------------------------------------------------------------------------------------- pareto --

def test_pareto_front_on_a_hand_made_curve():
    ids = {0.0: 0.70, 0.25: 0.80, 0.5: 0.90, 0.75: 0.85, 1.0: 0.90}
    shifts = {0.0: 0.80, 0.25: 0.75, 0.5: 0.70, 0.75: 0.60, 1.0: 0.65}
    # 0.75 is dominated by 0.5 (better on both); 1.0 by 0.5 (equal ID, better shift)
    assert pareto_front(ids, shifts) == [0.0, 0.25, 0.5]


def test_pareto_front_agrees_with_brute_force(rng):
    for _ in range(50):
        alphas = list(DEFAULT_GRID)
        ids = dict(zip(alphas, np.round(rng.uniform(size=11), 2)))
        shifts = dict(zip(alphas, np.round(rng.uniform(size=11), 2)))
        want = [a for a in alphas if not any(
            ids[b] >= ids[a] and shifts[b] >= shifts[a] and (ids[b] > ids[a] or shifts[b] > shifts[a])
            for b in alphas)]
        assert pareto_front(ids, shifts) == want
        chosen = select_alpha(ids, shifts, SelectionPolicy(name="weighted"), []).chosen_alpha
        assert chosen in want  # a weighted optimum is never dominated


def test_pareto_front_without_shift_scores_is_the_best_id():
    assert pareto_front({0.0: 0.5, 0.5: 0.9, 1.0: 0.9}, {0.0: None, 0.5: None, 1.0: None}) == [0.5, 1.0]


def test_identical_points_are_both_on_the_front():
    assert pareto_front({0.0: 0.5, 1.0: 0.5}, {0.0: 0.5, 1.0: 0.5}) == [0.0, 1.0]


# -------------------------------------------------------------------------------------------- parse_alphas --

def test_parse_alphas_default_grid_is_canonical():
    grid = parse_alphas(None)
    assert grid == DEFAULT_GRID and len(grid) == 11
    assert grid[3] == 0.3 and 0.30000000000000004 not in grid  # 3 / 10 * ... never leaks float noise
    assert all(repr(a) == repr(round(a, 1)) for a in grid)


def test_parse_alphas_canonicalises_sorts_dedups_and_adds_endpoints():
    assert parse_alphas("0.5,0.25") == (0.0, 0.25, 0.5, 1.0)
    assert parse_alphas("0.30000000000000004, 0.3,0.3") == (0.0, 0.3, 1.0)
    assert parse_alphas([0.1 + 0.2, 1.0]) == (0.0, 0.3, 1.0)
    assert parse_alphas(" adaptive ") == "adaptive"
    assert parse_alphas("1e-1") == (0.0, 0.1, 1.0)
    assert parse_alphas("0.1234567") == (0.0, 0.123457, 1.0)


@pytest.mark.parametrize("bad", ["abc", "0.5,x", "1.5", "-0.1", "nan", "inf", "0.2;0.4", [0.5, 2]])
def test_parse_alphas_refuses_bad_values(bad):
    with pytest.raises(SpecError, match="--alphas"):
        parse_alphas(bad)


# ------------------------------------------------------------------------------------------------ adaptive --

SHAPES = {
    "tent": lambda a, p: -abs(a - p),
    "parabola": lambda a, p: -(a - p) ** 2,
    "steep-left": lambda a, p: -(3 * (p - a) if a < p else 0.5 * (a - p)),
    "steep-right": lambda a, p: -(0.5 * (p - a) if a < p else 3 * (a - p)),
    "plateau": lambda a, p: -max(0.0, abs(a - p) - 0.05),
}


def _adaptive(objective, policy=SelectionPolicy(name="id-only"), shift=None):
    ids, shifts = {}, {}

    def evaluate(a):
        assert a not in ids, f"alpha {a} evaluated twice"
        ids[a] = objective(a)
        shifts[a] = shift(a) if shift else None

    def current():
        return select_alpha(dict(ids), dict(shifts), policy, [])

    done = adaptive_alphas(evaluate, current)
    return done, current().chosen_alpha


def _dense(objective, policy=SelectionPolicy(name="id-only"), shift=None):
    return select_alpha({a: objective(a) for a in DEFAULT_GRID},
                        {a: shift(a) if shift else None for a in DEFAULT_GRID}, policy, []).chosen_alpha


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("peak", range(11))
def test_adaptive_search_is_cheap_and_close_to_the_dense_grid(shape, peak):
    p = peak / 10
    f = lambda a: SHAPES[shape](a, p)  # noqa: E731
    done, chosen = _adaptive(f)
    assert done[:3] == [0.0, 1.0, 0.5]
    assert len(done) <= 6 < len(DEFAULT_GRID)
    assert set(done) <= set(DEFAULT_GRID)  # canonical grid points only
    assert abs(chosen - _dense(f)) <= 0.1 + 1e-9


@pytest.mark.parametrize("policy", [SelectionPolicy(), SelectionPolicy(name="weighted", weight=0.3)])
def test_adaptive_search_with_shift_policies(policy):
    for i, j in itertools.product(range(0, 11, 2), range(0, 11, 2)):
        idf = lambda a: 0.9 - 0.3 * abs(a - i / 10)  # noqa: E731
        shf = lambda a: 0.6 - 0.3 * abs(a - j / 10)  # noqa: E731
        done, chosen = _adaptive(idf, policy, shf)
        assert len(done) <= 6
        assert abs(chosen - _dense(idf, policy, shf)) <= 0.1 + 1e-9, (i, j)


def test_adaptive_search_respects_the_budget():
    done, _ = _adaptive(lambda a: -abs(a - 0.4))
    assert len(done) <= 6
    ids = {}
    few = adaptive_alphas(lambda a: ids.__setitem__(a, -abs(a - 0.4)),
                          lambda: select_alpha(dict(ids), {a: None for a in ids}, SelectionPolicy(name="id-only"), []),
                          budget=4)
    assert len(few) == 4


# ------------------------------------------------------------------------------------------------ ensemble --

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ensemble_endpoints_are_the_models_probabilities(rng):
    zb = rng.normal(size=(20, 3)).astype(np.float32) * 3
    za = rng.normal(size=(20, 3)).astype(np.float32) * 3
    np.testing.assert_allclose(_softmax(ensemble_logits(zb, za, 0.0)), _softmax(zb.astype(np.float64)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_softmax(ensemble_logits(zb, za, 1.0)), _softmax(za.astype(np.float64)),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_ensemble_mixes_probabilities_and_rows_sum_to_one(rng, alpha):
    zb = rng.normal(size=(30, 4)) * 5
    za = rng.normal(size=(30, 4)) * 5
    out = ensemble_logits(zb, za, alpha)
    assert out.dtype == np.float32 and out.shape == (30, 4)
    p = np.exp(out.astype(np.float64))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p, (1 - alpha) * _softmax(zb) + alpha * _softmax(za), rtol=1e-5, atol=1e-7)


def test_ensemble_survives_extreme_logits():
    zb = np.array([[1000.0, -1000.0]], dtype=np.float32)
    za = np.array([[-1000.0, 1000.0]], dtype=np.float32)
    out = ensemble_logits(zb, za, 0.0)
    assert np.isfinite(out).all()
    assert np.argmax(out) == 0
    np.testing.assert_allclose(np.exp(ensemble_logits(zb, za, 0.5)), [[0.5, 0.5]], rtol=1e-6)


def test_adaptive_search_finds_the_constraint_of_max_shift_within_id():
    # validation scores measured on the quick demo (VADER, 300 sentences per split): ID accuracy peaks at alpha 0.3
    # while mean shift accuracy keeps rising to alpha 1, so the feasible region (ID >= best ID - 0.01) sits at low
    # alpha; climbing the shift objective alone ends at alpha 1 (it did, before the best-ID anchor)
    ids = {0.0: 0.7933, 0.1: 0.8033, 0.2: 0.81, 0.3: 0.8167, 0.4: 0.8067, 0.5: 0.7967, 0.6: 0.7967, 0.7: 0.7933,
           0.8: 0.8, 0.9: 0.8, 1.0: 0.7967}
    shifts = {0.0: 0.7731, 0.1: 0.7786, 0.2: 0.7831, 0.3: 0.792, 0.4: 0.792, 0.5: 0.7976, 0.6: 0.8009,
              0.7: 0.8054, 0.8: 0.8054, 0.9: 0.8131, 1.0: 0.8131}
    policy = SelectionPolicy()
    done, chosen = _adaptive(lambda a: ids[a], policy, lambda a: shifts[a])
    assert len(done) <= 6
    assert abs(chosen - _dense(lambda a: ids[a], policy, lambda a: shifts[a])) <= 0.1 + 1e-9


# ------------------------------------------------------------------------- which suites select, on what scale --

def _suite(name: str, role: str, task: dict | str = "classification", **kw):
    from harness.spec.schema import Suite

    base = {"kind": "suite", "name": name, "role": role, "source": {"type": "local", "files": ["x.csv"]},
            "splits": [{"name": "validation", "role": "validation", "fraction": 0.5},
                       {"name": "test", "role": "test", "fraction": 0.5}]}
    if role == "shift":
        base["shift_type"] = "natural"
    if task == "classification":
        base["classes"] = ["a", "b"]
    else:
        base["task"] = task
    return Suite.model_validate({**base, **kw}), None


MC = {"kind": "multiple_choice", "prompt": {"template": "{{ q }}"}, "choices": {"fields": ["a", "b"]},
      "gold": {"index": "y"}}
GEN = {"kind": "generation", "prompt": {"template": "{{ q }}"}, "gold": {"text": "y"}, "max_new_tokens": 8}
PPL = {"kind": "perplexity", "text": "t"}


def test_a_shift_score_over_metrics_of_different_scales_is_refused_before_any_model_with_the_ways_out():
    """New-user trial (2026-12-01): acc_norm, exact_match and bits_per_byte shift suites were averaged into one
    shift score (bits_per_byte outweighed the rest and chose alpha). Shares of examples may average; another scale
    is refused, naming each suite's metric, unless the suite is left out of the selection."""
    from harness.sweep import check_selectable

    suites = [_suite("mine", "id", MC), _suite("mc2", "shift", MC), _suite("gen", "shift", GEN),
              _suite("ppl", "shift", PPL)]
    with pytest.raises(SpecError) as e:
        check_selectable(suites)
    text = str(e.value)
    assert "shift score that selects alpha would average metrics of different scales" in text
    assert "ppl: bits_per_byte (0 to inf, lower is better)" in text and "gen: exact_match" in text
    assert "in_selection: false` in ppl" in text
    check_selectable(suites[:3])  # acc_norm and exact_match: both shares of examples
    check_selectable([suites[0], suites[3]])  # one metric for the whole shift role, whatever its scale
    check_selectable(suites[:3] + [_suite("ppl", "shift", PPL, in_selection=False)])
    check_selectable([_suite("p1", "id", PPL), _suite("p2", "shift", PPL)], metric="bits_per_byte")  # one metric
    # a --select-metric a selecting suite does not compute is refused here too, naming what each computes (trial:
    # it was refused only after every alpha was scored)
    with pytest.raises(SpecError, match="--select-metric bits_per_byte is not among the metrics of mine, mc2, gen"):
        check_selectable(suites, metric="bits_per_byte")
    check_selectable(suites, policy="id-only")  # the shift score moves nothing under id-only
    # the ID group too; and an ID suite left out of the selection does not count as one
    with pytest.raises(SpecError, match="the id score"):
        check_selectable([suites[0], _suite("ppl-id", "id", PPL), suites[1]])
    with pytest.raises(SpecError, match="that selects alpha"):
        check_selectable([_suite("mine", "id", MC, in_selection=False), suites[1]])
    # weighted adds the two scores: an ID bits_per_byte beside a shift acc_norm is refused
    with pytest.raises(SpecError, match="weighted policy's sum"):
        check_selectable([_suite("ppl-id", "id", PPL), suites[1]], policy="weighted")
    check_selectable([_suite("ppl-id", "id", PPL), suites[1]])  # max-shift-within-id compares each on its own
    # a policy that weighs shift needs a shift suite that selects: refused before any model, not after
    with pytest.raises(SpecError, match="no shift suite selects alpha"):
        check_selectable([suites[0], _suite("ppl", "shift", PPL, in_selection=False)])
    check_selectable([suites[0]], policy="id-only")
    # new-user trial: an ID suite alone, or shift suites without a validation split, used to fail only after every
    # alpha was scored ("add validation splits to the shift suites"); now before any model
    with pytest.raises(SpecError, match="needs a shift validation split") as e:
        check_selectable([suites[0]])
    assert "no shift suite among mine (role: id)" in str(e.value) and "--select id-only" in str(e.value)
    test_only = _suite("mc2", "shift", MC, splits=[{"name": "test", "role": "test", "fraction": 1.0}])
    with pytest.raises(SpecError, match="needs a shift validation split") as e:
        check_selectable([suites[0], test_only], policy="weighted")
    assert "mc2: test (role: test)" in str(e.value)


def test_a_derived_suite_counts_by_its_parent_splits_roles():
    """A suite derived from the ID suite's test split never selects, so its metric cannot make a mix (review of
    the first version, which counted every derived suite); one derived from a validation split does."""
    from harness.sweep import check_selectable

    idsuite, shift = _suite("mine", "id"), _suite("sh", "shift")  # classification: accuracy
    derived = {"kind": "suite", "name": "noisy", "role": "shift", "shift_type": "synthetic", "classes": ["a", "b"],
               "transforms": [{"name": "typos", "params": {"rate": 0.1}}], "select_metric": "nll",
               "metrics": ["accuracy", "nll"]}
    from harness.spec.schema import Suite

    on_test = Suite.model_validate({**derived, "derived_from": {"suite": "mine", "split": "test"}})
    on_val = Suite.model_validate({**derived, "derived_from": {"suite": "mine", "split": "validation"}})
    check_selectable([idsuite, shift, (on_test, None)])
    with pytest.raises(SpecError, match="different scales"):
        check_selectable([idsuite, shift, (on_val, None)])
    # --select-metric: a derived suite whose parent is not given may never select, so it is left to the scoring
    # (review); one whose parent's validation split it takes must compute the metric
    orphan = Suite.model_validate({**derived, "derived_from": {"suite": "elsewhere", "split": "test"}})
    ids = _suite("mine", "id", metrics=["accuracy", "balanced_accuracy"])
    shs = _suite("sh", "shift", metrics=["accuracy", "balanced_accuracy"])
    check_selectable([ids, shs, (orphan, None)], metric="balanced_accuracy")
    with pytest.raises(SpecError, match="--select-metric balanced_accuracy is not among the metrics of noisy"):
        check_selectable([ids, shs, (on_val, None)], metric="balanced_accuracy")


def test_a_suite_left_out_of_the_selection_does_not_move_the_scores():
    results = {a: {ID_VAL: _result(accuracy=0.8), SH1_VAL: _result(accuracy=0.6 + 0.1 * a),
                   SH2_VAL: _result(accuracy=0.1 - 0.1 * a)} for a in (0.0, 1.0)}
    refs = list(results[0.0])
    ids, shifts, on = validation_scores(results, refs, {"id": "accuracy", "sh1": "accuracy"})  # sh2 left out
    assert shifts == {0.0: pytest.approx(0.6), 1.0: pytest.approx(0.7)} and "sh2/validation" not in on
    _, both, _ = validation_scores(results, refs, {"id": "accuracy", "sh1": "accuracy", "sh2": "accuracy"})
    assert both[1.0] == pytest.approx(0.35)
