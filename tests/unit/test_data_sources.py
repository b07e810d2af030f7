"""Tests of local and hub sources: reading, missing text, labels, ids, filters and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.data.sources import load_splits
from harness.errors import DataError, SpecError
from harness.records import SplitRole, SuiteRole
from harness.spec.load import load_suite
from harness.spec.schema import Suite

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def suite(files, splits=None, source=None, **kw) -> Suite:
    doc = {"kind": "suite", "name": "local", "role": "id", "classes": ["negative", "positive"],
           "source": {"type": "local", "files": [str(f) for f in files], **(source or {})},
           "splits": splits or [{"name": "test", "role": "test"}]}
    doc.update(kw)
    return Suite.model_validate(doc)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def one(s: Suite, **kw):
    return next(iter(load_splits(s, **kw).values()))


def test_csv_literal_na_and_null_are_text(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nNA,0\nnull,1\nNone,0\n\"a, quoted\"\"text\",1\n")
    out = one(suite([f]))
    assert out.frame["text"].tolist() == ["NA", "null", "None", 'a, quoted"text']
    assert out.frame["label"].tolist() == [0, 1, 0, 1]
    assert list(out.frame.columns) == ["example_id", "source_id", "text", "label"]
    assert out.frame["label"].dtype == "int64"
    assert out.frame["example_id"].tolist() == ["0", "1", "2", "3"]
    assert out.frame["source_id"].tolist() == out.frame["example_id"].tolist()
    assert out.n_dropped == 0 and out.drop_reasons == {}
    ref = out.ref
    assert (ref.suite, ref.split, ref.role, ref.suite_role, ref.shift_type, ref.suite_version) == (
        "local", "test", SplitRole.TEST, SuiteRole.ID, None, "1")
    assert len(ref.fingerprint) == 64


def test_byte_order_mark_is_not_part_of_the_header(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes("text,label\nx,1\n".encode("utf-8-sig"))
    j = tmp_path / "bom.jsonl"
    j.write_bytes('{"text": "y", "label": 0}\n'.encode("utf-8-sig"))
    assert one(suite([f])).frame["text"].tolist() == ["x"]
    assert one(suite([j])).frame["text"].tolist() == ["y"]


MISSING_CSV = "id,text,label\na,good,1\nb,,0\nc,   ,1\nd,bad,0\n"


def test_missing_text_error_names_rows_and_fix(tmp_path):
    f = write(tmp_path / "d.csv", MISSING_CSV)
    with pytest.raises(DataError) as e:
        load_splits(suite([f], id_column="id"))
    msg = str(e.value)
    assert "2 row(s)" in msg and "'b', 'c'" in msg and "on_missing_text: drop" in msg and "keep" in msg


def test_missing_text_drop_counts(tmp_path):
    f = write(tmp_path / "d.csv", MISSING_CSV)
    out = one(suite([f], id_column="id", source={"on_missing_text": "drop"}))
    assert out.frame["example_id"].tolist() == ["a", "d"]
    assert out.drop_reasons == {"missing_text": 2} and out.n_dropped == 2


def test_missing_text_keep_gives_empty_strings(tmp_path):
    f = write(tmp_path / "d.csv", MISSING_CSV)
    out = one(suite([f], id_column="id", source={"on_missing_text": "keep"}))
    assert out.frame["text"].tolist() == ["good", "", "", "bad"]
    assert out.n_dropped == 0


def test_jsonl_nulls_are_missing(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"text": "ok", "label": 1}, {"text": None, "label": 0}, {"label": 1},
                                     {"text": "NA", "label": 0}])
    out = one(suite([f], source={"on_missing_text": "drop"}))
    assert out.frame["text"].tolist() == ["ok", "NA"]
    assert out.drop_reasons == {"missing_text": 2}


def test_parquet_with_nulls_and_text_pair(tmp_path):
    f = tmp_path / "d.parquet"
    pd.DataFrame({"premise": ["a", "b", None], "hypothesis": ["x", None, "z"], "label": [0, 1, 1]}).to_parquet(f)
    s = suite([f], text="premise", text_pair="hypothesis", source={"on_missing_text": "keep"})
    out = one(s)
    assert list(out.frame.columns) == ["example_id", "source_id", "text", "text_pair", "label"]
    assert out.frame["text"].tolist() == ["a", "b", ""]
    assert out.frame["text_pair"].tolist() == ["x", "", "z"]


def test_string_labels_through_label_map(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,pos\ny,neg\nz,positive\n")
    out = one(suite([f], label_map={"pos": "positive", "neg": "negative"}))
    assert out.frame["label"].tolist() == [1, 0, 1]


def test_int_labels_and_int_label_map_keys(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0}])
    assert one(suite([f])).frame["label"].tolist() == [1, 0]
    # YAML may give int keys as ints or as strings; labels may come as ints (jsonl) or strings (csv)
    flipped = one(suite([f], label_map={"1": "negative", 0: "positive"}))
    assert flipped.frame["label"].tolist() == [0, 1]
    c = write(tmp_path / "d.csv", "text,label\nx,1\ny,0\n")
    assert one(suite([c], label_map={1: "negative", "0": "positive"})).frame["label"].tolist() == [0, 1]


def test_string_class_names_without_map(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,positive\ny,negative\n")
    assert one(suite([f])).frame["label"].tolist() == [1, 0]


@pytest.mark.parametrize("rows,label_map,needle", [
    ("x,pos\ny,neg\n", None, "'pos'"),
    ("x,2\ny,0\n", None, "'2'"),
    ("x,-1\ny,0\n", None, "'-1'"),
    ("x,pos\ny,neutral\n", {"pos": "positive"}, "'neutral'"),
    ("x,1\ny,0\n", {"pos": "positive"}, "'1'"),  # with a label_map, ints are not indices
])
def test_bad_labels(tmp_path, rows, label_map, needle):
    f = write(tmp_path / "d.csv", "text,label\n" + rows)
    with pytest.raises(DataError) as e:
        load_splits(suite([f], label_map=label_map))
    msg = str(e.value)
    assert "label outside the classes" in msg and needle in msg and "label_map" in msg and "ids '" in msg


def test_empty_label_says_it_is_empty_not_label_map(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,\ny,negative\nz,positive\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f]))
    msg = str(e.value)
    assert "1 row(s) of split 'test' have an empty label" in msg and "ids '0'" in msg
    assert "fill in the label" in msg and "outside the classes" not in msg and "add label_map" not in msg


def test_misspelled_class_name_is_suggested(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,account\ny,billing\nz,account\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f], classes=["acount", "billing"]))
    msg = str(e.value)
    assert "2 row(s) of split 'test' have a label outside the classes" in msg
    assert "a classes entry may be misspelled (the data has 'account', the classes 'acount', which no row carries)" in msg


def test_a_misspelt_label_in_the_data_points_at_the_data(tmp_path):
    """Trial 4: a data typo ('postive', while other rows carry 'positive') got the hint to correct classes first;
    the hint now says which side looks wrong."""
    f = write(tmp_path / "d.csv", "text,label\nx,positive\ny,negative\nz,postive\nw,positive\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f], classes=["negative", "positive"]))
    msg = str(e.value)
    assert "the data may be misspelled ('postive' is close to the class 'positive', which other rows carry)" in msg
    assert "{'postive': 'positive'}" in msg and "a classes entry may be misspelled" not in msg


def test_a_misspelt_class_is_one_problem_naming_every_split(tmp_path):
    """Three splits of one file, a classes entry misspelt: one problem with each split's count, the ids and
    values of all, and the hint once (issue 19: the same message came once per split)."""
    f = write(tmp_path / "d.csv", "id,text,label\n" + "".join(f"{i},t{i},{'account' if i % 2 else 'billing'}\n"
                                                               for i in range(30)))
    splits = [{"name": n, "role": r, "fraction": 1 / 3} for n, r in
              (("train", "train"), ("validation", "validation"), ("test", "test"))]
    with pytest.raises(DataError) as e:
        load_splits(suite([f], splits=splits, id_column="id", classes=["acount", "billing"]))
    msg = str(e.value)
    assert "data problems" not in msg and msg.count("outside the classes") == 1, msg
    fixed = load_splits(suite([f], splits=splits, id_column="id", classes=["account", "billing"]))
    odd = {n: int((sd.frame["label"] == 0).sum()) for n, sd in fixed.items()}  # the 'account' rows of each split
    assert msg.startswith(f"15 row(s) of splits 'train' ({odd['train']}), 'validation' ({odd['validation']}), "
                          f"'test' ({odd['test']}) have a label outside the classes")
    assert "(15 in all)" in msg and "got: values 'account'" in msg
    assert msg.count("a classes entry may be misspelled (the data has 'account', the classes 'acount', which no row carries)") == 1
    with pytest.raises(DataError) as one_split:  # one split asked: its own count, as before
        load_splits(suite([f], splits=splits, id_column="id", classes=["acount", "billing"]), split_names=["test"])
    assert str(one_split.value).startswith(f"{odd['test']} row(s) of split 'test' have a label outside")


def test_class_never_seen_is_suggested_as_misspelled(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,refund\ny,billing\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f], classes=["shipping", "billing"]))
    msg = str(e.value)
    assert "no row of this split has the class(es) ['shipping']" in msg and "['refund']" in msg


def test_every_problem_of_a_file_is_reported_in_one_run(tmp_path):
    """An empty label, an empty text and a repeated id in one CSV (two splits of it): one error lists them all."""
    f = write(tmp_path / "d.csv", "id,text,label\na,x,\nb,,positive\nb,z,negative\nc,w,neg\n")
    splits = [{"name": "train", "role": "train", "fraction": 0.5}, {"name": "test", "role": "test", "fraction": 0.5}]
    with pytest.raises(DataError) as e:
        load_splits(suite([f], splits=splits, id_column="id"))
    msg = str(e.value)
    assert "data problems in" in msg
    for needle in ("have an empty label", "have empty or null text", "share an id", "outside the classes"):
        assert needle in msg, needle


def test_missing_columns_name_file_and_field(tmp_path):
    f = write(tmp_path / "d.csv", "sentence,label\nx,1\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f]))
    msg = str(e.value)
    assert "'text'" in msg and "d.csv" in msg and "['sentence', 'label']" in msg and "set text" in msg
    with pytest.raises(DataError, match="id_column"):
        load_splits(suite([f], text="sentence", id_column="uid"))
    with pytest.raises(DataError, match="source.document_key"):
        load_splits(suite([f], text="sentence", source={"document_key": "doc"}))


def test_unreadable_and_absent_files(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_splits(suite([tmp_path / "absent.csv"]))
    bad = tmp_path / "latin.csv"
    bad.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="cannot read the csv file"):
        load_splits(suite([bad]))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read the parquet file"):
        load_splits(suite([junk]))
    broken = write(tmp_path / "b.jsonl", '{"text": "x", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"b.jsonl:2"):
        load_splits(suite([broken]))
    with pytest.raises(DataError, match="source.format"):
        load_splits(suite([write(tmp_path / "d.txt", "x")]))


def test_relative_paths_resolve_against_suite_folder(tmp_path):
    sub = tmp_path / "suites"
    sub.mkdir()
    write(tmp_path / "d.csv", "text,label\nx,1\n")
    s = suite(["../d.csv"])
    assert len(one(s, suite_path=sub / "s.yaml")) == 1


def test_where_filters_before_splitting(tmp_path):
    f = write(tmp_path / "d.csv", "text,label,part,n\na,1,keep,1\nb,0,skip,2\nc,1,keep,3\nd,0,other,3\n")
    out = one(suite([f], splits=[{"name": "t", "role": "test", "where": {"part": ["keep", "other"], "n": 3}}]))
    assert out.frame["text"].tolist() == ["c", "d"]
    assert out.n_dropped == 0  # rows outside where are not in the split, not dropped
    with pytest.raises(DataError, match="where names column 'prt'"):
        load_splits(suite([f], splits=[{"name": "t", "role": "test", "where": {"prt": "keep"}}]))


def test_split_matching_no_rows(tmp_path):
    f = write(tmp_path / "d.csv", "text,label,part\na,1,x\n")
    with pytest.raises(DataError, match="split 't' has no rows"):
        load_splits(suite([f], splits=[{"name": "t", "role": "test", "where": {"part": "y"}}]))


def test_duplicate_ids(tmp_path):
    f = write(tmp_path / "d.csv", "id,text,label\na,x,1\nb,y,0\na,z,1\n")
    with pytest.raises(DataError) as e:
        load_splits(suite([f], id_column="id"))
    assert "share an id" in str(e.value) and "'a'" in str(e.value)


def test_id_column_and_document_key(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"uid": 10, "doc": "r1", "text": "x", "label": 0},
                                     {"uid": 11, "doc": "r1", "text": "y", "label": 1},
                                     {"uid": 12, "doc": "r2", "text": "z", "label": 1}])
    out = one(suite([f], id_column="uid", source={"document_key": "doc"}))
    assert out.frame["example_id"].tolist() == ["10", "11", "12"]
    assert out.frame["source_id"].tolist() == ["r1", "r1", "r2"]


def test_split_files_and_prefixed_row_ids(tmp_path):
    a = write(tmp_path / "train.csv", "text,label\nx,1\ny,0\n")
    b = write(tmp_path / "dev.csv", "text,label\nz,1\n")
    s = suite([a, b], splits=[{"name": "train", "role": "train", "files": [str(a)]},
                              {"name": "validation", "role": "validation", "files": [str(b)]},
                              {"name": "all", "role": "test"}])
    out = load_splits(s)
    assert out["train"].frame["example_id"].tolist() == ["train:0", "train:1"]
    assert out["validation"].frame["example_id"].tolist() == ["dev:0"]
    assert out["all"].frame["example_id"].tolist() == ["train:0", "train:1", "dev:0"]


def test_split_selection_order_and_unknown_names(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(40)))
    s = suite([f], splits=[{"name": "validation", "role": "validation", "fraction": 0.5},
                           {"name": "test", "role": "test", "fraction": 0.5}])
    assert list(load_splits(s, split_names=["test", "validation"])) == ["validation", "test"]
    assert list(load_splits(s, split_names=["test"])) == ["test"]
    with pytest.raises(SpecError) as e:
        load_splits(s, split_names=["tset"])
    assert "did you mean 'test'" in str(e.value) and "validation" in str(e.value)


def test_fingerprint_changes_with_content(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nx,1\ny,0\n")
    first = one(suite([f])).ref.fingerprint
    assert one(suite([f])).ref.fingerprint == first
    write(f, "text,label\nx,1\ny!,0\n")
    assert one(suite([f])).ref.fingerprint != first


# ------------------------------------------------------------------------------------------------ hub
def hub_suite(**kw) -> Suite:
    doc = {"kind": "suite", "name": "hub", "role": "id", "classes": ["negative", "positive"],
           "source": {"type": "hub", "id": "someone/sentiment", "revision": "abc123", "split": "test"},
           "splits": [{"name": "test", "role": "test"}]}
    doc.update(kw)
    return Suite.model_validate(doc)


def test_hub_source_reads_pinned_revision(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(path, name=None, **kw):
        calls.append((path, name, kw))
        feats = datasets.Features({"sentence": datasets.Value("string"),
                                   "label": datasets.ClassLabel(names=["positive", "negative"])})
        return datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [0, 1]}, features=feats)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    out = one(hub_suite(text="sentence"))
    assert calls == [("someone/sentiment", None, {"revision": "abc123", "split": "test"})]
    # ClassLabel names are the suite's classes in another order: mapped by name, not by index
    assert out.frame["label"].tolist() == [1, 0]
    assert out.frame["text"].tolist() == ["good", "bad"]


@pytest.mark.parametrize("env", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", None])
def test_hub_offline_error_names_variable_and_cache(monkeypatch, tmp_path, env):
    datasets = pytest.importorskip("datasets")
    for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    if env:
        monkeypatch.setenv(env, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))

    def fake_load(*a, **kw):
        raise ConnectionError("Couldn't reach 'someone/sentiment' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(DataError) as e:
        load_splits(hub_suite())
    msg = str(e.value)
    assert "HF_DATASETS_OFFLINE" in msg and str(tmp_path / "hf") in msg and "someone/sentiment" in msg
    assert "offline" in msg and "abc123" in msg


def test_hub_other_failure(monkeypatch):
    datasets = pytest.importorskip("datasets")
    for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(v, raising=False)

    def fake_load(*a, **kw):
        raise ValueError("Unknown split 'tset'")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(DataError, match="cannot load the hub dataset") as e:
        load_splits(hub_suite())
    assert "Unknown split" in str(e.value)


def test_hub_needs_a_split_name():
    s = hub_suite(source={"type": "hub", "id": "x/y", "revision": "r"})
    with pytest.raises(SpecError, match="hub_split"):
        load_splits(s)


# ------------------------------------------------------------------------------------------------ suites
@pytest.mark.parametrize("name", ["suites/vader-movies", "suites/vader-tweets", "suites/vader-amazon",
                                  "suites/vader-nyt", "suites/vader-movies-typos", "examples/sst2-local"])
def test_committed_suites_validate(name):
    s = load_suite(REPO / f"{name}.yaml")
    assert s.metrics == ["accuracy", "macro_f1", "nll", "ece"] and s.max_length == 128
    if s.source is not None and s.source.type == "builtin":
        assert s.source.neutral_band == 0.5
        assert sum(sp.fraction for sp in s.splits) == pytest.approx(1.0)


def test_shared_sst2_example_suite():
    if not (SHARED / "sst2" / "train.csv").is_file() or not (SHARED / "rt_polarity" / "rt_polarity.csv").is_file():
        pytest.skip(f"shared data not present at {SHARED}")
    path = REPO / "examples" / "sst2-local.yaml"
    out = load_splits(load_suite(path), suite_path=path)
    assert {k: len(v) for k, v in out.items()} == {"train": 6863, "validation": 872, "test": 1977}
    assert out["validation"].frame["label"].value_counts().sort_index().tolist() == [428, 444]


def test_suites_folder_reads_no_data_outside_the_repository():
    """`harness validate suites/` (README, .ci/run) checks each suite's data: on a plain clone that works only if
    no suite under suites/ reads files from outside the repository (the SST-2 example that does lives in
    examples/)."""
    outside = []
    for path in sorted((REPO / "suites").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if doc.get("kind") != "suite":
            continue
        source = doc.get("source") or {}
        files = list(source.get("files") or []) + [f for sp in doc.get("splits") or [] for f in sp.get("files") or []]
        for f in files:
            resolved = (path.parent / f).resolve()
            if not resolved.is_relative_to(REPO.resolve()):
                outside.append(f"{path.relative_to(REPO)}: {f}")
    assert not outside, outside
