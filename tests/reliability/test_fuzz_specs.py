"""Issue 7, part 5a: property-based tests over spec files. Random valid and invalid suite, policy, training and run
documents (the repository's real specs, mutated with the schema's real field names and values plus random junk)
must load into a validated object or raise :class:`~harness.errors.SpecError`, nothing else; a validated object
must hash. Random text, bytes and nested junk never make ``harness validate`` exit with anything but 0 or 2.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from harness.cli import main
from harness.errors import SpecError
from harness.spec.load import KINDS, _model_class, load_spec, read_yaml, spec_hash

REPO = Path(__file__).resolve().parents[2]
# derandomize: the same examples on every run (CI reproducible); no example database written into the repository
SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _field_names() -> list[str]:
    names: set[str] = set()
    seen: set[type] = set()

    def walk(cls) -> None:
        if cls in seen or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return
        seen.add(cls)
        for name, f in cls.model_fields.items():
            names.add(name)
            for arg in _types_in(f.annotation):
                walk(arg)

    for kind in KINDS:
        walk(_model_class(kind))
    return sorted(names)


def _types_in(annotation) -> list:
    out, todo = [], [annotation]
    while todo:
        a = todo.pop()
        out.append(a)
        todo.extend(getattr(a, "__args__", ()) or ())
    return out


FIELDS = _field_names()
# values the schema really uses, so mutations often stay valid or fail on a single rule
KNOWN_VALUES = ["suite", "policy", "training", "run", "id", "shift", "natural", "synthetic", "train", "validation",
                "test", "local", "hub", "builtin", "vader-icwsm2014", "movie_reviews", "error", "drop", "keep",
                "accuracy", "macro_f1", "nll", "ece", "balanced_accuracy", "delta", "floor", "ceiling",
                "negative_flips", "each", "mean", "worst", "base", "adapted", "baseline", "chosen", "bound", "point",
                "typos", "csv", "jsonl", "auto", "shared", "max-shift-within-id", "weighted", "id-only", "adaptive",
                0, 1, -1, 0.5, 0.95, 1.5, 2, 8, 128, 100000, True, False, None, "", [], {}, ["negative", "positive"],
                ["a", "a"], {"pos": "positive"}, {"name": "v", "role": "validation", "fraction": 0.5},
                [{"name": "t", "role": "test"}], {"type": "local", "files": ["x.csv"]}]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(KNOWN_VALUES))
junk = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), kids,
                                                max_size=4)), max_leaves=12)


def _seeds() -> list[dict]:
    docs = [read_yaml(p) for p in sorted((REPO / "suites").rglob("*.yaml"))]
    docs.append({"kind": "suite", "name": "tiny-id", "role": "id", "source": {"type": "local", "files": ["id.csv"]},
                 "classes": ["negative", "positive"], "splits": [
                     {"name": "validation", "role": "validation", "fraction": 0.5},
                     {"name": "test", "role": "test", "fraction": 0.5}], "max_length": 32,
                 "metrics": ["accuracy", "nll"]})
    docs.append({"kind": "suite", "name": "typos", "role": "shift", "shift_type": "synthetic",
                 "derived_from": {"suite": "tiny-id", "splits": ["validation", "test"]},
                 "transforms": [{"name": "typos", "params": {"rate": 0.1}, "seed": 3}],
                 "classes": ["negative", "positive"], "metrics": ["accuracy"]})
    docs.append({"kind": "run", "base": "b", "adapted": "a", "suites": ["s.yaml"], "alphas": "0,0.5,1"})
    assert {d.get("kind") for d in docs} >= set(KINDS)
    return docs


SEEDS = _seeds()


def _paths(doc, prefix=()):
    """Every (container, key) inside ``doc``."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out += _paths(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out += _paths(v)
    return out


@st.composite
def documents(draw) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "set", "add", "nested", "nested_drop"]))
        if op == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc, key=str))))
        elif op == "set":
            doc[draw(st.sampled_from(FIELDS))] = draw(junk)
        elif op == "add":
            doc[draw(st.one_of(st.text(max_size=10), st.sampled_from(FIELDS)))] = draw(junk)
        elif op in ("nested", "nested_drop"):
            paths = _paths(doc)
            if paths:
                container, key = draw(st.sampled_from(range(len(paths))).map(lambda i: paths[i]))
                if op == "nested":
                    container[key] = draw(junk)
                else:
                    container.pop(key)
    return doc


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "spec.yaml"


def _dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _load_or_spec_error(path: Path):
    try:
        obj = load_spec(path)
    except SpecError as e:
        assert str(e).strip(), "empty error message"
        return None
    assert isinstance(obj, BaseModel) and obj.kind in KINDS
    assert len(spec_hash(obj)) == 64  # a validated spec always hashes (no NaN surprises, no cycles)
    return obj


@SETTINGS
@given(doc=documents())
def test_mutated_specs_validate_or_raise_spec_error(spec_file, doc):
    spec_file.write_text(_dump(doc), encoding="utf-8")
    _load_or_spec_error(spec_file)


def test_the_generator_makes_valid_and_invalid_documents(spec_file):
    """Guard against a vacuous fuzz: the seeds are valid, and mutations produce both outcomes."""
    outcomes = set()

    @settings(max_examples=80, deadline=None, derandomize=True, database=None)
    @given(doc=documents())
    def probe(doc):
        spec_file.write_text(_dump(doc), encoding="utf-8")
        outcomes.add(_load_or_spec_error(spec_file) is not None)

    probe()
    assert outcomes == {True, False}


@SETTINGS
@given(doc=junk)
def test_random_junk_documents_raise_only_spec_error(spec_file, doc):
    spec_file.write_text(_dump(doc), encoding="utf-8")
    _load_or_spec_error(spec_file)


YAMLISH = st.text(alphabet=st.one_of(st.sampled_from(list("{}[]:,-?&*!|>'\"#%@`~ \n\t=<.01aZ_")),
                                     st.characters()), max_size=160)


def _validate_exit(path: Path) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["validate", str(path)])
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue()
    return code


@SETTINGS
@given(text=st.one_of(YAMLISH, st.builds(lambda d, t: _dump(d) + t, documents(), YAMLISH)))
def test_random_text_never_crashes_validate(spec_file, text):
    spec_file.write_bytes(text.encode("utf-8", errors="replace"))
    assert _validate_exit(spec_file) in (0, 2)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_crash_validate(spec_file, data):
    spec_file.write_bytes(data)
    assert _validate_exit(spec_file) == 2


def test_non_finite_numbers_in_specs_are_spec_errors_or_valid(spec_file):
    for value in (math.nan, math.inf, -math.inf):
        for key in ("max_length", "split_seed", "confidence", "tolerance"):
            doc = copy.deepcopy(SEEDS[-3])
            doc[key] = value
            spec_file.write_text(_dump(doc))
            _load_or_spec_error(spec_file)


@pytest.mark.parametrize("doc", [
    {"kind": "run", "base": "b", "adapted": "a", "suites": ["s.yaml"], "alphas": False},
    {"kind": "suite", "name": "x", "version": "1", "role": "shift", "shift_type": "natural",
     "source": {"type": "local", "files": ["a.jsonl"]}, "id_column": "id", "task": [],
     "splits": [{"name": "test", "role": "test", "files": ["a.jsonl"]}]},
])
def test_cases_the_fuzz_found_are_spec_errors(spec_file, doc):
    """Documents hypothesis found raising TypeError (a YAML boolean as alphas, a list as task): now SpecError."""
    spec_file.write_text(_dump(doc), encoding="utf-8")
    with pytest.raises(SpecError):
        load_spec(spec_file)
