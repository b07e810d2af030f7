"""Tests of harness.gate_outputs: JUnit XML that always parses (issue 17 item 10) and the failed-rule lines that
``harness sweep --gate`` prints (issue 19 item 4)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from harness.gate_outputs import failed_rule_lines, verdict_to_junit, verdict_to_markdown, write_gate_outputs, xml_safe
from harness.records import RuleOutcome, Verdict

ESC = "\x1b"


def _verdict(suite: str = "id", reason: str = "lower bound below threshold") -> Verdict:
    return Verdict(policy=f"release{ESC}[0m", candidate=f"runs/{ESC}[31mred{ESC}[0m", reference="base",
                   passed=False, confidence=0.95, n_resamples=200, seed=0, outcomes=(
        RuleOutcome("gain", "relative", "accuracy", suite, "test", "bound", True, 0.05, 0.012, 0.0, 0.012, 150),
        RuleOutcome("drop", "relative", "accuracy", suite, "test", "bound", False, -0.04, -0.071, -0.02, -0.051,
                    130, reason=reason),
        RuleOutcome("big_enough", "relative", "accuracy", "shift", "test", "bound", False, None, None, -0.02, None,
                    None, reason="n = 85 examples is below min_n = 500")))


def test_junit_with_forbidden_characters_parses(tmp_path):
    bad = f"suite{ESC}[1m\x00\x07\x0b\ud800\ufffe"
    v = _verdict(suite=bad, reason=f"path /tmp/{ESC}[31mx is odd\x01")
    paths = write_gate_outputs(tmp_path, v)
    root = ET.parse(paths["junit"]).getroot()  # raised "not well-formed" before the fix
    cases = root.findall(".//testcase")
    assert len(cases) == 3 and root.get("failures") == "2"
    assert "\\x1b[1m" in cases[0].get("name") and "\\x00" in cases[0].get("name")
    failure = cases[1].find("failure")
    assert "\\x1b[31m" in failure.get("message") and "\\x01" in failure.text
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["candidate"] == "runs/\\x1b[31mred\\x1b[0m"
    ET.fromstring(verdict_to_junit(v).split("?>", 1)[1])  # the string form parses too


def test_xml_safe_keeps_allowed_text():
    text = "tab\tnew\nline\rcr é ✓ <&> \U0001f600"
    assert xml_safe(text) == text
    assert xml_safe(f"a{ESC}b\ud800") == "a\\x1bb\\ud800"


def test_failed_rule_lines_show_value_bound_threshold():
    lines = failed_rule_lines(_verdict())
    assert len(lines) == 2
    assert "FAIL drop (accuracy) on id/test" in lines[0]
    for part in ("value=-0.0400", "bound=-0.0710", "threshold=-0.0200", "margin=-0.0510", "n=130",
                 "lower bound below threshold"):
        assert part in lines[0]
    # a rule that failed before it was judged (min_n) still shows its threshold and says why
    assert "threshold=-0.0200" in lines[1] and "below min_n = 500" in lines[1]


def test_negative_zero_never_prints_with_a_minus():
    """A rule with ``max_drop: 0`` (threshold -0.0 before the fix) and a margin of -0.0 print as 0.0000 / +0.0000
    in every gate output, and as 0.000 / +0.000 in the report's gate table."""
    from harness.report.tables import verdict_table

    o = RuleOutcome("no_drop", "relative", "accuracy", "shift", "test", "point", False, -0.00001, None, -0.0, -0.0,
                    300, reason="value is below the threshold")
    v = Verdict(policy="release", candidate="run", reference="base", passed=False, confidence=0.95,
                n_resamples=200, seed=0, outcomes=(o,))
    texts = {"markdown": verdict_to_markdown(v), "junit": verdict_to_junit(v), "lines": "\n".join(failed_rule_lines(v))}
    for name, text in texts.items():
        assert "-0.0" not in text, name
    assert "| 0.0000 | - | 0.0000 | +0.0000 |" in texts["markdown"]
    assert "threshold=0.0000 margin=+0.0000" in texts["lines"]
    row = verdict_table({"outcomes": [dataclasses.asdict(o)]}).iloc[0]
    assert (row["value"], row["threshold"], row["margin"]) == ("0.000", "0.000", "+0.000")


def test_max_drop_zero_is_a_threshold_of_plus_zero():
    import math

    from harness.spec.policy import Rule

    r = Rule.model_validate({"name": "no_drop", "kind": "delta", "metric": "accuracy", "suites": "shift",
                             "max_drop": 0.0})
    assert r.threshold == 0.0 and math.copysign(1.0, r.threshold) == 1.0


def test_a_pass_with_a_warning_is_shown_as_one_everywhere():
    """Report trial (2026-12-01): rules passed with an underpowered warning (``on_underpowered: warn``) showed a
    bare PASS in report.md, report.html, the console and junit.xml; only verdict.json said so."""
    from harness.report.tables import verdict_table

    warn = "underpowered: the margin 0.1000 is below the minimum detectable effect 0.1093"
    ok = RuleOutcome("shift_drop", "delta", "acc_norm", "arc-c", "test", "bound", True, 0.0, 0.0, -0.1, 0.1, 16,
                     info={"warning": warn})
    plain = RuleOutcome("id_gain", "delta", "acc_norm", "arc-e", "test", "point", True, 0.1, None, 0.0, 0.1, 16)
    v = Verdict(policy="p", candidate="alpha=0.25", reference="base", passed=True, confidence=0.9,
                n_resamples=200, seed=0, outcomes=(ok, plain))
    md = verdict_to_markdown(v)
    assert "| PASS (warning) |" in md and "Passed with a warning:" in md and warn in md
    assert md.count("| PASS |") == 1  # the plain pass stays plain
    lines = failed_rule_lines(v)
    assert lines == [f"  WARN shift_drop (acc_norm) on arc-c/test passed with a warning: {warn}"]
    cases = ET.fromstring(verdict_to_junit(v).split("?>", 1)[1]).findall(".//testcase")
    assert f"warning: {warn}" in cases[0].find("system-out").text and cases[0].find("failure") is None
    assert "warning" not in cases[1].find("system-out").text
    rows = verdict_table({"outcomes": [dataclasses.asdict(o) for o in (ok, plain)]})
    assert list(rows["result"]) == ["PASS (warning)", "PASS"] and rows["reason"][0] == f"warning: {warn}"
