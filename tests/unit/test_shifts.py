"""Tests of the perturbation table, its parameter checks, seeding, and derived (perturbation) suites."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.data import shifts
from harness.data.shifts import TRANSFORMS, apply_transforms, example_rng, validate_transforms
from harness.data.sources import load_splits
from harness.errors import SpecError
from harness.records import SplitData, SplitRef, SplitRole, SuiteRole
from harness.spec.load import load_suite
from harness.spec.schema import Suite, TransformSpec

TEXT = ("I don't think the plot is good, but the cast is great! We are not bored; it is fun. "
        "They have not seen anything like it.")
REPO = Path(__file__).resolve().parents[2]

# name -> params whose output depends on the rng (used for "another seed gives another text")
STOCHASTIC = {
    "typos": {"rate": 0.2},
    "case": {"mode": "random"},
    "word_dropout": {"rate": 0.3},
    "contractions": {"direction": "swap", "rate": 0.5},
}
ALL = {**STOCHASTIC, "punctuation_removal": {}}


def run(name: str, text: str = TEXT, seed: int = 0, ex: str = "e1", **params) -> str:
    full = validate_transforms([TransformSpec(name=name, params=params)])[0]
    return TRANSFORMS[name].fn(text, example_rng(seed, name, 0, ex), **full)


def test_table_is_frozen_and_explicit():
    assert set(TRANSFORMS) >= {"typos", "case", "punctuation_removal", "word_dropout", "contractions"}
    with pytest.raises(TypeError):
        TRANSFORMS["new"] = TRANSFORMS["case"]  # type: ignore[index]
    with pytest.raises(TypeError):
        TRANSFORMS["typos"].params["rate"] = None  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(ALL))
def test_deterministic_for_same_seed(name):
    assert run(name, **ALL[name]) == run(name, **ALL[name])


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_other_seed_or_example_changes_output(name):
    a = run(name, seed=0, **STOCHASTIC[name])
    assert a != TEXT
    assert any(run(name, seed=s, **STOCHASTIC[name]) != a for s in range(1, 4))
    assert any(run(name, ex=f"e{i}", **STOCHASTIC[name]) != a for i in range(2, 5))


def test_typos_use_keyboard_neighbours():
    out = run("typos", text="asdf", rate=1.0, ops=["substitute"])
    assert len(out) == 4
    for src, dst in zip("asdf", out):
        assert dst in shifts.QWERTY_NEIGHBOURS[src]
    assert set(shifts.QWERTY_NEIGHBOURS["a"]) == set("qwsz")
    assert run("typos", text="Hello, World!", rate=0.0) == "Hello, World!"
    assert run("typos", text="AB", rate=1.0, ops=["substitute"]).isupper()
    assert run("typos", text="a", rate=1.0, ops=["delete"]) == "a"  # never blanks a text
    assert run("typos", text="ab cd", rate=1.0, ops=["delete"]) == "ab cd"
    assert len(run("typos", text="abc", rate=1.0, ops=["insert"])) == 6
    assert sorted(run("typos", text="abcd", rate=1.0, ops=["swap"])) == sorted("abcd")


def test_case_modes():
    assert run("case", text="Don't STOP", mode="lower") == "don't stop"
    assert run("case", text="Don't stop", mode="upper") == "DON'T STOP"
    assert run("case", text="don't STOP (now)", mode="title") == "Don't Stop (Now)"
    rnd = run("case", text="abcdefghij" * 3, mode="random")
    assert rnd.lower() == "abcdefghij" * 3 and rnd != rnd.lower() and rnd != rnd.upper()


def test_punctuation_removal():
    assert run("punctuation_removal", text="Great -- really, great!") == "Great really great"
    assert run("punctuation_removal", text="don't stop!", keep="'") == "don't stop"
    assert run("punctuation_removal", text="?!") == "?!"


def test_word_dropout_never_empty():
    for seed in range(20):
        out = run("word_dropout", text="one two three", seed=seed, rate=1.0)
        assert out in {"one", "two", "three"}
    assert run("word_dropout", text="one two three", rate=0.0) == "one two three"
    assert run("word_dropout", text="", rate=0.5) == ""


def test_contractions_directions_keep_case():
    assert run("contractions", text="Do not go, it is late", direction="contract") == "Don't go, it's late"
    assert run("contractions", text="Don't go, IT'S late", direction="expand") == "Do not go, IT IS late"
    assert run("contractions", text="Don\u2019t go", direction="expand") == "Do not go"
    assert run("contractions", text="do  not go", direction="contract") == "don't go"
    assert run("contractions", text="do not go, it's late", direction="swap") == "don't go, it is late"
    assert run("contractions", text="donot cannot", direction="contract") == "donot can't"
    assert run("contractions", text="They are here", direction="contract", rate=0.0) == "They are here"


def test_unknown_transform_suggests_near_names():
    with pytest.raises(SpecError) as e:
        validate_transforms([TransformSpec(name="typo")])
    assert "did you mean 'typos'" in str(e.value) and "word_dropout" in str(e.value)


@pytest.mark.parametrize("name,params,needle", [
    ("typos", {"rate": 1.5}, "a number in [0, 1]"),
    ("typos", {"rate": "high"}, "a number in [0, 1]"),
    ("typos", {"rate": True}, "a number in [0, 1]"),
    ("typos", {"ops": ["teleport"]}, "substitute, insert, delete, swap"),
    ("typos", {"ops": []}, "non-empty"),
    ("case", {"mode": "shout"}, "lower, upper, title, random"),
    ("word_dropout", {"rate": -0.1}, "a number in [0, 1]"),
    ("contractions", {"direction": "sideways"}, "expand, contract, swap"),
    ("punctuation_removal", {"keep": 3}, "string"),
])
def test_bad_param_values(name, params, needle):
    with pytest.raises(SpecError) as e:
        validate_transforms([TransformSpec(name=name, params=params)], owner="suite 'x'")
    msg = str(e.value)
    assert needle in msg and "suite 'x': transforms[0].params." in msg


def test_unknown_params_list_accepted_ones():
    with pytest.raises(SpecError) as e:
        validate_transforms([TransformSpec(name="typos", params={"prob": 0.1})])
    assert "'prob'" in str(e.value) and "rate, ops" in str(e.value)


def split_data(n: int = 30) -> SplitData:
    frame = pd.DataFrame({"example_id": [f"ex{i}" for i in range(n)], "source_id": [f"doc{i // 3}" for i in range(n)],
                          "text": [f"This is not sentence number {i}, is it? We do not know." for i in range(n)]})
    frame["label"] = pd.Series([i % 2 for i in range(n)], dtype="int64")
    ref = SplitRef(suite="base", split="test", role=SplitRole.TEST, suite_role=SuiteRole.ID, suite_version="1",
                   fingerprint="f" * 64)
    return SplitData(ref=ref, frame=frame, classes=("negative", "positive"), n_dropped=4,
                     drop_reasons={"neutral_band": 4})


def derived_suite(transforms, classes=("negative", "positive"), name="base-typos") -> Suite:
    return Suite.model_validate({
        "kind": "suite", "name": name, "version": "2", "role": "shift", "shift_type": "synthetic",
        "derived_from": {"suite": "base", "split": "test"}, "classes": list(classes),
        "transforms": [t.model_dump() for t in transforms]})


def test_apply_keeps_ids_labels_and_sets_ref():
    split = split_data()
    ts = [TransformSpec(name="typos", params={"rate": 0.1}, seed=3), TransformSpec(name="contractions")]
    out = apply_transforms(split, ts, derived_suite(ts))
    for col in ("example_id", "source_id", "label"):
        assert out.frame[col].tolist() == split.frame[col].tolist()
    assert out.frame["label"].dtype == "int64"
    assert (out.frame["text"] != split.frame["text"]).any()
    assert out.ref.suite == "base-typos" and out.ref.split == "test" and out.ref.role is SplitRole.TEST
    assert out.ref.suite_role is SuiteRole.SHIFT and out.ref.shift_type == "synthetic"
    assert out.ref.suite_version == "2"
    assert out.drop_reasons == {"neutral_band": 4} and out.n_dropped == 4
    assert split.frame["text"][0].startswith("This is not")  # input untouched
    again = apply_transforms(split, ts, derived_suite(ts))
    assert again.ref.fingerprint == out.ref.fingerprint
    other = [TransformSpec(name="typos", params={"rate": 0.2}, seed=3), TransformSpec(name="contractions")]
    assert apply_transforms(split, other, derived_suite(other)).ref.fingerprint != out.ref.fingerprint


def test_apply_does_not_depend_on_order_or_batch():
    split = split_data()
    ts = [TransformSpec(name="word_dropout", params={"rate": 0.3}, seed=1)]
    full = apply_transforms(split, ts, derived_suite(ts)).frame.set_index("example_id")["text"]
    rev = split.frame.iloc[::-1].reset_index(drop=True)
    part = SplitData(ref=split.ref, frame=rev.iloc[:7].reset_index(drop=True), classes=split.classes)
    got = apply_transforms(part, ts, derived_suite(ts)).frame.set_index("example_id")["text"]
    assert all(got[i] == full[i] for i in got.index)


def test_apply_rejects_changed_classes():
    ts = [TransformSpec(name="case")]
    with pytest.raises(SpecError, match="keep the classes"):
        apply_transforms(split_data(), ts, derived_suite(ts, classes=("positive", "negative")))


def write_suites(tmp_path: Path, derived: dict) -> Path:
    (tmp_path / "data.csv").write_text("text,label\n" + "".join(
        f"Sentence {i} is not bad,{i % 2}\n" for i in range(40)), encoding="utf-8")
    base = {"kind": "suite", "name": "base", "role": "id", "classes": ["negative", "positive"],
            "source": {"type": "local", "files": ["data.csv"]},
            "splits": [{"name": "validation", "role": "validation", "fraction": 0.5},
                       {"name": "test", "role": "test", "fraction": 0.5}]}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    (tmp_path / "notes.yaml").write_text("- not a suite\n", encoding="utf-8")
    doc = {"kind": "suite", "name": "base-case", "role": "shift", "shift_type": "synthetic",
           "classes": ["negative", "positive"], "transforms": [{"name": "case", "params": {"mode": "upper"}}]}
    doc.update(derived)
    path = tmp_path / "derived.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("ref", ["base", "base.yaml"])
def test_derived_suite_loads_source_splits(tmp_path, ref):
    path = write_suites(tmp_path, {"derived_from": {"suite": ref, "splits": ["test", "validation"]}})
    out = load_splits(load_suite(path), suite_path=path)
    src = load_splits(load_suite(tmp_path / "base.yaml"), suite_path=tmp_path / "base.yaml")
    assert list(out) == ["test", "validation"]  # derived_from order
    for name in out:
        assert out[name].ref.role == src[name].ref.role
        assert out[name].frame["example_id"].tolist() == src[name].frame["example_id"].tolist()
        assert out[name].frame["text"].tolist() == [t.upper() for t in src[name].frame["text"]]
    only = load_splits(load_suite(path), suite_path=path, split_names=["validation"])
    assert list(only) == ["validation"]
    with pytest.raises(SpecError, match="available|expected"):
        load_splits(load_suite(path), suite_path=path, split_names=["train"])


def test_derived_suite_with_explicit_resolver(tmp_path):
    path = write_suites(tmp_path, {"derived_from": {"suite": "elsewhere", "split": "test"}})
    seen = []

    def resolve(name):
        seen.append(name)
        return load_suite(tmp_path / "base.yaml"), tmp_path / "base.yaml"

    out = load_splits(load_suite(path), suite_path=path, resolve=resolve)
    assert seen == ["elsewhere"] and list(out) == ["test"]


def test_derived_suite_unknown_source_suggests(tmp_path):
    path = write_suites(tmp_path, {"derived_from": {"suite": "bse", "split": "test"}})
    with pytest.raises(SpecError) as e:
        load_splits(load_suite(path), suite_path=path)
    assert "did you mean 'base'" in str(e.value)


def test_derived_suite_bad_transform_fails_before_reading(tmp_path):
    path = write_suites(tmp_path, {"derived_from": {"suite": "base", "split": "test"},
                                   "transforms": [{"name": "typos", "params": {"rate": 2}}]})
    (tmp_path / "data.csv").unlink()
    with pytest.raises(SpecError, match="rate"):
        load_splits(load_suite(path), suite_path=path)


def test_derived_cycle_is_refused(tmp_path):
    path = write_suites(tmp_path, {"derived_from": {"suite": "base-case", "split": "test"}})
    with pytest.raises(SpecError, match="cycle"):
        load_splits(load_suite(path), suite_path=path)


def test_committed_synthetic_suite_is_valid():
    path = REPO / "suites" / "vader-movies-typos.yaml"
    suite = load_suite(path)
    validate_transforms(suite.transforms)
    assert suite.derived_from.split_names == ["validation", "test"]
    source = load_suite(REPO / "suites" / "vader-movies.yaml")
    assert source.classes == suite.classes
    assert set(suite.derived_from.split_names) <= {s.name for s in source.splits}


def test_random_generator_is_stdlib():
    assert isinstance(example_rng(0, "typos", 0, "x"), random.Random)
    assert example_rng(0, "typos", 0, "x").random() == example_rng(0, "typos", 0, "x").random()
    assert example_rng(0, "typos", 0, "x").random() != example_rng(0, "typos", 1, "x").random()
