"""Gate policy schema: shipped policies validate; defaults; every cross-field rule; NaN thresholds rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.errors import SpecError
from harness.spec.load import load_spec, problems_of
from harness.spec.policy import (Aggregate, CandidateChoice, GatePolicy, Mode, Reference, RuleKind,
                                 policy_suite_notes, policy_suite_warnings)

POLICIES = Path(__file__).resolve().parents[2] / "suites" / "policies"


def make(*rules: dict, **kw) -> GatePolicy:
    return GatePolicy.model_validate({"kind": "policy", "name": "p", **kw, "rules": list(rules)})


def delta(**kw) -> dict:
    return {"name": "r", "kind": "delta", "metric": "accuracy", "suites": "id", "max_drop": 0.02, **kw}


def problems(*rules: dict, **kw) -> list[str]:
    with pytest.raises(ValidationError) as e:
        make(*rules, **kw)
    return problems_of(e.value)


@pytest.mark.parametrize("name", ["release.yaml", "demo.yaml"])
def test_shipped_policies_validate(name):
    pol = load_spec(POLICIES / name, kind="policy")
    assert isinstance(pol, GatePolicy) and pol.rules and pol.candidate is CandidateChoice.CHOSEN
    assert not pol.needs_baseline
    # every shipped policy refuses tiny splits and names the suites it is written for
    assert all(r.min_n for r in pol.rules)
    assert pol.suites is not None and pol.suites.id and pol.suites.shift


def test_release_policy_is_demanding():
    pol = load_spec(POLICIES / "release.yaml")
    kinds = {r.kind for r in pol.rules}
    assert kinds == {RuleKind.DELTA, RuleKind.CEILING, RuleKind.NEGATIVE_FLIPS, RuleKind.CLASS_RECALL_FLOOR}
    assert all(r.mode is Mode.BOUND and r.min_n for r in pol.rules)
    assert {r.suites for r in pol.rules} == {"id", "shift"}
    assert pol.on_underpowered == "fail" and pol.min_clusters >= 50
    # margins of 2 points on every accuracy rule at 93% one-sided confidence (sized by harness gate --plan and
    # benchmarks/bench_gate_power.py)
    assert all(r.max_drop == 0.02 for r in pol.rules if r.kind is RuleKind.DELTA) and pol.confidence == 0.93


def test_defaults():
    pol = make(delta())
    r = pol.rules[0]
    assert (pol.candidate, pol.confidence, pol.n_resamples, pol.seed) == (CandidateChoice.CHOSEN, 0.95, 2000, 0)
    assert (r.split, r.aggregate, r.mode, r.reference) == ("test", Aggregate.EACH, Mode.BOUND, None)
    assert r.resolved_reference is Reference.BASE and r.threshold == -0.02 and r.at_least


def test_thresholds_and_directions_of_each_kind():
    pol = make(delta(name="a", max_drop=None, min_delta=-0.01),
               {"name": "b", "kind": "floor", "metric": "accuracy", "suites": "shift", "floor": 0.7},
               {"name": "c", "kind": "ceiling", "metric": "ece", "suites": ["x", "y"], "ceiling": 0.1},
               {"name": "d", "kind": "negative_flips", "suites": "id", "max_rate": 0.1, "reference": "baseline"})
    a, b, c, d = pol.rules
    assert (a.threshold, b.threshold, c.threshold, d.threshold) == (-0.01, 0.7, 0.1, 0.1)
    assert (a.at_least, b.at_least, c.at_least, d.at_least) == (True, True, False, False)
    assert b.resolved_reference is None and d.resolved_reference is Reference.BASELINE and pol.needs_baseline


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "-inf"])
@pytest.mark.parametrize("field", ["max_drop", "min_delta"])
def test_nan_or_infinite_threshold_rejected(field, value):
    rule = {**delta(max_drop=None), field: value}
    assert any(p.startswith(f"rules.0.{field}:") for p in problems(rule))


def test_nan_threshold_in_yaml_file_is_a_spec_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("kind: policy\nname: p\nrules:\n  - {name: r, kind: floor, metric: accuracy, suites: id, "
                 "floor: .nan}\n")
    with pytest.raises(SpecError, match=r"rules\.0\.floor: a threshold must be a finite number"):
        load_spec(f)


@pytest.mark.parametrize("rule,text", [
    (delta(min_delta=0.0), "exactly one of min_delta"),
    (delta(max_drop=None), "exactly one of min_delta"),
    (delta(max_drop=-0.01), "greater than or equal to 0"),
    (delta(metric=None), "needs metric"),
    (delta(metric="acuracy"), "got 'acuracy' (did you mean 'accuracy'?)"),
    (delta(metric="evaluate:f1"), "built-in metric"),
    (delta(floor=0.5), "not floor"),
    ({"name": "r", "kind": "floor", "metric": "accuracy", "suites": "id"}, "needs floor"),
    ({"name": "r", "kind": "floor", "metric": "accuracy", "suites": "id", "floor": 0.5, "reference": "base"},
     "absolute; remove reference"),
    ({"name": "r", "kind": "ceiling", "metric": "ece", "suites": "id", "floor": 0.5}, "not floor"),
    ({"name": "r", "kind": "negative_flips", "suites": "id", "max_rate": 0.1, "metric": "accuracy"},
     "remove metric"),
    ({"name": "r", "kind": "negative_flips", "suites": "id", "max_rate": 1.5}, "less than or equal to 1"),
    ({"name": "r", "kind": "negative_flips", "suites": "id"}, "needs max_rate"),
    (delta(suites=[]), "at least one suite"),
    (delta(suites=["a", "a"]), "repeated"),
    (delta(suites="ood"), "suites"),
    (delta(aggregate="median"), "aggregate"),
    (delta(mode="strict"), "mode"),
    (delta(min_n=0), "greater than or equal to 1"),
    (delta(name="bad name"), "names must start with a letter"),
    (delta(thresold=0.1), "unknown key"),
])
def test_invalid_rules(rule, text):
    assert any(text in p for p in problems(rule)), problems(rule)


@pytest.mark.parametrize("kw,text", [
    ({"confidence": 0.5}, "confidence"), ({"confidence": 1.0}, "confidence"),
    ({"confidence": float("nan")}, "confidence"), ({"n_resamples": 100}, "n_resamples"),
    ({"seed": -1}, "seed"), ({"candidate": "blend"}, "candidate"), ({"kind": "suite"}, "kind"),
    ({"schema_version": 2}, "schema_version"), ({"extra": 1}, "extra: unknown key"),
])
def test_invalid_policy_fields(kw, text):
    assert any(p.startswith(text) for p in problems(delta(), **kw)), problems(delta(), **kw)


def test_rules_required_and_unique():
    assert any("rules" in p for p in problems())
    assert any("unique" in p for p in problems(delta(), delta()))


def test_adapted_candidate_cannot_be_its_own_reference():
    assert any("with itself" in p for p in problems(delta(reference="adapted"), candidate="adapted"))
    assert make(delta(reference="base"), candidate="adapted").candidate is CandidateChoice.ADAPTED


def test_policy_is_frozen():
    pol = make(delta())
    with pytest.raises(ValidationError):
        pol.seed = 3
    with pytest.raises(ValidationError):
        pol.rules[0].max_drop = 0.5


def test_unknown_key_names_the_valid_keys_and_the_keys_it_could_mean(tmp_path):
    """``min:`` instead of ``floor:`` (issue 19 trial): the message names the rule's threshold keys a lower limit
    could mean, never steers to ``min_n`` (the sample-size floor) by spelling, and lists the rule's keys."""
    p = tmp_path / "p.yaml"
    p.write_text("kind: policy\nname: p\nrules:\n  - {name: r, kind: floor, metric: accuracy, suites: id, "
                 "min: 0.8}\n  - {name: s, kind: delta, metric: accuracy, suites: id, max_drop: 0.02, "
                 "thresold: 0.1}\n  - {name: t, kind: ceiling, metric: ece, suites: id, max: 0.1}\n"
                 "  - {name: u, kind: floor, metric: accuracy, suites: id, flor: 0.8}\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    lines = {ln.strip().split(":")[0]: ln.strip() for ln in str(e.value).splitlines()[1:]}
    low = lines["rules.0.min"]
    assert low.startswith("rules.0.min: unknown key 'min' (did you mean 'floor' (floor: value at least this")
    assert "or 'min_delta' (delta: gain at least this" in low
    assert "closest valid key: 'min_n'" not in low and "Not 'min_n' (fail when a suite's split has fewer" in low
    assert "valid keys here: aggregate, ceiling, description, floor, kind, max_drop" in low
    for key in ("min_delta", "max_drop", "floor", "ceiling", "max_rate"):  # a misspelt "threshold": every one
        assert f"'{key}' (" in lines["rules.1.thresold"]
    high = lines["rules.2.max"].split("valid keys here")[0]
    assert all(f"'{k}' (" in high for k in ("ceiling", "max_drop", "max_rate")) and "'floor'" not in high
    assert "(typo? closest valid key: 'floor')" in lines["rules.3.flor"]  # a plain typo stays a typo


def _unknown(key: str) -> str:
    from harness.spec.keys import unknown_key_message

    return unknown_key_message(GatePolicy, ("rules", 0, key)).split("; valid keys here")[0]


def test_a_misspelt_meaning_word_also_offers_the_key_it_is_spelt_like():
    """``minn:`` resembles ``min`` (a lower limit) but is spelt closest to ``min_n``: offer both, never "Not
    'min_n'", which would steer the user away from the key they probably meant (review of issue 19)."""
    msg = _unknown("minn")
    assert "did you mean 'floor' (" in msg and "or 'min_delta' (" in msg
    assert "or by spelling 'min_n' (fail when a suite's split has fewer examples)?" in msg and "Not " not in msg
    assert "Not 'min_n'" in _unknown("min")  # exactly the word: a lower limit, not the sample-size floor
    assert "by spelling" not in _unknown("minimun")  # a misspelt "minimum", not spelt like any key


@pytest.mark.parametrize("key,meant", [("min_samples", ("min_n", "min_clusters")),
                                       ("min_examples", ("min_n", "min_clusters")),
                                       ("min_documents", ("min_clusters",)),
                                       ("max_flips", ("max_rate",)), ("max_contamination", ("max_rate",))])
def test_sample_size_and_rate_words_name_their_keys(key, meant):
    msg = _unknown(key)
    assert msg.startswith(f"unknown key {key!r} (did you mean {meant[0]!r} (")
    assert all(f"{k!r} (" in msg for k in meant) and "'name'" not in msg and "'max_drop'" not in msg


def test_keys_with_an_alias_are_named_and_described_by_the_alias():
    """``keys_at`` lists a field's alias; the meaning table and the descriptions use the same spelling."""
    from typing import ClassVar

    from pydantic import BaseModel, ConfigDict, Field

    from harness.spec.keys import unknown_key_message

    class Aliased(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        keys_meant: ClassVar[dict[str, tuple[str, ...]]] = {"minimum": ("lower",), "floor_value": ("lower_limit",)}
        lower: float = Field(default=0.0, alias="lower_limit", description="the lower limit")

    by_name = unknown_key_message(Aliased, ("minimum",))
    assert "did you mean 'lower_limit' (the lower limit)?" in by_name and "'lower'" not in by_name
    by_alias = unknown_key_message(Aliased, ("floor_value",))
    assert "did you mean 'lower_limit' (the lower limit)?" in by_alias
    assert unknown_key_message(Aliased, ("lower_limt",)).endswith("valid keys here: lower_limit")


def test_unknown_key_in_a_tagged_union_member_lists_that_member(tmp_path):
    from harness.spec.schema import Suite

    with pytest.raises(ValidationError) as e:
        Suite.model_validate({"kind": "suite", "name": "t", "role": "id", "classes": ["a", "b"],
                              "source": {"type": "local", "files": ["d.csv"], "fromat": "csv"},
                              "splits": [{"name": "test", "role": "test", "fracton": 0.5}]})
    probs = problems_of(e.value, Suite)
    want = ("source.local.fromat: unknown key 'fromat' (typo? closest valid key: 'format'); valid keys here: "
            "document_key, files, format, on_missing_text, type")
    assert any(p.startswith(want) for p in probs), probs
    assert any("closest valid key: 'fraction'" in p and "hub_split" in p for p in probs), probs


def test_policy_suite_names_no_given_suite_has_are_warned_with_the_closest():
    """Issue 19 trial: ``shift: [my-yelpp, my-amazon]`` passed validate and the gate later failed 'missing suite'."""
    pol = make(delta(suites="shift"), delta(name="r2", suites=["my-sst", "other"]),
               suites={"id": ["my-sst"], "shift": ["my-yelpp", "my-amazon"]})
    given = {"my-sst": "id", "my-yelp": "shift", "my-amazon": "shift"}
    lines = policy_suite_warnings(pol, given)
    assert len(lines) == 2, lines
    assert "names suite 'my-yelpp' (suites.shift)" in lines[0] and "closest suite given is 'my-yelp'" in lines[0]
    assert "'missing suite'" in lines[0] and "my-amazon (shift), my-sst (id), my-yelp (shift)" in lines[0]
    assert "names suite 'other' (rule r2)" in lines[1] and "closest" not in lines[1]
    assert [t for t, _ in policy_suite_notes(pol, given)] == [True, False]  # the close name is a typo
    assert policy_suite_warnings(pol, {**given, "my-yelpp": "shift", "other": "id"}) == []


@pytest.mark.parametrize("case, fails", [
    ("declared_shift_no_shift_rule", False), ("declared_shift_with_shift_rule", True),
    ("wrong_role_no_id_rule", False), ("wrong_role_with_id_rule", True), ("listed_in_a_rule", True),
    ("declared_typo_no_shift_rule", False), ("role_rule_matching_nothing", True)])
def test_a_run_refuses_only_the_suite_names_the_gate_fails_on(case, fails):
    """Review of the run check: on one run's suites (sweep --gate, harness gate), a declared suite the run lacks,
    or declared under the other role, fails the gate only if a rule over that role judges it; a policy that only
    declares it would pass, so it must not be refused (a warning); a name in a rule's own list always fails."""
    from harness.gate import policy_problems

    run = {"tiny-id": ("id", ["accuracy"]), "tiny-shift": ("shift", ["accuracy"])}
    listed = delta(name="l", suites=["tiny-id"], metric="accuracy")
    pol = {"declared_shift_no_shift_rule": make(delta(suites="id"), suites={"shift": ["tiny-shift", "other"]}),
           "declared_shift_with_shift_rule": make(delta(suites="shift"), suites={"shift": ["tiny-shift", "other"]}),
           "wrong_role_no_id_rule": make(listed, suites={"id": ["tiny-id", "tiny-shift"]}),
           "wrong_role_with_id_rule": make(delta(suites="id"), suites={"id": ["tiny-id", "tiny-shift"]}),
           "listed_in_a_rule": make(delta(suites=["tiny-id", "other"])),
           "declared_typo_no_shift_rule": make(delta(suites="id"), suites={"shift": ["tiny-shif"]}),
           "role_rule_matching_nothing": make(delta(suites="shift"))}[case]
    if case == "role_rule_matching_nothing":
        run = {"tiny-id": ("id", ["accuracy"])}
    found, warned = policy_problems(pol, run, run=True)
    if case == "role_rule_matching_nothing":
        assert "judges the shift suites, but the run has none" in found[0] and not warned
        return
    assert bool(found) is fails and bool(warned) is not fails, (found, warned)
    if case.startswith("declared_") and not fails:
        assert "so the gate ignores it" in warned[0]
    if case == "declared_typo_no_shift_rule":  # a likely typo the gate ignores: named, not refused
        assert "typo? the closest suite given is 'tiny-shift'" in warned[0]


def test_a_declared_suite_of_the_other_role_is_warned():
    pol = make(delta(), suites={"id": ["my-sst"], "shift": ["my-yelp"]})
    (line,) = policy_suite_warnings(pol, {"my-sst": "id", "my-yelp": "id"})
    assert "'my-yelp' under suites.shift but the suite's role is id" in line and "suites.id" in line


def test_a_refused_value_is_echoed_with_a_hint_when_the_field_takes_a_few_names():
    """pydantic's message names what the field takes; the line also says what the file held, and for a field of a
    few names the likely one (a misspelt ``aggregate: worts``)."""
    probs = problems(delta(aggregate="worts", max_drop="two percent"))
    assert "rules.0.aggregate: Input should be 'each', 'mean' or 'worst' (got 'worts') (did you mean 'worst'?)" \
        in probs, probs
    assert any(p.startswith("rules.0.max_drop: ") and p.endswith("(got 'two percent')") for p in probs), probs
    # a value far from every name gets no hint; a block gets no echo (its own fields' lines say what is wrong)
    far = problems(delta(aggregate="everything"))
    assert any(p.endswith("(got 'everything')") for p in far) and not any("did you mean" in p for p in far), far
    assert not any("(got {" in p for p in problems(delta(metric={"name": "accuracy"}))), "a block was echoed"


def test_a_missing_spec_file_names_the_folder_a_relative_path_was_looked_for_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as e:
        load_spec("policies/nope.yaml")
    assert f"where: policies/nope.yaml (in {tmp_path})" in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "nope.yaml")
    assert f"where: {tmp_path / 'nope.yaml'}\n" in str(e.value) + "\n" and "(in " not in str(e.value)


def test_a_plain_value_in_a_field_of_names_or_a_list_says_both_forms_with_the_hint():
    """``suites: idd``: the line names the names and the list form in one line, with the hint, not a bare "Input
    should be a valid list" that implies a name is never valid there."""
    assert problems(delta(suites="idd")) == [
        "rules.0.suites: Input should be 'id' or 'shift', or a valid list (got 'idd') (did you mean 'id'?)"]
    assert problems(delta(suites=5)) == ["rules.0.suites: Input should be 'id' or 'shift', or a valid list (got 5)"]


def test_a_yaml_boolean_in_a_field_of_names_says_to_quote_it_and_no_got_is_said_twice():
    probs = problems(delta(aggregate=False))
    assert any("(got False)" in p and "quote the name" in p for p in probs), probs
    with pytest.raises(ValidationError) as e:
        make(delta(), seed=0.5)
    (line,) = problems_of(e.value)
    assert line.startswith("seed: ") and line.count("got") == 1, line


def test_a_misspelt_block_tag_gets_a_hint():
    with pytest.raises(ValidationError) as e:
        from harness.spec.schema import Suite
        Suite.model_validate({"kind": "suite", "name": "s", "role": "id", "source": {"type": "bultin", "name": "x"},
                              "classes": ["a", "b"]})
    assert any(p.startswith("source: ") and p.endswith("(did you mean 'builtin'?)") for p in problems_of(e.value)), \
        problems_of(e.value)


def test_a_missing_include_names_the_including_file_and_where_it_was_looked_for(tmp_path):
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "sub" / "p.yaml"
    spec.write_text("include: ../common/base.yaml\nkind: policy\nname: p\nrules: []\n")
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    text = str(e.value)
    assert "included spec file not found" in text and f"in {spec}" in text
    assert str(tmp_path / "sub" / ".." / "common" / "base.yaml") in text and "relative to the file" in text


def test_validate_names_the_folder_a_missing_relative_path_was_looked_for_in(tmp_path, monkeypatch):
    from harness.spec.load import validate_paths

    monkeypatch.chdir(tmp_path)
    valid, probs = validate_paths(["suites/nope.yaml"])
    assert not valid and len(probs) == 1 and f"suites/nope.yaml (in {tmp_path})" in probs[0]


def test_a_task_block_without_its_kind_says_to_add_it():
    from harness.spec.schema import Suite

    with pytest.raises(ValidationError) as e:
        Suite.model_validate({"kind": "suite", "name": "s", "role": "id", "task": {"prompt": {"template": "x"}},
                              "source": {"type": "local", "files": ["x.csv"]}})
    assert any(p.startswith("task: ") and "add `kind:` to the block" in p for p in problems_of(e.value)), \
        problems_of(e.value)


def test_a_missing_spec_file_suggests_a_close_name_beside_it(tmp_path):
    """CI trial (2026-12-01): ``--suite suites/arc-easy.yml`` said only "spec file not found" beside
    ``arc-easy.yaml`` (a wrong model path got a "did you mean")."""
    (tmp_path / "arc-easy.yaml").write_text("kind: policy\nname: p\nrules: []\n")
    (tmp_path / "gsm.yaml").write_text("kind: policy\nname: p\nrules: []\n")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "arc-easy.yml")
    assert f"did you mean {tmp_path / 'arc-easy.yaml'}?" in str(e.value) and "gsm" not in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "zzz.yaml")
    assert "did you mean" not in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "no-folder" / "a.yaml")
    assert "spec file not found" in str(e.value)
