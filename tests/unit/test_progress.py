"""harness.progress: bars drawn on a terminal, also on a pseudo-terminal that reports a size of 0 (where tqdm
alone draws nothing: the fresh-user trial of issue 19 saw no bars), one INFO line per step elsewhere."""

from __future__ import annotations

import io
import logging
import os
import sys

import pytest

from harness import progress
from harness.progress import StepProgress, bar_size, progress_bar, ticking, track


@pytest.fixture
def zero_size_pty(monkeypatch):
    """A function that puts stderr on the slave side of a fresh pseudo-terminal (size 0 x 0, as ``script`` or
    ``docker exec -t`` leave it) and returns a reader of what was written to it. (Called inside the test: pytest's
    capture sets sys.stderr again when the test body starts.)"""
    master, slave = os.openpty()
    stream = open(slave, "w", buffering=1, encoding="utf-8", closefd=True)
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)

    def attach():
        monkeypatch.setattr(sys, "stderr", stream)
        return read

    def read() -> str:
        stream.flush()
        os.set_blocking(master, False)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    yield attach
    stream.close()
    os.close(master)


def test_a_zero_size_pty_gets_a_sized_bar(zero_size_pty, monkeypatch):
    read = zero_size_pty()
    assert os.get_terminal_size(sys.stderr.fileno()).columns == 0  # the condition tqdm cannot draw in
    assert bar_size() == {"ncols": 80, "nrows": 24}
    monkeypatch.setenv("COLUMNS", "100")
    assert bar_size()["ncols"] == 100
    monkeypatch.delenv("COLUMNS")
    for _ in progress_bar(range(5), desc="scoring", unit="ex", leave=True):
        pass
    out = read()
    assert "scoring:" in out and "%|" in out and "5/5" in out


def test_step_progress_draws_on_a_terminal_and_counts_finished_steps(zero_size_pty, caplog):
    read = zero_size_pty()
    caplog.set_level(logging.INFO)
    bar = StepProgress(range(3), 3, "epoch 1/1", True, logging.getLogger("harness.test"))
    for i in bar:
        assert bar._bar.n == i  # the bar counts finished steps
        bar.step(float(i))
    assert bar._bar.n == 3
    bar.close()
    out = read()
    assert "epoch 1/1:" in out and "%|" in out and "0/3" in out
    assert not caplog.records  # a bar on a terminal, no log lines


def test_off_a_terminal_no_bar_and_one_line_per_step(monkeypatch, caplog):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    caplog.set_level(logging.INFO)
    log = logging.getLogger("harness.test")
    assert list(track(["a/x", "b/y"], 2, "tokenizing", True, log, unit="split", label=str)) == ["a/x", "b/y"]
    assert [r.getMessage() for r in caplog.records] == ["tokenizing split 1/2: a/x", "tokenizing split 2/2: b/y"]
    caplog.clear()
    assert list(track(range(2), 2, "quiet", False, log)) == [0, 1]  # progress off: silent
    assert not caplog.records and err.getvalue() == ""
    for _ in progress_bar(range(3), desc="x"):
        pass
    assert err.getvalue() == ""  # never tqdm's carriage returns in a log file


def _tick_threads() -> int:
    import threading

    return sum(t.name == "harness-progress-tick" for t in threading.enumerate())


def test_a_drawn_bar_redraws_its_elapsed_time_while_its_count_stands_still(zero_size_pty, monkeypatch):
    """A step that reports nothing (a CPU batch of a language model, a GGUF conversion inside transformers) must
    not leave a frozen bar: every drawn bar redraws itself every TICK_SECONDS, and its thread ends with the bar."""
    import time

    monkeypatch.setattr(progress, "TICK_SECONDS", 0.05)
    read = zero_size_pty()
    before = _tick_threads()
    with progress_bar(total=2, desc="converting", unit="step", leave=True):
        assert _tick_threads() == before + 1
        read()  # the first draw
        time.sleep(0.6)  # no update: only the redraw thread writes
        drawn = read()
    assert drawn.count("converting:") >= 3 and "0/2" in drawn and "00:00" in drawn
    assert _tick_threads() == before  # closing the bar stopped and joined its thread
    for _ in progress_bar(range(2), desc="loop"):  # a loop closes its bar at the end: no thread left either
        pass
    assert _tick_threads() == before


def test_ticking_redraws_a_bar_made_elsewhere_and_not_a_harness_bar_twice(zero_size_pty, monkeypatch):
    import time

    from tqdm import tqdm

    read = zero_size_pty()
    with tqdm(total=2, desc="foreign", file=sys.stderr, ncols=80, nrows=24) as bar, ticking(bar, every=0.05):
        read()
        time.sleep(0.4)
        assert read().count("foreign:") >= 3
    assert _tick_threads() == 0
    with progress_bar(total=1, desc="ours") as bar, ticking(bar, every=0.05):
        assert _tick_threads() == 1  # its own thread only


def test_ticking_starts_no_thread_for_a_disabled_bar():
    import threading

    with progress_bar(total=1, desc="x", show=False) as bar, ticking(bar, every=0.01):
        assert bar.disable and not any(t.name == "harness-progress-tick" for t in threading.enumerate())


def test_a_harness_bar_shares_tqdm_s_lock():
    """The redraw thread takes the bar's lock; it must be tqdm's own, shared with library bars and tqdm.write."""
    import tqdm.std

    with progress_bar(total=1, desc="x", show=False) as bar:
        assert bar.get_lock() is tqdm.std.tqdm.get_lock()


def test_scoring_that_raises_leaves_no_redrawing_bar(zero_size_pty):
    """A bar left open by an error (kept alive by a traceback in a REPL) would redraw over the prompt forever."""
    import importlib.util
    from pathlib import Path

    from harness.predict import predict

    spec = importlib.util.spec_from_file_location("_tp", Path(__file__).with_name("test_predict.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)

    class Failing:
        def predict_batches(self, batches):
            next(iter(batches))
            raise RuntimeError("out of memory")
            yield  # a generator, as real scorers are

    zero_size_pty()
    before = _tick_threads()
    with pytest.raises(RuntimeError) as err:
        predict(Failing(), helpers.tokenized([3, 4, 5]), point="base", progress=True)
    assert _tick_threads() == before
    del err


def test_a_warning_logged_during_a_bar_gets_its_own_line_on_a_terminal(monkeypatch):
    """Trial 4: a WARNING logged while the tokenizing bar was drawn was glued to the bar's line. Inside
    log_through_bars the root logger writes through tqdm.write (which clears the bar first); off a terminal
    nothing changes."""
    import io
    import logging

    from harness import progress

    stream = io.StringIO()
    stream.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        with progress.log_through_bars():
            names = [type(h).__name__ for h in root.handlers]
            assert "_TqdmLoggingHandler" in names and handler not in root.handlers
        assert handler in root.handlers  # restored afterwards
        monkeypatch.setattr(stream, "isatty", lambda: False)
        with progress.log_through_bars():
            assert handler in root.handlers
        stream.isatty = lambda: True
        with progress.log_through_bars(enabled=False):
            assert handler in root.handlers
    finally:
        root.removeHandler(handler)
