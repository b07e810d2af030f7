"""Tokenized cache: tokenize once, content keys checked on read, truncation counted, corruption recomputed."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from harness.records import SplitData, SplitRef, SplitRole, SuiteRole
from harness.tokcache import cache_key, tokenize_split, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from conftest import write_tokenizer

    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d)
    return AutoTokenizer.from_pretrained(str(d))


def split(texts, fp="fp1"):
    frame = pd.DataFrame({"example_id": [str(i) for i in range(len(texts))],
                          "source_id": [str(i) for i in range(len(texts))], "text": texts,
                          "label": np.zeros(len(texts), dtype=np.int64)})
    ref = SplitRef("s", "test", SplitRole.TEST, SuiteRole.ID, fingerprint=fp)
    return SplitData(ref=ref, frame=frame, classes=("negative", "positive"), n_dropped=2)


def test_tokenize_once_and_reuse(tokenizer, tmp_path, monkeypatch):
    sd = split(["good movie", "bad film very bad"])
    a = tokenize_split(sd, tokenizer, 16, cache_dir=tmp_path)
    assert (tmp_path / f"{a.cache_key}.parquet").is_file()
    calls = []
    monkeypatch.setattr("harness.tokcache._encode", lambda *x: calls.append(1))
    b = tokenize_split(sd, tokenizer, 16, cache_dir=tmp_path)
    assert not calls
    assert all(np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
    assert b.n_dropped == 2 and list(b.lengths) == [4, 6]


def test_truncation_is_counted(tokenizer, tmp_path):
    sd = split(["good " * 20, "bad"])
    tok = tokenize_split(sd, tokenizer, 8, cache_dir=tmp_path)
    assert tok.n_truncated == 1 and tok.lengths.max() == 8
    assert tok.input_ids[0][-1] == tokenizer.sep_token_id  # truncated rows keep their special tokens


@pytest.mark.parametrize("with_pairs", [False, True])
def test_encoding_equals_the_tokenizers_own_truncation(tokenizer, tmp_path, with_pairs):
    """Rows are encoded once and only the long ones again: the result must be exactly what one truncating call
    of the tokenizer gives, token types included (sentence pairs: its longest-first strategy)."""
    texts = ["good " * n + "film" for n in (0, 3, 9, 20, 2, 14)]
    sd = split(texts)
    if with_pairs:
        sd.frame["text_pair"] = ["bad " * n for n in (5, 0, 9, 1, 12, 3)]
    tok = tokenize_split(sd, tokenizer, 12, cache_dir=tmp_path)
    want = tokenizer(texts, sd.frame["text_pair"].tolist() if with_pairs else None, truncation=True, max_length=12)
    assert [x.tolist() for x in tok.input_ids] == want["input_ids"]
    if "token_type_ids" in want:
        assert [x.tolist() for x in tok.token_type_ids] == want["token_type_ids"]
    full = tokenizer(texts, sd.frame["text_pair"].tolist() if with_pairs else None)["input_ids"]
    assert tok.n_truncated == sum(len(x) > 12 for x in full) > 0


def test_key_changes_with_every_input(tokenizer):
    sd = split(["good"])
    fp = tokenizer_fingerprint(tokenizer)
    k = cache_key(sd, fp, 16)
    assert k != cache_key(sd, fp, 17)
    assert k != cache_key(split(["good"], fp="fp2"), fp, 16)
    assert k != cache_key(sd, "other-tokenizer", 16)


def test_corrupt_entry_is_recomputed_with_a_warning(tokenizer, tmp_path, caplog):
    sd = split(["good movie"])
    tok = tokenize_split(sd, tokenizer, 16, cache_dir=tmp_path)
    path = tmp_path / f"{tok.cache_key}.parquet"
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = tokenize_split(sd, tokenizer, 16, cache_dir=tmp_path)
    assert "unusable" in caplog.text
    assert np.array_equal(again.input_ids[0], tok.input_ids[0])


def test_entry_under_wrong_key_is_refused(tokenizer, tmp_path, caplog):
    a, b = split(["good"], fp="a"), split(["bad bad"], fp="b")
    ta = tokenize_split(a, tokenizer, 16, cache_dir=tmp_path)
    tb = tokenize_split(b, tokenizer, 16, cache_dir=tmp_path)
    (tmp_path / f"{ta.cache_key}.parquet").write_bytes((tmp_path / f"{tb.cache_key}.parquet").read_bytes())
    with caplog.at_level(logging.WARNING):
        again = tokenize_split(a, tokenizer, 16, cache_dir=tmp_path)
    assert "does not match its key" in caplog.text
    assert np.array_equal(again.input_ids[0], ta.input_ids[0])


def test_empty_split_is_an_error(tokenizer, tmp_path):
    from harness.errors import DataError

    with pytest.raises(DataError, match="empty split"):
        tokenize_split(split([]), tokenizer, 16, cache_dir=tmp_path)
