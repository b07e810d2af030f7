"""Tests of harness.settings: one source for flags, run-file keys and API keywords; precedence; errors; the
README table; the environment read in one module."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import harness
from harness import api
from harness.cli import _settings, build_parser
from harness.errors import SpecError
from harness.settings import ENVIRONMENT, Settings, env, flag_of, make_settings, settings_fields
from harness.spec.run import RunConfig

ROOT = Path(__file__).resolve().parents[2]
FIELDS = list(settings_fields())
API = {"eval": api.run_eval, "sweep": api.run_sweep, "blend": api.run_blend, "demo": api.run_demo,
       "train": api.run_train}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_has_a_flag_a_run_file_key_and_an_api_keyword(name):
    commands = Settings.__pydantic_fields__[name].json_schema_extra["commands"]
    parsers = _subparsers()
    for command in commands:
        flags = {s: a.dest for a in parsers[command]._actions for s in a.option_strings}
        assert flags.get(flag_of(name)) == name, f"harness {command} has no {flag_of(name)}"
        param = inspect.signature(API[command]).parameters.get(name)
        assert param is not None and param.kind is inspect.Parameter.KEYWORD_ONLY, f"{command} API lacks {name}"
        assert param.default == Settings.__pydantic_fields__[name].default
    assert name in RunConfig.model_fields, f"run file has no key {name}"


def test_defaults_are_those_of_run_options():
    from harness.pipeline import RunOptions
    from harness.pipeline.common import RunOptions as Same

    assert RunOptions is Settings and Same is Settings
    opts = RunOptions()
    assert (opts.dtype, opts.n_resamples, opts.seed, opts.confidence, opts.use_store, opts.compile) == \
        ("fp32", 1000, 0, 0.95, True, False)
    assert dataclasses.replace(opts, dtype="bf16").dtype == "bf16"  # a frozen dataclass, as before


def test_flag_overrides_run_file_overrides_default():
    a = build_parser().parse_args(["sweep", "--dtype", "bf16", "--no-store", "--quiet"])
    s = _settings(a, "sweep", {"dtype": "fp16", "seed": 3, "tolerance": 0.02})
    assert (s.dtype, s.seed, s.tolerance, s.use_store, s.progress, s.n_resamples) == \
        ("bf16", 3, 0.02, False, False, 1000)


def test_speed_switches_from_every_source():
    a = build_parser().parse_args(["sweep", "--packed", "off", "--attention", "flash", "--no-prepack",
                                   "--trunk-cache-gib", "0.5", "--compile", "--threads", "1"])
    s = _settings(a, "sweep")
    assert (s.packed, s.attention, s.prepack, s.trunk_cache_bytes, s.compile, s.effective_threads) == \
        ("off", "flash", False, 2**29, True, 1)
    run = RunConfig(kind="run", packed="on", trunk_cache_gib=1.0).model_dump(exclude_unset=True)
    assert run == {"kind": "run", "packed": "on", "trunk_cache_gib": 1.0}
    assert s.manifest()["threads"] == 1 and s.manifest()["packed"] == "off"


def test_threads_default_respects_omp_and_affinity(monkeypatch):
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert Settings().effective_threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert Settings().effective_threads == len(os.sched_getaffinity(0))
    assert Settings(threads=5).effective_threads == 5


@pytest.mark.parametrize("values, command, needle", [
    ({"dtype": "fp64"}, "eval", "--dtype"),
    ({"dtyp": "bf16"}, "eval", "did you mean 'dtype'"),
    ({"select": "weighted"}, "eval", "not a setting of eval"),
    ({"alphas": "0,abc"}, "sweep", "--alphas"),
    ({"alphas": [0.0, 2.0]}, "sweep", "--alphas"),
    ({"alphas": False}, "sweep", "--alphas"),  # a YAML boolean (found by the spec fuzz test)
    ({"alphas": [0.0, True]}, "sweep", "--alphas"),
    ({"alphas": 0.5}, "sweep", "--alphas"),
    ({"label_map": "positive"}, "eval", "--label-map"),
    ({"batch_tokens": 0}, "eval", "--batch-tokens"),
    ({"tolerance": 1.5}, "sweep", "--tolerance"),
    ({"trunk_cache_gib": -1}, "sweep", "--trunk-cache-gib"),
])
def test_bad_settings_are_spec_errors_naming_the_flag(values, command, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(")):
        make_settings(values, command=command)


def test_api_rejects_unknown_keywords_before_loading_anything(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'n_resamples'"):
        harness.run_eval(tmp_path / "no-model", [tmp_path / "no-suite.yaml"], n_resample=10)


def test_label_map_flag_form():
    assert make_settings({"label_map": "LABEL_0=negative, LABEL_1=positive"}).label_map == \
        {"LABEL_0": "negative", "LABEL_1": "positive"}


def test_environment_is_read_in_one_module():
    readers = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                readers.append(str(path.relative_to(ROOT)))
    assert not readers, f"read the environment through harness.settings.env: {readers}"
    with pytest.raises(KeyError):
        env("SOME_UNDOCUMENTED_VARIABLE")
    assert "HARNESS_CACHE" in ENVIRONMENT and "HARNESS_TRUNK_CACHE_GIB" in ENVIRONMENT


def test_readme_settings_table_is_generated_and_current():
    from harness.settings import settings_table
    from harness.spec.docs import render_settings_sections

    readme = (ROOT / "README.md").read_text()
    assert settings_table() in readme
    assert render_settings_sections(readme) == readme, "run: python -m harness.spec.docs"
