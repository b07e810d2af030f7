"""Suite specs: strict schema, field-path errors, includes, kinds, the validate command, generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import SpecError
from harness.spec.load import load_spec, read_yaml, spec_hash, validate_paths

SUITE = """kind: suite
name: s
role: shift
shift_type: natural
source: {type: local, files: [x.csv]}
classes: [negative, positive]
splits: [{name: validation, role: validation, fraction: 0.5}, {name: test, role: test, fraction: 0.5}]
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_suite_loads_frozen(tmp_path):
    s = load_spec(write(tmp_path, SUITE))
    assert s.name == "s" and s.splits[1].fraction == 0.5
    with pytest.raises(Exception):
        s.name = "other"


@pytest.mark.parametrize("patch, path_fragment", [
    ("bogus: 1\n", "bogus: unknown key"),
    ("max_length: 4\n", "max_length"),
    ("metrics: [accuracy, f2]\n", "unknown metric 'f2'"),
    ("metrics: [accuracy, macro_fi]\n", "unknown metric 'macro_fi' (did you mean 'macro_f1'?); expected one of"),
    ("metrics: [accuracy, precision]\n", "unknown metric 'precision'; expected one of"),  # no near name: no guess
    ("metrics: [accuracy, f2]\n", "unknown metric 'f2'; expected"),  # f1 is a generation metric: no such hint here
])
def test_errors_name_the_field(tmp_path, patch, path_fragment):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, SUITE + patch))
    assert path_fragment in str(e.value)


def test_every_problem_is_listed(tmp_path):
    text = SUITE.replace("role: validation", "role: valid").replace("domain", "x") + "bogus: 1\nmax_length: 1\n"
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    msg = str(e.value)
    assert "3 problem(s)" in msg and "splits.0.role" in msg and "bogus" in msg and "max_length" in msg


@pytest.mark.parametrize("text, needle", [
    (SUITE.replace("shift_type: natural\n", ""), "needs shift_type"),
    (SUITE.replace("fraction: 0.5}, {", "fraction: 0.7}, {"), "add up to 1.2"),
    (SUITE.replace("name: test", "name: validation"), "unique"),
    (SUITE.replace("classes: [negative, positive]", "classes: [a, a]"), "unique"),
    (SUITE + "label_map: {pos: positive, neg: nope}\n", "not in classes"),
    (SUITE + "transforms: [{name: typos}]\n", "need derived_from"),
])
def test_cross_field_rules(tmp_path, text, needle):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    assert needle in str(e.value)


def test_include_merges_and_child_wins(tmp_path):
    write(tmp_path, SUITE, "base.yaml")
    p = write(tmp_path, "include: base.yaml\nname: child\n", "child.yaml")
    s = load_spec(p)
    assert s.name == "child" and s.role.value == "shift"


def test_yaml_is_parsed_safely(tmp_path):
    p = write(tmp_path, "kind: suite\nname: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        read_yaml(p)
    assert not (tmp_path / "pwned").exists()


def test_missing_kind_and_wrong_kind(tmp_path):
    with pytest.raises(SpecError, match="no valid top-level kind"):
        load_spec(write(tmp_path, "name: x\n"))
    with pytest.raises(SpecError, match="expected a policy file"):
        load_spec(write(tmp_path, SUITE), kind="policy")


def test_spec_hash_is_stable_and_sensitive(tmp_path):
    a = load_spec(write(tmp_path, SUITE, "a.yaml"))
    b = load_spec(write(tmp_path, SUITE.replace("fraction: 0.5}]", "fraction: 0.4}]"), "b.yaml"))
    assert spec_hash(a) == spec_hash(load_spec(tmp_path / "a.yaml")) and spec_hash(a) != spec_hash(b)


def test_validate_command_exit_codes(tmp_path, capsys):
    good = write(tmp_path, SUITE, "good.yaml")
    assert main(["validate", "--no-data", str(good)]) == 0  # specs only: its data files are not there
    assert main(["validate", str(good)]) == 2  # the data check finds them missing
    write(tmp_path, SUITE + "bogus: 1\n", "bad.yaml")
    assert main(["validate", "--no-data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "bogus" in err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2


def test_repository_specs_are_valid():
    root = Path(__file__).resolve().parents[2] / "suites"
    valid, problems = validate_paths([root])
    assert not problems, problems
    kinds = {spec.kind for _, spec in valid}
    assert {"suite", "training"} <= kinds


def test_generated_docs_are_current():
    from harness.spec.docs import main as docs

    assert docs(["--check"]) == 0, "run: python -m harness.spec.docs"


def test_a_yaml_syntax_error_keeps_its_lines_so_the_caret_points_at_the_column(tmp_path):
    """Session 33's note: PyYAML's message was squashed onto one line, so its caret pointed nowhere."""
    p = write(tmp_path, "kind: suite\nname: x\n  role: id\n")
    with pytest.raises(SpecError) as e:
        read_yaml(p)
    lines = str(e.value).splitlines()
    at = lines.index("          role: id")
    assert lines[at + 1] == "              ^" and f"in {p.name}, line 3, column 7" in lines[at - 1]
    assert "<unicode string>" not in str(e.value)
