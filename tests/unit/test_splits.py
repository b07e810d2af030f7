"""Tests of document-level split assignment and seeded document caps."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.data.sources import load_splits
from harness.data.splits import (assign_fraction_splits, cap_documents, fraction_ranges, rows_fingerprint,
                                 unit_hash)
from harness.spec.schema import SplitSpec, Suite

FRACTIONS = [("train", 0.6), ("validation", 0.2), ("test", 0.2)]


def specs(fractions=FRACTIONS) -> list[SplitSpec]:
    return [SplitSpec(name=n, role="test" if n == "test" else "validation" if n == "validation" else "train",
                      fraction=f) for n, f in fractions]


def docs_dataset(tmp_path: Path, n_docs: int = 600, seed: int = 7) -> Path:
    """A jsonl file of sentences grouped in documents of 1 to 9 sentences, ids doc_sentence."""
    rng = random.Random(seed)
    path = tmp_path / "docs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for d in range(n_docs):
            for s in range(rng.randint(1, 9)):
                f.write(json.dumps({"id": f"{d}_{s}", "doc": str(d), "text": f"sentence {s} of {d}",
                                    "label": rng.randint(0, 1)}) + "\n")
    return path


def doc_suite(path: Path, split_seed: int = 0, splits=None) -> Suite:
    return Suite.model_validate({
        "kind": "suite", "name": "docs", "role": "id", "classes": ["negative", "positive"], "id_column": "id",
        "source": {"type": "local", "files": [str(path)], "document_key": "doc"}, "split_seed": split_seed,
        "splits": splits or [{"name": n, "role": r, "fraction": f} for (n, f), r in
                             zip(FRACTIONS, ["train", "validation", "test"])]})


def test_unit_hash_is_pinned_and_in_range():
    # pinned: sha256 of "0:doc-1", first 8 bytes big-endian / 2**64; never Python's salted hash()
    assert unit_hash("0", "doc-1") == 0.9716008599955269
    values = [unit_hash("0", str(i)) for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < float(np.mean(values)) < 0.55


def test_fraction_ranges_cover_unit_interval():
    ranges = fraction_ranges(specs())
    assert ranges["train"] == (0.0, 0.6)
    assert ranges["test"][1] == 1.0
    partial = fraction_ranges(specs([("a", 0.3), ("b", 0.3)]))
    assert partial["b"] == pytest.approx((0.3, 0.6))


def test_no_document_straddles_and_fractions_hold(tmp_path):
    out = load_splits(doc_suite(docs_dataset(tmp_path)))
    docs = {name: set(s.frame["source_id"]) for name, s in out.items()}
    assert not docs["train"] & docs["validation"]
    assert not docs["train"] & docs["test"]
    assert not docs["validation"] & docs["test"]
    n_docs = sum(len(d) for d in docs.values())
    assert n_docs == 600  # fractions add up to 1: every document is somewhere
    for name, frac in FRACTIONS:
        assert abs(len(docs[name]) / n_docs - frac) < 0.06
    all_ids = [i for s in out.values() for i in s.frame["example_id"]]
    assert len(all_ids) == len(set(all_ids))
    for s in out.values():  # rows stay in file order
        assert s.frame.index.tolist() == list(range(len(s)))
        ids = s.frame["example_id"].tolist()
        order = [(int(i.split("_")[0]), int(i.split("_")[1])) for i in ids]
        assert order == sorted(order)


def test_assignment_is_deterministic_and_seeded(tmp_path):
    path = docs_dataset(tmp_path)
    a = load_splits(doc_suite(path))
    b = load_splits(doc_suite(path))
    for name in a:
        pd.testing.assert_frame_equal(a[name].frame, b[name].frame)
        assert a[name].ref.fingerprint == b[name].ref.fingerprint
    c = load_splits(doc_suite(path, split_seed=1))
    assert set(a["test"].frame["source_id"]) != set(c["test"].frame["source_id"])
    assert a["test"].ref.fingerprint != c["test"].ref.fingerprint


def test_assignment_is_the_same_in_another_process():
    keys = [f"doc{i}" for i in range(200)]
    here = assign_fraction_splits(keys, specs(), 3).tolist()
    code = ("import json,sys; from harness.data.splits import assign_fraction_splits as a; "
            "from harness.spec.schema import SplitSpec as S; "
            "sp=[S(name=n, role='test', fraction=f) for n, f in [('train',0.6),('validation',0.2),('test',0.2)]]; "
            "print(json.dumps(a([f'doc{i}' for i in range(200)], sp, 3).tolist()))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == here


def test_partial_fractions_leave_rows_unassigned():
    got = assign_fraction_splits([str(i) for i in range(1000)], specs([("a", 0.1), ("b", 0.2)]), 0)
    assert set(got.tolist()) == {"a", "b", None}
    assert 0.6 < float(np.mean([g is None for g in got])) < 0.8


def test_cap_keeps_whole_documents_in_order():
    frame = pd.DataFrame({"example_id": [f"{d}_{s}" for d in range(50) for s in range(d % 4 + 1)]})
    frame["source_id"] = frame["example_id"].str.split("_").str[0]
    capped, removed = cap_documents(frame, 40, seed=0)
    assert len(capped) <= 40 and removed == len(frame) - len(capped)
    assert len(capped) >= 36  # greedy skip-fill gets close to the cap
    sizes = frame["source_id"].value_counts()
    kept_sizes = capped["source_id"].value_counts()
    assert all(kept_sizes[d] == sizes[d] for d in kept_sizes.index)
    pos = {e: i for i, e in enumerate(frame["example_id"])}
    assert [pos[e] for e in capped["example_id"]] == sorted(pos[e] for e in capped["example_id"])
    again, _ = cap_documents(frame, 40, seed=0)
    pd.testing.assert_frame_equal(capped, again)
    other, _ = cap_documents(frame, 40, seed=1)
    assert set(other["source_id"]) != set(capped["source_id"])
    same, none_removed = cap_documents(frame, len(frame), seed=0)
    assert none_removed == 0 and len(same) == len(frame)


def test_max_examples_counts_cap_in_drop_reasons(tmp_path):
    suite = doc_suite(docs_dataset(tmp_path), splits=[{"name": "all", "role": "test", "max_examples": 100,
                                                      "seed": 3}])
    out = load_splits(suite)["all"]
    assert len(out) <= 100
    assert out.drop_reasons["cap"] == out.n_dropped
    assert len(out) + out.n_dropped == sum(1 for _ in open(tmp_path / "docs.jsonl"))


def test_rows_fingerprint_sees_every_field(tmp_path):
    suite = doc_suite(docs_dataset(tmp_path, n_docs=5))
    frame = pd.DataFrame({"example_id": ["a", "b"], "source_id": ["d", "d"], "text": ["x", "y"], "label": [0, 1]})
    base = rows_fingerprint(suite, "test", frame)
    assert len(base) == 64 and base == rows_fingerprint(suite, "test", frame.copy())
    assert rows_fingerprint(suite, "validation", frame) != base
    for col, value in [("example_id", "c"), ("source_id", "e"), ("text", "z"), ("label", 0)]:
        changed = frame.copy()
        changed.loc[1, col] = value
        assert rows_fingerprint(suite, "test", changed) != base, col
    assert rows_fingerprint(suite, "test", frame.iloc[::-1].reset_index(drop=True)) != base
    assert rows_fingerprint(doc_suite(tmp_path / "docs.jsonl", split_seed=9), "test", frame) != base
