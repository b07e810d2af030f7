"""Tests of harness.store: the SQLite results store (round trip, corruption, keys, concurrent processes)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from harness.errors import StoreError
from harness.store import ResultsStore, blend_fingerprint, prediction_key

KEY_PARTS = dict(model_fp="m" * 64, alpha=0.3, split_key="s" * 64, dtype="fp32", device_type="cpu", head="shared",
                 blend_path="merged", harness_version="0.1.0", extra={"columns": [0, 1]})
CHANGED = {"model_fp": "n" * 64, "alpha": 0.4, "split_key": "t" * 64, "dtype": "bf16", "device_type": "cuda",
           "head": "adapted", "blend_path": "none", "harness_version": "0.2.0", "extra": {"columns": [1, 0]}}


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as s:
        yield s


def _logits(seed: int, n: int = 17, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)


def test_round_trip_is_exact(store):
    x = _logits(0)
    store.put("k", x, {"point": "base"})
    got = store.get("k", n=17)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(got, x)
    assert store.get("absent") is None
    assert len(store) == 1


def test_entries_survive_reopening(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as s:
        s.put("k", _logits(1))
    with ResultsStore(path) as s:
        assert np.array_equal(s.get("k"), _logits(1))


def test_put_replaces_an_entry(store):
    store.put("k", _logits(1))
    store.put("k", _logits(2))
    assert np.array_equal(store.get("k"), _logits(2)) and len(store) == 1


def test_default_path_is_under_harness_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with ResultsStore() as s:
        assert s.path == tmp_path / "cache" / "results.sqlite"
        s.put("k", _logits(0))
    assert (tmp_path / "cache" / "results.sqlite").is_file()


def _corrupt(path, key: str) -> None:
    db = sqlite3.connect(str(path))
    (blob,) = db.execute("SELECT logits FROM predictions WHERE key=?", (key,)).fetchone()
    flipped = bytearray(blob)
    for i in (len(flipped) - 5, len(flipped) - 9):  # inside the float data
        flipped[i] ^= 0xFF
    db.execute("UPDATE predictions SET logits=? WHERE key=?", (bytes(flipped), key))
    db.commit()
    db.close()


def test_corrupt_row_is_reported_deleted_and_missing(store, caplog):
    store.put("good", _logits(0))
    store.put("bad", _logits(1))
    _corrupt(store.path, "bad")
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.get("bad") is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert len(store) == 1  # the corrupt row was deleted, the good one kept
    assert np.array_equal(store.get("good"), _logits(0))
    store.put("bad", _logits(1))  # and it can be recomputed
    assert np.array_equal(store.get("bad"), _logits(1))


def test_row_count_mismatch_is_treated_as_corrupt(store, caplog):
    store.put("k", _logits(0, n=17))
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.get("k", n=18) is None
    assert len(store) == 0


def test_unreadable_database_is_a_store_error(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(StoreError, match=r"(?s)results store.*delete the file"):
        ResultsStore(path)


def test_prediction_key_is_deterministic_and_canonical():
    assert prediction_key(**KEY_PARTS) == prediction_key(**KEY_PARTS)
    assert prediction_key(**{**KEY_PARTS, "alpha": 0.1 + 0.2}) == prediction_key(**KEY_PARTS)
    assert len(prediction_key(**KEY_PARTS)) == 64


@pytest.mark.parametrize("part", sorted(CHANGED))
def test_prediction_key_changes_with_every_part(part):
    assert prediction_key(**{**KEY_PARTS, part: CHANGED[part]}) != prediction_key(**KEY_PARTS)


def test_prediction_key_tells_no_alpha_from_alpha_zero():
    assert prediction_key(**{**KEY_PARTS, "alpha": None}) != prediction_key(**{**KEY_PARTS, "alpha": 0.0})


def test_blend_fingerprint_depends_on_every_part_and_canonical_alpha():
    ref = blend_fingerprint("b", "a", 0.3, "shared")
    assert blend_fingerprint("b", "a", 0.30000000000000004, "shared") == ref
    for other in (blend_fingerprint("c", "a", 0.3, "shared"), blend_fingerprint("b", "c", 0.3, "shared"),
                  blend_fingerprint("b", "a", 0.4, "shared"), blend_fingerprint("b", "a", 0.3, "adapted"),
                  blend_fingerprint("a", "b", 0.3, "shared")):
        assert other != ref


def _writer(path: str, prefix: str, n: int, barrier) -> None:
    barrier.wait(timeout=60)
    with ResultsStore(path, timeout_s=30) as s:
        for i in range(n):
            s.put(f"{prefix}-{i}", np.full((5, 2), i, dtype=np.float32), {"i": i})
            if i % 20 == 0:
                s.get(f"{prefix}-{i // 2}")  # interleave reads with the other process's writes


def test_two_processes_write_one_store_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, p, 200, barrier)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResultsStore(path) as s:
        assert len(s) == 400
        for prefix in ("a", "b"):
            for i in range(200):
                got = s.get(f"{prefix}-{i}", n=5)
                assert got is not None and np.array_equal(got, np.full((5, 2), i, dtype=np.float32))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_an_empty_store_is_truthy(store):
    """Callers write ``if self.store:`` (harness.pipeline); an empty store must not read as "no store"."""
    assert len(store) == 0
    assert store


def test_many_openers_of_a_fresh_store_at_once(tmp_path):
    """Two sweeps starting together on a new store race to switch it to WAL and create the table; SQLite answers
    "database is locked" at once there (no busy wait), so opening must retry. Threads hit the same file locks as
    processes; many rounds make the race show up reliably."""
    import threading

    for r in range(60):
        path = tmp_path / f"fresh-{r}.sqlite"
        barrier, errors = threading.Barrier(8), []

        def opener(i: int) -> None:
            barrier.wait(timeout=30)
            try:
                with ResultsStore(path, timeout_s=20) as s:
                    s.put(f"k{i}", _logits(i, n=2))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=opener, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, f"round {r}: {errors[0]}"
        with ResultsStore(path) as s:
            assert len(s) == 8


def test_payload_moved_under_another_key_is_caught(tmp_path):
    import sqlite3

    import numpy as np

    from harness.store import ResultsStore

    with ResultsStore(tmp_path / "s.sqlite") as store:
        store.put("a", np.zeros((2, 2), np.float32))
        store.put("b", np.ones((2, 2), np.float32))
    db = sqlite3.connect(str(tmp_path / "s.sqlite"))
    row = db.execute("SELECT logits, sha256 FROM predictions WHERE key='b'").fetchone()
    db.execute("UPDATE predictions SET logits=?, sha256=? WHERE key='a'", row)  # b's row, checksum included
    db.commit()
    db.close()
    with ResultsStore(tmp_path / "s.sqlite") as store:
        assert store.get("a") is None and store.get("b") is not None
