"""Issue 7, part 1: one error family, worded what/where/expected/got/fix, mapped to the CONTRACT exit codes.

A table of unusable inputs goes through ``harness.cli.main``: each must exit 2 with a one-paragraph message
(no traceback unless ``--debug``) and write nothing into ``--out``.

Covered elsewhere (not repeated here): exit 1 for a gate that ran and failed
(tests/integration/test_cli_tiny.py::test_report_and_gate_on_stored_run), exit 3 with "a bug" for an unexpected
exception (tests/integration/test_cli_tiny.py::test_internal_errors_exit_3_and_say_bug), unknown --split and bad
flags (tests/integration/test_cli_tiny.py::test_unusable_input_exits_2_and_writes_nothing).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

import pytest

import harness.errors as errors
from _helpers import copy_model, leftovers, make_lora_adapter, suite_yaml, tree
from conftest import make_tiny_bert, synth_rows, write_csv
from harness.cli import main

CLAUSES = ("where:", "expected:", "got:", "fix:")


@pytest.fixture(scope="module")
def world(tiny_pair, tiny_suites, tmp_path_factory) -> dict[str, Path]:
    """Broken models, suites and files, built once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    base, adapted = tiny_pair
    w = {"base": base, "adapted": adapted, "suite": tiny_suites[0], "root": root}
    w["noweights"] = copy_model(base, root / "noweights", drop=("model.safetensors",))
    w["lora"] = make_lora_adapter(base, root / "lora")
    cfg = json.loads((w["lora"] / "adapter_config.json").read_text())  # an adapter whose base is no local folder
    w["lora_orphan"] = shutil.copytree(w["lora"], root / "lora_orphan")
    (w["lora_orphan"] / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "org/x"}))
    trunc = copy_model(base, root / "trunc")
    raw = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    w["trunc"] = trunc
    garbcfg = copy_model(base, root / "garbcfg")
    (garbcfg / "config.json").write_bytes(os.urandom(300))
    w["garbcfg"] = garbcfg
    w["notok"] = copy_model(base, root / "notok", drop=tuple(
        p.name for p in base.iterdir() if p.name not in ("config.json", "model.safetensors")))
    w["generic_head"] = make_tiny_bert(root / "generic", seed=1)  # LABEL_0/LABEL_1: a new head
    write_csv(root / "rows.csv", synth_rows(30, 5))
    cols = suite_yaml(root / "cols.yaml", "rows.csv")
    cols.write_text(cols.read_text().replace("max_length", "text: review\nmax_length"))
    w["cols"] = cols
    (root / "garbage.csv").write_bytes(os.urandom(4000))
    w["garbage_csv"] = suite_yaml(root / "garbage.yaml", "garbage.csv")
    w["norows"] = suite_yaml(root / "norows.yaml", "rows.csv",
                             splits="  - {name: test, role: test, where: {label: '7'}}\n")
    (root / "binary.yaml").write_bytes(os.urandom(600))
    w["binary_yaml"] = root / "binary.yaml"
    (root / "a_file").write_text("not a folder\n")
    w["a_file"] = root / "a_file"
    return w


FAST = ["--no-report", "--quiet", "--n-resamples", "10", "--no-store"]


def _eval(w, **over) -> list[str]:
    return ["eval", "--model", str(over.get("model", w["base"])), "--suite", str(over.get("suite", w["suite"])),
            *FAST, *over.get("extra", [])]


def _sweep(w, **over) -> list[str]:
    return ["sweep", "--base", str(over.get("base", w["base"])), "--adapted", str(over.get("adapted", w["adapted"])),
            "--suite", str(w["suite"]), "--alphas", over.get("alphas", "0,1"), "--select", "id-only", *FAST,
            *over.get("extra", [])]


# (case id, argv builder, text the message must contain)
CASES = [
    ("missing_model_dir", lambda w: _eval(w, model=w["root"] / "nope"), "model folder not found"),
    ("model_dir_without_weights", lambda w: _eval(w, model=w["noweights"]), "no weights found"),
    ("adapter_without_its_base_as_model", lambda w: _eval(w, model=w["lora_orphan"]), "pass --base BASE_FOLDER"),
    ("model_path_is_a_file", lambda w: _eval(w, model=w["a_file"]), "is a file, not a folder"),
    ("garbage_config_json", lambda w: _eval(w, model=w["garbcfg"]), "cannot read the model config"),
    ("no_tokenizer_files", lambda w: _eval(w, model=w["notok"]), "no tokenizer vocabulary"),
    ("truncated_safetensors", lambda w: _eval(w, model=w["trunc"]), "corrupt safetensors"),
    ("missing_suite_file", lambda w: _eval(w, suite=w["root"] / "nope.yaml"), "spec file not found"),
    ("binary_suite_file", lambda w: _eval(w, suite=w["binary_yaml"]), "cannot be read"),
    ("suite_with_missing_columns", lambda w: _eval(w, suite=w["cols"]), "'review' not found"),
    ("binary_garbage_csv", lambda w: _eval(w, suite=w["garbage_csv"]), "cannot read the csv file"),
    ("suite_matching_no_rows", lambda w: _eval(w, suite=w["norows"]), "has no rows"),
    ("bad_dtype", lambda w: _eval(w, extra=["--dtype", "fp64"]), "--dtype"),
    ("bad_device", lambda w: _eval(w, extra=["--device", "bogus"]), "--device"),
    ("negative_seed", lambda w: _eval(w, extra=["--seed", "-1"]), "--seed"),
    ("bad_label_map", lambda w: _eval(w, extra=["--label-map", "positive"]), "--label-map"),
    ("bad_alphas", lambda w: _sweep(w, alphas="0,abc"), "--alphas"),
    ("alpha_outside_unit_interval", lambda w: _sweep(w, alphas="0,1.5"), "--alphas"),
    ("unknown_select", lambda w: _sweep(w, extra=["--select", "best"]), "max-shift-within-id"),
    ("head_mismatch", lambda w: _sweep(w, base=w["generic_head"]), "--head adapted"),
    ("missing_adapted", lambda w: _sweep(w, adapted=w["root"] / "nope"), "model folder not found"),
    ("out_is_a_file", lambda w: _eval(w, extra=["--out", str(w["a_file"])]), "names a file"),
]


@pytest.mark.parametrize("case, build, needle", CASES, ids=[c[0] for c in CASES])
def test_unusable_input_exits_2_with_one_paragraph_and_writes_nothing(world, tmp_path, capsys, case, build,
                                                                       needle):
    argv = build(world)
    out = tmp_path / "runs" / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    before_file = world["a_file"].read_bytes()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (case, err)
    assert "Traceback" not in err, err
    assert needle in err, (needle, err)
    body = err.strip()
    assert "\n\n" not in body, f"not one paragraph: {body!r}"
    if body.startswith("usage:"):  # argparse's own bad-flag message
        assert "error:" in body
    else:
        assert body.startswith("error: ") and body.count("error: ") == 1, body
        assert any(c in body for c in CLAUSES), f"no where/expected/got/fix clause: {body!r}"
        assert "internal error" not in body
    assert not out.exists(), sorted(tree(out))
    assert leftovers(tmp_path) == []
    assert world["a_file"].read_bytes() == before_file  # --out naming a file leaves the file alone
    assert leftovers(world["root"]) == []


def test_debug_shows_the_traceback_of_an_input_error(world, capsys):
    argv = _eval(world, suite=world["root"] / "nope.yaml")
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(argv + ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "SpecError" in err and "error: spec file not found" in err


def test_every_error_class_is_a_harness_error_and_a_builtin():
    classes = [obj for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)
               and obj.__module__ == errors.__name__]
    assert errors.HarnessError in classes and len(classes) >= 9
    for cls in classes:
        assert issubclass(cls, errors.HarnessError), cls
        assert cls.exit_code == 2
        if cls is not errors.HarnessError:
            builtins = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException,
                                                                                          object)]
            assert builtins, f"{cls.__name__} does not subclass a matching built-in"
        assert cls.__name__ in errors.__all__


def test_format_error_keeps_the_template_order():
    msg = errors.format_error("alpha out of range", where="suite x", expected="[0, 1]", got=1.5, fix="use 0.5")
    lines = msg.splitlines()
    assert lines[0] == "alpha out of range."
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["where", "expected", "got", "fix"]
    assert "did you mean 'weighted'" in errors.unknown_name("policy", "weigted", ["weighted", "id-only"])
