"""Gate outputs: a :class:`~harness.records.Verdict` rendered as JUnit XML and as a Markdown summary, and written
into the run directory (``verdict.json``, ``junit.xml``) and onto ``$GITHUB_STEP_SUMMARY``.

Rendering only: every number comes from the verdict.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.errors import HarnessError, SpecError, format_error, problem_lines
from harness.gate import RunView, judge, note_split_uses, point_problems, policy_problems
from harness.io import atomic_write_text
from harness.numfmt import fmt_num
from harness.records import RuleOutcome, Verdict
from harness.rundir import write_verdict
from harness.spec.load import load_spec
from harness.settings import env

__all__ = ["JUNIT", "verdict_to_junit", "verdict_to_markdown", "failed_rule_lines", "warning_of", "suite_selection",
           "xml_safe", "write_gate_outputs", "run_suites", "run_gate"]

logger = logging.getLogger(__name__)

JUNIT = "junit.xml"

# Characters XML 1.0 forbids (C0 controls other than tab, LF and CR; lone surrogates; U+FFFE, U+FFFF).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: object) -> str:
    """``str(text)`` with every character XML 1.0 forbids replaced by a visible ``\\xNN`` / ``\\uNNNN`` escape.

    ElementTree escapes ``<``, ``&`` and quotes but writes control characters such as ESC (``\\x1b``, e.g. from
    a coloured path) as they are, which makes the document unparsable; every string that enters the JUnit XML
    goes through this function.
    """
    return _XML_FORBIDDEN.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                              else f"\\u{ord(m.group()):04x}", str(text))


def _num(x: float | None, signed: bool = False) -> str:
    """Four decimals, ``-`` for a missing value; ``-0.0`` prints ``0.0000`` (:func:`harness.numfmt.fmt_num`)."""
    return fmt_num(x, 4, signed=signed, missing="-")


def _details(o: RuleOutcome) -> str:
    parts = [f"rule={o.rule}", f"kind={o.kind}", f"metric={o.metric or '-'}", f"suite={o.suite}",
             f"split={o.split}", f"mode={o.mode}", f"value={_num(o.value)}", f"bound={_num(o.bound)}",
             f"threshold={_num(o.threshold)}", f"margin={_num(o.margin, True)}", f"n={o.n if o.n is not None else '-'}",
             f"reference={o.info.get('reference', '-')}"]
    return " ".join(parts)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    """A child element whose attributes and text have passed :func:`xml_safe`."""
    el = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrib.items()})
    if text is not None:
        el.text = xml_safe(text)
    return el


def verdict_to_junit(verdict: Verdict) -> str:
    """JUnit XML of a verdict: one ``<testcase>`` per outcome (rule and suite).

    Parameters
    ----------
    verdict : Verdict

    Returns
    -------
    str
        A UTF-8 XML document with one ``<testsuite>`` named after the policy; failed outcomes carry a ``<failure>``
        whose message is the reason; every testcase's ``<system-out>`` lists value, bound, threshold, margin and n.
        Characters that XML 1.0 forbids (ESC in a path, say) are written as visible escapes (:func:`xml_safe`),
        so the document always parses.
    """
    failures = sum(not o.passed for o in verdict.outcomes)
    root = ET.Element("testsuites", name="harness gate", tests=str(len(verdict.outcomes)), failures=str(failures),
                      errors="0")
    suite = _sub(root, "testsuite", name=f"gate.{verdict.policy}", tests=str(len(verdict.outcomes)),
                 failures=str(failures), errors="0", skipped="0")
    props = _sub(suite, "properties")
    for key, value in (("candidate", verdict.candidate), ("reference", verdict.reference),
                       ("confidence_one_sided", f"{verdict.confidence:g}"),
                       ("n_resamples", str(verdict.n_resamples)), ("seed", str(verdict.seed)),
                       ("passed", str(verdict.passed).lower())):
        _sub(props, "property", name=key, value=str(value))
    for o in verdict.outcomes:
        case = _sub(suite, "testcase", classname=f"gate.{verdict.policy}.{o.rule}",
                    name=f"{o.rule} [{o.suite}/{o.split}]", time="0")
        if not o.passed:
            _sub(case, "failure", f"{o.reason}\n{_details(o)}", message=o.reason or "failed", type="GateRuleFailed")
        _sub(case, "system-out", _details(o) + (f"\nwarning: {warning_of(o)}" if warning_of(o) else ""))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def warning_of(outcome: RuleOutcome) -> str:
    """The warning a passing outcome carries (``info["warning"]``: an underpowered margin under
    ``on_underpowered: warn``), or ``""``."""
    return str(outcome.info.get("warning") or "") if outcome.passed else ""


def failed_rule_lines(verdict: Verdict) -> list[str]:
    """One line per failed outcome: rule, metric, suite/split, value, bound, threshold, margin, n and the reason;
    then one ``WARN`` line per passing outcome that carries a warning (CI trial: an underpowered pass was shown as
    a bare PASS everywhere but verdict.json).

    What ``harness sweep --gate`` prints under its one-line verdict, so a failing gate says what failed. A rule
    that failed before it was judged (``min_n``, missing data) prints ``-`` for the numbers the verdict lacks (n is
    shown when the examples were counted).
    """
    out = []
    for o in verdict.outcomes:
        if o.passed:
            continue
        metric = f" ({o.metric})" if o.metric else ""
        out.append(f"  FAIL {o.rule}{metric} on {o.suite}/{o.split}: value={_num(o.value)} bound={_num(o.bound)} "
                   f"threshold={_num(o.threshold)} margin={_num(o.margin, True)} "
                   f"n={o.n if o.n is not None else '-'}" + (f": {o.reason}" if o.reason else ""))
    out += [f"  WARN {o.rule}{f' ({o.metric})' if o.metric else ''} on {o.suite}/{o.split} passed with a warning: "
            f"{warning_of(o)}" for o in verdict.outcomes if warning_of(o)]
    failed = {o.rule for o in verdict.outcomes if not o.passed}
    out += [f"  suites of {rule}: {why}" for rule, why in suite_selection(verdict).items() if rule in failed]
    return out


def suite_selection(verdict: Verdict) -> dict[str, str]:
    """Rule name -> which suites it judged and why, for each rule over a role (``suites: id`` or ``shift``):
    the suites the policy declares for the role, and the run's other suites of that role, which such a rule
    judges too (``info["suites_judged"]``, set by :func:`harness.gate.judge`). Rules with a list of suites have
    no entry."""
    out: dict[str, str] = {}
    for o in verdict.outcomes:
        if o.info.get("suites_judged"):
            out.setdefault(o.rule, str(o.info["suites_judged"]))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_to_markdown(verdict: Verdict) -> str:
    """Markdown summary of a verdict: a heading with PASS/FAIL, a table, the failure reasons and a one-line verdict.

    Parameters
    ----------
    verdict : Verdict

    Returns
    -------
    str
        Columns: rule, suite, value, bound, threshold, margin, n, result. ``value`` is the judged statistic (a gain
        in the metric's good direction for deltas, the level for floors and ceilings, a rate for negative flips);
        ``bound`` is its one-sided bootstrap bound (``-`` in point mode).
    """
    status = "PASS" if verdict.passed else "FAIL"
    lines = [f"### Robustness gate: {status} (policy `{verdict.policy}`)", "",
             f"Candidate `{verdict.candidate}` against `{verdict.reference}`; bound-mode rules use the one-sided "
             f"{verdict.confidence:.1%} bound of {verdict.n_resamples} paired cluster-bootstrap resamples "
             f"(seed {verdict.seed}). Deltas are gains in each metric's good direction.", "",
             "| rule | suite | value | bound | threshold | margin | n | result |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for o in verdict.outcomes:
        metric = f" ({o.metric})" if o.metric else ""
        lines.append(f"| {_cell(o.rule + metric)} | {_cell(o.suite + '/' + o.split)} | {_num(o.value)} | "
                     f"{_num(o.bound)} | {_num(o.threshold)} | {_num(o.margin, True)} | "
                     f"{o.n if o.n is not None else '-'} | "
                     f"{('PASS (warning)' if warning_of(o) else 'PASS') if o.passed else '**FAIL**'} |")
    selection = suite_selection(verdict)
    if selection:
        lines += ["", "Suites judged by the rules over a role:", ""]
        lines += [f"- `{rule}`: {_cell(why)}" for rule, why in selection.items()]
    failed = [o for o in verdict.outcomes if not o.passed]
    if failed:
        lines += ["", "Failures:", ""]
        lines += [f"- `{o.rule}` on `{o.suite}/{o.split}`: {_cell(o.reason)}" for o in failed]
    warned = [o for o in verdict.outcomes if warning_of(o)]
    if warned:
        lines += ["", "Passed with a warning:", ""]
        lines += [f"- `{o.rule}` on `{o.suite}/{o.split}`: {_cell(warning_of(o))}" for o in warned]
    lines += ["", _one_line(verdict), ""]
    return "\n".join(lines)


def _one_line(verdict: Verdict) -> str:
    total = len(verdict.outcomes)
    if verdict.passed:
        return f"**Verdict: PASS**: all {total} checks of policy `{verdict.policy}` passed."
    failed = [o for o in verdict.outcomes if not o.passed]
    names = ", ".join(sorted({o.rule for o in failed}))
    return f"**Verdict: FAIL**: {len(failed)} of {total} checks failed ({names})."


def write_gate_outputs(run_dir: str | Path, verdict: Verdict, junit_path: str | Path | None = None) -> dict[str, Path]:
    """Write ``verdict.json`` and ``junit.xml``, and append the Markdown summary to ``$GITHUB_STEP_SUMMARY``.

    Parameters
    ----------
    run_dir : str or Path
        The run directory; ``verdict.json`` goes here.
    verdict : Verdict
    junit_path : str or Path, default=None
        Where to write a copy of the JUnit XML. ``run_dir/junit.xml`` is always written, so a run directory never
        keeps an earlier gate's JUnit file beside this gate's verdict.json (CI trial: a job that collected
        ``runs/*/junit.xml`` read a stale pass).

    Returns
    -------
    dict of str to Path
        ``verdict``, ``junit`` (the run directory's), ``junit_copy`` (the copy at ``junit_path``, when given) and,
        when the variable is set and writable, ``step_summary``.

    Raises
    ------
    harness.errors.OutputError
        If ``verdict.json`` or the JUnit file cannot be written (both are written atomically). A step summary that
        cannot be appended to is logged as a warning only: the verdict and the exit code do not depend on it.
    """
    run_dir = Path(run_dir)
    xml = verdict_to_junit(verdict)
    paths = {"verdict": write_verdict(run_dir, verdict), "junit": atomic_write_text(run_dir / JUNIT, xml)}
    if junit_path and Path(junit_path).resolve() != (run_dir / JUNIT).resolve():
        paths["junit_copy"] = atomic_write_text(Path(junit_path), xml)  # the run's own is rewritten too
    summary = env("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(verdict_to_markdown(verdict) + "\n")
            paths["step_summary"] = Path(summary)
        except OSError as e:
            logger.warning("cannot append the gate summary to $GITHUB_STEP_SUMMARY (%s): %s", summary, e)
    return paths


def run_suites(run: RunView) -> dict[str, tuple[str, list[str]]]:
    """Name -> (role, the metrics its results hold) of every suite of a stored run: what the gate can judge."""
    computed: dict[str, set[str]] = {}
    for by_suite in run.summary.results.values():
        for suite, by_split in by_suite.items():
            for entry in by_split.values():
                computed.setdefault(suite, set()).update(entry.metrics)
    return {name: (info.role, sorted(computed.get(name, ()))) for name, info in run.summary.suites.items()}


def run_gate(run_dir: str | Path, policy: str | Path, *, baseline: str | Path | None = None,
             junit: str | Path | None = None) -> Verdict:
    """Judge a stored run with a gate policy and write verdict.json, junit.xml and the Markdown summary
    (``harness gate``; loads no model).

    A missing or unreadable ``baseline`` fails the rules that need it (exit 1), never skips them.

    Returns
    -------
    harness.records.Verdict

    Raises
    ------
    SpecError, DataError
        For a bad policy file or an unreadable run directory, or a policy whose verdict on this run is decided
        before judging (:func:`harness.gate.policy_problems` on the run's suites: a suite the run does not have, a
        metric a judged suite does not compute, a threshold outside its metric's range; ``sweep --gate`` refuses
        the same before any work; :func:`harness.gate.point_problems`: a candidate or a ``base`` / ``adapted``
        reference point the run does not have, as an eval run's). Nothing is written then: an earlier verdict.json
        and JUnit file stay.
    """
    pol = load_spec(policy, kind="policy")
    cand = RunView.from_dir(run_dir)
    found, warned = policy_problems(pol, run_suites(cand), run=True)
    found += point_problems(pol, cand.summary)
    for line in warned:  # names the gate ignores on this run: said, not refused
        logger.warning("%s", line)
    if found:
        raise SpecError(format_error(
            f"the gate policy cannot pass on this run ({len(found)} problem{'s' * (len(found) > 1)})",
            where=str(policy), got=problem_lines(found),
            fix="edit the policy, or gate a run that has the suites and points it names (nothing was written: an "
                "earlier verdict.json, junit.xml and report in the run directory still show the previous gate's "
                "verdict)"))
    base_view, base_error = None, None
    if baseline is not None and not pol.needs_baseline:  # CI-integration trial: it was ignored without a word
        logger.warning("--baseline %s is not used: no rule of policy %r compares with a baseline run (reference: "
                    "baseline)", baseline, pol.name)
    if baseline is not None:
        try:
            base_view = RunView.from_dir(baseline)
        except HarnessError as e:
            base_error = str(e)
    verdict = judge(cand, pol, base_view, baseline_error=base_error)
    note_split_uses(verdict, cand)  # count this gate's use of the run's test splits (selection honesty, report)
    write_gate_outputs(run_dir, verdict, junit_path=junit)
    return verdict
