"""The LM demo tells one story: the console table, the selection and the gate judge each suite on one metric."""

from __future__ import annotations

from types import SimpleNamespace

from harness.demo.lm_run import lm_suite_metrics
from harness.demo.run import print_test_table, suites_dir
from harness.spec.load import load_spec


def test_gate_rules_use_each_suites_selection_metric():
    metrics = lm_suite_metrics()
    assert metrics["lm-boolq"] == "acc"  # yes/no choices: acc_norm would score the answers' lengths
    policy = load_spec(suites_dir() / "policies" / "lm-demo.yaml", kind="policy")
    judged = set()
    for rule in policy.rules:
        if rule.metric is None:
            continue
        names = (policy.suites.id if rule.suites == "id" else policy.suites.shift if rule.suites == "shift"
                 else rule.suites)
        for suite in names:
            assert rule.metric == metrics[suite], (rule.name, suite)
            judged.add(suite)
    assert judged == set(metrics)


def _metric(v):
    return SimpleNamespace(value=v, ci_low=v - 0.1, ci_high=v + 0.1)


def test_console_table_prints_each_suites_own_metric(capsys):
    results = {pid: {"s1": {"test": SimpleNamespace(metrics={"acc": _metric(0.4 + d), "acc_norm": _metric(0.6 + d)})},
                     "s2": {"test": SimpleNamespace(metrics={"acc": _metric(0.3 + d), "acc_norm": _metric(0.7 + d)})}}
               for pid, d in (("base", 0.0), ("adapted", 0.01))}
    suites = {s: SimpleNamespace(splits={"test": {"role": "test", "n": 5}}) for s in ("s1", "s2")}
    summary = SimpleNamespace(selection=SimpleNamespace(chosen_point="adapted"), suites=suites, results=results)
    res = SimpleNamespace(summary=summary, verdict=None, run_dir=__import__("pathlib").Path("/r"), timings={})
    print_test_table(res, {"s1": "acc_norm", "s2": "acc"})
    out = capsys.readouterr().out
    assert "s1/test acc_norm (n=5): base 0.600" in out
    assert "s2/test acc (n=5): base 0.300" in out
