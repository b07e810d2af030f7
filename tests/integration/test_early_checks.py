"""Bad input that needs no data or model is refused before either is loaded: a mistyped model path (sweep, eval,
blend, train) and a sweep that could not select alpha (no ID suite, or an ID suite without a validation split).

Loading data is replaced by a sentinel that fails the test, so a check that runs too late cannot pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.pipeline.evaluate as evaluate_mod
import harness.pipeline.sweep as sweep_mod
from harness.cli import main


@pytest.fixture
def no_data(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("data was loaded before the check")

    monkeypatch.setattr(sweep_mod, "prepare_splits", boom)
    monkeypatch.setattr(evaluate_mod, "prepare_splits", boom)


def _mistyped(tiny_pair) -> str:
    base = Path(tiny_pair[0])
    return str(base.parent / "bse")  # models/.../base -> models/.../bse


@pytest.mark.parametrize("command", ["sweep", "eval", "blend"])
def test_mistyped_model_path_fails_before_the_data_and_names_the_near_match(command, tiny_pair, tiny_suites,
                                                                            tmp_path, capsys, no_data):
    bad = _mistyped(tiny_pair)
    argv = {"sweep": ["sweep", "--base", bad, "--adapted", str(tiny_pair[1]), "--suite", *map(str, tiny_suites)],
            "eval": ["eval", "--model", bad, "--suite", *map(str, tiny_suites)],
            "blend": ["blend", "--base", bad, "--adapted", str(tiny_pair[1]), "--alpha", "0.5"]}[command]
    assert main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model folder not found" in err and bad in err
    assert f"did you mean {tiny_pair[0]}" in err


def test_mistyped_train_base_fails_at_once(tiny_pair, tiny_suites, tmp_path, capsys):
    training = Path(__file__).resolve().parents[2] / "suites" / "training-demo.yaml"
    assert main(["train", "--config", str(training), "--suite", str(tiny_suites[0]), "--base",
                 _mistyped(tiny_pair), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_hub_id_looking_names_are_left_to_the_loader(tiny_pair):
    from harness.models.paths import check_model_path

    check_model_path("sentence-transformers/all-MiniLM-L6-v2", "--base")  # no error: the loader decides
    check_model_path(tiny_pair[0], "--base")
    with pytest.raises(Exception, match="not found"):
        check_model_path("./nope/x", "--base")


def test_sweep_of_only_shift_suites_fails_before_any_data(tiny_pair, tiny_suites, tmp_path, capsys, no_data):
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 str(tiny_suites[1]), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "none of the --suite files is an ID suite" in err and "tiny-shift (role: shift)" in err
    assert "pass the ID suite too" in err


def test_sweep_of_an_id_suite_without_validation_fails_before_any_data(tiny_pair, tiny_suites, tmp_path, capsys,
                                                                      no_data):
    text = Path(tiny_suites[0]).read_text().replace("role: validation", "role: test").replace(
        "name: validation", "name: val2")
    suite = Path(tiny_suites[0]).parent / "id-no-val.yaml"
    suite.write_text(text.replace("name: tiny-id", "name: tiny-id-noval"))
    try:
        assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite", str(suite),
                     "--out", str(tmp_path / "o"), "--quiet"]) == 2
    finally:
        suite.unlink()
    err = capsys.readouterr().err
    assert "no ID validation split" in err and "val2 (role: test)" in err


@pytest.mark.parametrize("problem", ["typo", "missing", "metric", "threshold"])
def test_a_gate_policy_that_cannot_pass_stops_the_sweep_before_the_data(problem, tiny_pair, tiny_suites, tmp_path,
                                                                        capsys, no_data):
    """LM user trial: a policy naming a misspelt suite ran the whole sweep and then failed the gate (exit 1). A
    policy whose verdict on these suites is already decided (a typo of a suite name, a metric a judged suite does
    not compute, a threshold outside its metric's range) now stops the sweep at once with exit 2."""
    from harness.spec.load import load_suite

    names = {load_suite(p).role.value: load_suite(p).name for p in tiny_suites[:2]}
    shift = names["shift"]
    rule = {"typo": f"{{name: r, kind: delta, metric: accuracy, suites: [{shift[:-1] + 'x'}], max_drop: 0.05}}",
            "missing": "{name: r, kind: delta, metric: accuracy, suites: [vader-yelp], max_drop: 0.05}",
            "metric": f"{{name: r, kind: delta, metric: acc_norm, suites: [{shift}], max_drop: 0.05}}",
            "threshold": "{name: r, kind: floor, metric: accuracy, suites: shift, floor: 85}"}[problem]
    policy = tmp_path / "p.yaml"
    policy.write_text(f"kind: policy\nname: p\nrules:\n  - {rule}\n")
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 *map(str, tiny_suites[:2]), "--gate", str(policy), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the gate policy cannot pass on these suites" in err, err
    assert {"typo": "typo? the closest suite given is", "metric": "gates on metric 'acc_norm'",
            "missing": "names suite 'vader-yelp' (rule r) but the run has no suite of that name",
            "threshold": "(0.85, not 85)"}[problem] in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, message", [
    (["--gate", "POLICY"], "sweep --gate needs --out"),
    (["--gate", "POLICY", "--junit", "J"], "sweep --gate needs --out"),
    (["--junit", "J", "--out", "OUT"], "--junit is for the gate, and no --gate policy is given"),
    (["--baseline", "B", "--junit", "J", "--out", "OUT"], "--junit and --baseline are for the gate"),
])
def test_gate_options_the_sweep_would_not_act_on_are_refused(flags, message, tiny_pair, tiny_suites, tmp_path,
                                                             capsys, no_data):
    """CI-integration trial (2026-12-01): ``sweep --gate POLICY`` without ``--out`` exited 0 with no gate at all,
    so a CI job that forgot ``--out`` passed a failing model; ``--junit`` without a gate was ignored too. Both are
    now exit 2 before any data is read."""
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: policy\nname: p\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    subs = {"POLICY": str(policy), "OUT": str(tmp_path / "o"), "B": str(tmp_path), "J": str(tmp_path / "j.xml")}
    argv = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
            *map(str, tiny_suites[:2]), "--quiet", *(subs.get(f, f) for f in flags)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "j.xml").exists()


@pytest.mark.parametrize("key, value", [("min_n", 200), ("min_clusters", 150)])
def test_a_gate_rule_needing_more_examples_than_max_examples_stops_the_sweep(key, value, tiny_pair, tiny_suites,
                                                                           tmp_path, capsys, no_data):
    """CI-integration trial (2026-12-01): ``--max-examples 100`` with a rule's ``min_n: 200`` ran the whole sweep,
    then failed every rule (exit 1). A cap below a rule's min_n or min_clusters decides the verdict before any
    work: exit 2, saying which rule and what to raise."""
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: policy\nname: p\nrules:\n"
                      f"  - {{name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, {key}: {value}}}\n"
                      "  - {name: o, kind: max_overlap, suites: id, max_rate: 0.5}\n")
    argv = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
            *map(str, tiny_suites[:2]), "--gate", str(policy), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--max-examples", "100"]) == 2
    err = capsys.readouterr().err
    assert f"rule 'f' needs {key} = {value} per split, but --max-examples 100" in err, err
    assert "rule 'o'" not in err  # an overlap rule counts the whole split: no floor on examples
