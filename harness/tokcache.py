"""Stage 3: the tokenized cache.

Each (split, tokenizer, max_length) is tokenized once and stored content-addressed under
``$HARNESS_CACHE/tokens/<key>.parquet``. The key is the sha256 of canonical JSON holding the split fingerprint
(rows, spec hash, transform parameters), the tokenizer fingerprint (hash of its serialised vocabulary and
settings), ``max_length`` and the harness cache format version. The key is stored inside the file and checked on
read: a mismatch or a corrupt file is recomputed with a warning (:class:`~harness.errors.CacheError` is logged,
never silently ignored).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import CacheError, DataError, OutputError, format_error
from harness.io import atomic_path, cache_root, sha256_json
from harness.records import SplitData, TokenizedSplit

__all__ = ["CACHE_FORMAT", "tokenizer_fingerprint", "cache_key", "tokenize_split"]

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of everything in a tokenizer that can change token ids.

    For fast tokenizers the serialised ``tokenizer.json`` (vocabulary, normaliser, pre-tokeniser, post-processor);
    otherwise the sorted vocabulary plus class name and special tokens. The result is memoised on the tokenizer.
    """
    cached = getattr(tokenizer, "_harness_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps({"special": [str(t) for t in tokenizer.all_special_tokens],
                         "lower": getattr(tokenizer, "do_lower_case", None)}, sort_keys=True).encode())
    fp = h.hexdigest()
    try:
        tokenizer._harness_fingerprint = fp
    except AttributeError:
        pass
    return fp


def cache_key(split: SplitData, tokenizer_fp: str, max_length: int, truncation: str = "right") -> str:
    """The content key of a tokenized split (sha256 hex of canonical JSON); ``truncation`` enters the key only
    when it is not the default, so keys made before the option existed stay valid."""
    parts = {"format": CACHE_FORMAT, "split": split.ref.fingerprint, "suite": split.ref.suite,
             "name": split.ref.split, "tokenizer": tokenizer_fp, "max_length": int(max_length),
             "pair": "text_pair" in split.frame.columns}
    if truncation != "right":
        parts["truncation"] = truncation
    return sha256_json(parts)


HEAD_SHARE = 0.25  # head+tail keeps a quarter of the budget from the start: Sun et al. 2019 (128 + 382 of 510)


def head_tail(tokenizer: Any, text: str, max_length: int) -> tuple[list[int], list[int] | None]:
    """``(input_ids, token_type_ids or None)`` of one text cut to ``max_length`` tokens by keeping its first
    ``floor(HEAD_SHARE * budget)`` and last ``budget - head`` content tokens, ``budget = max_length`` minus the
    special tokens the tokenizer adds (which are kept around the cut text).

    Source: the head+tail truncation of Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?"
    (section 5.3.1: head 128 + tail 382 tokens of 510 was best on IMDb). Special tokens are found through the
    tokenizer's own ``special_tokens_mask``, so any model family's prefix and suffix tokens are kept.
    """
    enc = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True, verbose=False)
    ids, special = list(enc["input_ids"]), list(enc["special_tokens_mask"])
    content = [i for i, s in enumerate(special) if not s]
    if len(ids) <= max_length or not content:
        return ids, enc.get("token_type_ids")
    lead, trail = ids[:content[0]], ids[content[-1] + 1:]
    budget = max_length - len(lead) - len(trail)
    if budget < 2:
        raise DataError(format_error("max_length leaves no room for text between the special tokens",
                                     where="max_length", got=max_length, fix="raise max_length"))
    body = ids[content[0]:content[-1] + 1]
    head = int(budget * HEAD_SHARE)
    cut = lead + body[:head] + body[len(body) - (budget - head):] + trail
    types = enc.get("token_type_ids")
    return cut, None if types is None else [types[0]] * len(cut)


def _encode(split: SplitData, tokenizer: Any, max_length: int, truncation: str = "right"
            ) -> tuple[list, list | None, int]:
    """Encode every row once; only rows longer than ``max_length`` are encoded a second time, with the tokenizer's
    own truncation (which keeps its special tokens and pair strategy), or :func:`head_tail`."""
    frame = split.frame
    texts = frame["text"].astype(str).tolist()
    pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame.columns else None
    enc = tokenizer(texts, pairs, truncation=False, add_special_tokens=True, return_attention_mask=False,
                    verbose=False)
    ids_list = list(enc["input_ids"])
    tt = enc.get("token_type_ids")
    types_list = list(tt) if tt is not None else None
    long_rows = [i for i, x in enumerate(ids_list) if len(x) > max_length]
    if long_rows and truncation == "head_tail":
        for i in long_rows:
            ids_list[i], types_i = head_tail(tokenizer, texts[i], max_length)
            if types_list is not None:
                types_list[i] = types_i
    elif long_rows:
        cut = tokenizer([texts[i] for i in long_rows], [pairs[i] for i in long_rows] if pairs is not None else None,
                        truncation=True, max_length=max_length, return_attention_mask=False)
        for j, i in enumerate(long_rows):
            ids_list[i] = cut["input_ids"][j]
            if types_list is not None:
                types_list[i] = cut["token_type_ids"][j]
    ids = [np.asarray(x, dtype=np.int32) for x in ids_list]
    types = [np.asarray(x, dtype=np.int8) for x in types_list] if types_list is not None else None
    return ids, types, len(long_rows)


def _read(path: Path, key: str, split: SplitData, max_length: int) -> TokenizedSplit:
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"harness", b"{}"))
    if meta.get("key") != key:
        raise CacheError(format_error("tokenized cache entry does not match its key", where=str(path),
                                      expected=key, got=meta.get("key")))
    ids_col = table.column("input_ids").combine_chunks()
    offsets = ids_col.offsets.to_numpy()
    flat = ids_col.values.to_numpy(zero_copy_only=False).astype(np.int32)
    ids = tuple(flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1))
    types = None
    if "token_type_ids" in table.column_names:
        tcol = table.column("token_type_ids").combine_chunks()
        tflat = tcol.values.to_numpy(zero_copy_only=False).astype(np.int8)
        types = tuple(tflat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1))
    if len(ids) != len(split) or int(meta.get("n", -1)) != len(split):
        raise CacheError(format_error("tokenized cache entry has the wrong number of rows", where=str(path),
                                      expected=len(split), got=len(ids)))
    return _record(split, ids, types, int(meta["n_truncated"]), max_length, key)


def _record(split, ids, types, n_truncated, max_length, key) -> TokenizedSplit:
    frame = split.frame
    return TokenizedSplit(
        ref=split.ref, input_ids=tuple(ids), token_type_ids=None if types is None else tuple(types),
        lengths=np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids)),
        labels=frame["label"].to_numpy(np.int64), example_ids=frame["example_id"].to_numpy(str),
        source_ids=frame["source_id"].to_numpy(str), max_length=int(max_length), n_truncated=int(n_truncated),
        n_dropped=int(split.n_dropped), cache_key=key)


def _write(path: Path, key: str, ids, types, n_truncated: int) -> None:
    cols = {"input_ids": pa.array([x.tolist() for x in ids], pa.list_(pa.int32()))}
    if types is not None:
        cols["token_type_ids"] = pa.array([x.tolist() for x in types], pa.list_(pa.int8()))
    meta = {"key": key, "n": len(ids), "n_truncated": n_truncated, "format": CACHE_FORMAT}
    table = pa.table(cols).replace_schema_metadata({"harness": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def tokenize_split(split: SplitData, tokenizer: Any, max_length: int, *, cache_dir: Path | None = None,
                   use_cache: bool = True, truncation: str = "right") -> TokenizedSplit:
    """Tokenize a split once, through the content-addressed cache.

    Parameters
    ----------
    split : SplitData
        Canonical rows (``text`` and optional ``text_pair``).
    tokenizer : transformers tokenizer
        Must add the model's special tokens.
    max_length : int
        Longest sequence in tokens, special tokens included; longer examples are truncated and counted in
        ``TokenizedSplit.n_truncated`` (which reaches the summary and the report).
    cache_dir : Path, default=None
        Defaults to ``$HARNESS_CACHE/tokens``.
    use_cache : bool, default=True
        Read and write the cache.
    truncation : {"right", "head_tail"}, default="right"
        How a longer example is cut: the tokenizer's own truncation (keeps the start), or :func:`head_tail`
        (keeps the start and the end; single-text suites only).

    Returns
    -------
    TokenizedSplit
        Ragged int32 token ids in the split's row order.

    Raises
    ------
    DataError
        If the split is empty or ``max_length`` is not positive.
    """
    if len(split) == 0:
        raise DataError(format_error("cannot tokenize an empty split", where=split.ref.key,
                                     fix="check the suite's split definition and filters"))
    if max_length < 2:
        raise DataError(format_error("max_length too small", where=split.ref.key, expected=">= 2", got=max_length))
    if truncation not in ("right", "head_tail"):
        raise DataError(format_error("unknown truncation", where="truncation", expected=["right", "head_tail"],
                                     got=truncation))
    if truncation == "head_tail" and "text_pair" in split.frame.columns:
        raise DataError(format_error("head_tail truncation applies to single texts", where=split.ref.key,
                                     fix="use truncation: right for a suite with text_pair"))
    key = cache_key(split, tokenizer_fingerprint(tokenizer), max_length, truncation)
    path = (cache_dir or cache_root() / "tokens") / f"{key}.parquet"
    if use_cache and path.is_file():
        try:
            return _read(path, key, split, max_length)
        except (CacheError, OSError, ValueError, KeyError, pa.ArrowException) as e:
            log.warning("tokenized cache entry %s is unusable (%s); recomputing", path, str(e).splitlines()[0])
    ids, types, n_truncated = _encode(split, tokenizer, max_length, truncation)
    if n_truncated:
        log.warning("%s: %d of %d examples were truncated to max_length=%d (%s)", split.ref.key, n_truncated,
                    len(ids), max_length, "head and tail kept" if truncation == "head_tail" else "start kept")
    if use_cache:
        try:
            _write(path, key, ids, types, n_truncated)
        except OutputError as e:  # the cache only saves time: a full or read-only cache folder is not fatal
            log.warning("cannot write the tokenized cache entry %s (%s); continuing without it (set HARNESS_CACHE "
                        "to a writable folder with free space)", path, " ".join(str(e).split()))
    return _record(split, ids, types, n_truncated, max_length, key)
