"""Head+tail truncation of long classification texts (issue 19, item 8; Sun et al. 2019)."""

from __future__ import annotations

import pytest
from conftest import write_tokenizer

from harness.errors import SpecError
from harness.spec.load import load_spec
from harness.tokcache import HEAD_SHARE, head_tail

WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    write_tokenizer(path, WORDS)
    return AutoTokenizer.from_pretrained(path)


def test_keeps_specials_head_and_tail(tokenizer):
    text = " ".join(WORDS)
    full = tokenizer(text)["input_ids"]
    ids, types = head_tail(tokenizer, text, 22)
    assert len(ids) == 22
    assert ids[0] == full[0] and ids[-1] == full[-1]  # [CLS] ... [SEP] kept
    budget = 20
    head = int(budget * HEAD_SHARE)
    assert ids[1:1 + head] == full[1:1 + head]  # the first content tokens
    assert ids[1 + head:-1] == full[-1 - (budget - head):-1]  # the last content tokens
    assert types is None or len(types) == 22


def test_short_text_untouched(tokenizer):
    ids, _ = head_tail(tokenizer, "w1 w2 w3", 22)
    assert ids == tokenizer("w1 w2 w3")["input_ids"]


def test_tokenize_split_counts_and_keys(tokenizer, tmp_path):
    import pandas as pd

    from harness.records import SplitData, SplitRef, SplitRole, SuiteRole
    from harness.tokcache import tokenize_split

    ref = SplitRef(suite="s", split="test", role=SplitRole.TEST, suite_role=SuiteRole.ID, suite_version="1",
                   fingerprint="f" * 64)
    frame = pd.DataFrame({"example_id": ["0", "1"], "source_id": ["0", "1"],
                          "text": [" ".join(WORDS), "w1 w2"], "label": [0, 1]})
    split = SplitData(ref=ref, frame=frame, classes=("a", "b"))
    right = tokenize_split(split, tokenizer, 16, cache_dir=tmp_path)
    both = tokenize_split(split, tokenizer, 16, cache_dir=tmp_path, truncation="head_tail")
    assert right.n_truncated == both.n_truncated == 1
    assert right.cache_key != both.cache_key
    assert list(right.input_ids[1]) == list(both.input_ids[1])
    assert list(right.input_ids[0][:4]) == list(both.input_ids[0][:4])  # heads agree
    assert list(right.input_ids[0][-3:-1]) != list(both.input_ids[0][-3:-1])  # tails differ


def test_spec_rules(tmp_path):
    base = ("kind: suite\nname: s\nrole: id\nsource: {type: local, files: [d.csv]}\nclasses: [a, b]\n"
            "splits: [{name: test, role: test, fraction: 1.0}]\n")
    p = tmp_path / "s.yaml"
    p.write_text(base + "truncation: head_tail\n")
    assert load_spec(p).truncation == "head_tail"
    p.write_text(base + "truncation: head_tail\ntext_pair: b\n")
    with pytest.raises(SpecError, match="single texts"):
        load_spec(p)
    p.write_text(base + "truncation: middle\n")
    with pytest.raises(SpecError, match="truncation"):
        load_spec(p)


def test_default_keeps_the_spec_hash(tmp_path):
    from harness.spec.load import spec_hash

    base = ("kind: suite\nname: s\nrole: id\nsource: {type: local, files: [d.csv]}\nclasses: [a, b]\n"
            "splits: [{name: test, role: test, fraction: 1.0}]\n")
    p, q = tmp_path / "a.yaml", tmp_path / "b.yaml"
    p.write_text(base)
    q.write_text(base + "truncation: right\n")
    assert spec_hash(load_spec(p)) == spec_hash(load_spec(q))
