"""Issue 7, part 4: hostile files never run code, never exhaust memory, never crash the CLI.

Covered elsewhere (not repeated here):

* pickle payload in pytorch_model.bin (refused; not run even with --allow-pickle):
  tests/unit/test_models_load.py::test_pickle_only_checkpoint_is_refused_and_never_executed;
* pickle-only adapter refused: tests/unit/test_adapters.py::test_pickle_only_adapter_is_refused (here: with a real
  payload, through the CLI, with and without --allow-pickle);
* corrupt, oversized or truncated safetensors headers: tests/unit/test_models_load.py::
  test_truncated_safetensors_is_refused, ::test_corrupt_or_oversized_header_is_refused,
  ::test_offsets_past_end_are_refused;
* YAML ``!!python/object`` tags: tests/unit/test_spec.py::test_yaml_is_parsed_safely;
* ``<script>`` in dataset text shown in the HTML report: tests/unit/test_report.py::
  test_dataset_text_is_escaped_and_html_only;
* archive members escaping the target folder (absolute, ``..``, links): tests/unit/test_vader.py::
  test_unsafe_members_are_refused, ::test_wanted_member_as_link_is_refused.
"""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _helpers import copy_model, make_lora_adapter
from harness.cli import main
from harness.errors import ModelError, SpecError
from harness.spec.load import load_spec, read_yaml

FAST = ["--no-report", "--quiet", "--n-resamples", "10", "--no-store"]


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------------------- pickles --

@pytest.mark.parametrize("allow_pickle", [False, True], ids=["default", "allow_pickle"])
def test_pickle_payload_in_adapter_bin_never_runs(tiny_pair, tiny_suites, tmp_path, capsys, allow_pickle):
    adapter = make_lora_adapter(tiny_pair[0], tmp_path / "lora")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({**weights, "evil": _Payload(marker)}, adapter / "adapter_model.bin")
    out = tmp_path / "run"
    argv = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(adapter), "--suite", str(tiny_suites[0]),
            "--alphas", "0,1", "--select", "id-only", "--out", str(out), *FAST] + (
        ["--allow-pickle"] if allow_pickle else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_pickle_beside_safetensors_is_never_read(tiny_pair, tiny_suites, tmp_path):
    """A folder with model.safetensors and a pytorch_model.bin: the safetensors file is the checkpoint (it is what
    the fingerprint hashes), with or without --allow-pickle; the pickle is never unpickled."""
    from harness.models.load import load_model, model_fingerprint

    d = copy_model(tiny_pair[0], tmp_path / "both")
    marker = tmp_path / "pwned"
    other = load_file(str(tiny_pair[1] / "model.safetensors"))  # other weights: a mix-up would show
    torch.save({**other, "evil": _Payload(marker)}, d / "pytorch_model.bin")
    want = load_file(str(tiny_pair[0] / "model.safetensors"))
    for allow in (False, True):
        lm = load_model(d, device="cpu", allow_pickle=allow)
        sd = lm.model.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in want.items()), allow
        assert lm.fingerprint == model_fingerprint(d, allow_pickle=allow)
    assert not marker.exists()
    assert main(["eval", "--model", str(d), "--suite", str(tiny_suites[0]), *FAST, "--allow-pickle"]) == 0
    assert not marker.exists()


def test_deeply_nested_safetensors_header_is_refused(tmp_path):
    from harness.models.load import check_safetensors

    header = b"[" * 200_000 + b"]" * 200_000
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ModelError, match="not valid JSON"):
        check_safetensors(f)


# ---------------------------------------------------------------------------------------------- YAML --

def _suite_text(extra: str = "", params: str = "{rate: 0.1}") -> str:
    return ("kind: suite\nname: hostile\nrole: shift\nshift_type: synthetic\n"
            "derived_from: {suite: tiny-id, splits: [validation]}\n"
            f"transforms: [{{name: typos, params: {params}, seed: 3}}]\nclasses: [negative, positive]\n"
            f"max_length: 32\nmetrics: [accuracy]\n{extra}")


def _laughs(levels: int = 9, width: int = 9) -> str:
    parts = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("doc, needle", [
    (_suite_text(params="{rate: 0.1, junk: " + _laughs() + "}"), "too many values"),  # 9^9 values from 700 bytes
    ("a: &a [1, *a]\nkind: suite\n", "recursive alias"),
    ("kind: suite\nx: " + "[" * 50_000 + "]" * 50_000 + "\n", "nests too deeply"),
    ("kind: suite\nname: " + "x" * (2 << 20) + "\n", "too large"),
], ids=["billion_laughs", "recursive_alias", "deep_nesting", "huge_file"])
def test_hostile_yaml_is_refused_quickly(tmp_path, capsys, doc, needle):
    f = tmp_path / "hostile.yaml"
    f.write_text(doc)
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=needle):
        load_spec(f)
    assert main(["validate", str(f)]) == 2
    assert needle in capsys.readouterr().err
    # a bound, not a timing: an unbounded expansion runs for minutes or exhausts memory; on a loaded 2-core
    # runner the refusal itself took 14-30 s (2026-11-30), so the bound leaves room for shared machines
    assert time.perf_counter() - t0 < 60


def test_billion_laughs_inside_a_valid_suite_does_not_reach_the_pipeline(tiny_pair, tiny_suites, tmp_path, capsys):
    """Before the bound, this 700-byte suite validated and then the spec hash expanded it until memory ran out."""
    shutil.copy(tiny_suites[0], tmp_path / "id.yaml")
    shutil.copy(tiny_suites[0].parent / "id.csv", tmp_path / "id.csv")
    f = tmp_path / "laughs.yaml"
    f.write_text(_suite_text(params="{rate: 0.1, junk: " + _laughs() + "}"))
    assert main(["eval", "--model", str(tiny_pair[0]), "--suite", str(f), *FAST]) == 2
    assert "too many values" in capsys.readouterr().err


def test_anchors_and_merge_keys_of_normal_size_still_work(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("kind: suite\nname: a\nrole: id\nsource: &src {type: local, files: [x.csv]}\n"
                 "classes: &cls [negative, positive]\nsplits:\n  - &s {name: v, role: validation, fraction: 0.5}\n"
                 "  - {<<: *s, name: t, role: test}\nmetrics: [accuracy]\n")
    suite = load_spec(f)
    assert [s.name for s in suite.splits] == ["v", "t"] and suite.splits[1].fraction == 0.5


@pytest.mark.parametrize("layout", ["self", "pair", "triangle"])
def test_include_cycle_is_an_error_not_a_hang(tmp_path, capsys, layout):
    names = {"self": ["a"], "pair": ["a", "b"], "triangle": ["a", "b", "c"]}[layout]
    for i, n in enumerate(names):
        nxt = names[(i + 1) % len(names)]
        (tmp_path / f"{n}.yaml").write_text(f"include: {nxt}.yaml\nkind: suite\nname: {n}\n")
    with pytest.raises(SpecError, match="include"):
        read_yaml(tmp_path / "a.yaml")
    assert main(["validate", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert "include" in err and "Traceback" not in err


def test_include_of_a_missing_or_non_mapping_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "a.yaml").write_text("include: [missing.yaml]\nkind: suite\n")
    with pytest.raises(SpecError, match=r"(?s)not found.*missing\.yaml"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("include: list.yaml\nkind: suite\n")
    with pytest.raises(SpecError, match="mapping"):
        read_yaml(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("include: {a: 1}\nkind: suite\n")
    with pytest.raises(SpecError, match="include"):
        read_yaml(tmp_path / "c.yaml")


def test_spec_path_that_is_not_a_regular_file(tmp_path):
    with pytest.raises(SpecError, match="not a regular file"):
        read_yaml(tmp_path)
    with pytest.raises(SpecError, match="too large|not a regular file"):
        read_yaml("/dev/zero")  # would read forever without the size bound


def test_adapter_config_that_is_not_an_object(tiny_pair, tiny_suites, tmp_path, capsys):
    adapter = make_lora_adapter(tiny_pair[0], tmp_path / "lora")
    for text in ("[1, 2]", "\x00\xff", json.dumps({"peft_type": "LORA", "r": "four"})):
        (adapter / "adapter_config.json").write_text(text)
        code = main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(adapter), "--suite",
                     str(tiny_suites[0]), "--alphas", "0,1", *FAST])
        err = capsys.readouterr().err
        assert code == 2, (text, err)
        assert "Traceback" not in err
