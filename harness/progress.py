"""Progress of long stages: a tqdm bar on a terminal, one INFO line per step elsewhere, nothing when turned off.

Every bar of the harness is made here (:func:`progress_bar`, :class:`StepProgress`), so they agree on four rules:

- a bar is drawn only when progress is on and stderr is a terminal (CI logs get no carriage-return noise);
- on a terminal that reports a width of 0 columns, a pseudo-terminal whose size was never set (``script``,
  ``docker exec -t``, some CI runners and agent shells), tqdm computes a bar width of 0 and draws nothing at all;
  there the bar is drawn at ``COLUMNS`` (or 80) columns and ``LINES`` (or 24) rows (:func:`bar_size`);
- off a terminal, :class:`StepProgress` logs one INFO line per step instead (shown when the harness loggers are at
  INFO, as the CLI sets them off a terminal);
- every drawn bar redraws itself at least every :data:`TICK_SECONDS` (1 s) from a background thread, so its
  elapsed time keeps moving while its count stands still (a CPU batch of a language model, a conversion inside a
  library with no callback) and the terminal never shows a frozen bar; the thread ends when the bar is closed.

Shared module: imports nothing from the harness but :mod:`harness.settings`; tqdm is imported when a bar is made.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from harness.settings import env

__all__ = ["DEFAULT_COLUMNS", "DEFAULT_LINES", "TICK_SECONDS", "on_terminal", "bar_size", "progress_bar", "StepProgress", "track",
           "ticking", "mark_command_start", "process_started", "command_wall_time", "log_through_bars"]

DEFAULT_COLUMNS, DEFAULT_LINES = 80, 24
#: Seconds between redraws of a drawn bar (:func:`progress_bar`): its elapsed time moves at least this often.
TICK_SECONDS = 1.0
_TICK_THREAD = "harness-progress-tick"
T = TypeVar("T")


def on_terminal() -> bool:
    """Whether stderr, where the bars go, is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def log_through_bars(enabled: bool = True):
    """A context in which the root logger's stream handlers write through ``tqdm.write`` when stderr is a
    terminal, so a warning logged while a bar is drawn gets a line of its own above the bar (without it the
    message is glued to the bar's line: "...vader-movies/test]WARNING harness.tokcache: ..."). tqdm's
    ``logging_redirect_tqdm``; a no-op off a terminal or when ``enabled`` is false."""
    if not (enabled and on_terminal()):
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def bar_size() -> dict[str, int]:
    """The tqdm size arguments for a bar on stderr.

    Returns
    -------
    dict
        Empty on a terminal that reports its size (tqdm sizes the bar itself and follows resizes) and off a
        terminal. On a terminal that reports 0 columns or rows, a pseudo-terminal whose size was never set, tqdm
        would compute a width of 0 and a height of -1 and draw nothing; there ``ncols`` is ``COLUMNS`` (when a
        positive integer) else :data:`DEFAULT_COLUMNS` (80), and ``nrows`` is ``LINES`` else 24.
    """
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return {}
    out = {}
    if size.columns <= 0:
        out["ncols"] = _positive(env("COLUMNS"), DEFAULT_COLUMNS)
    if size.lines <= 0:
        out["nrows"] = _positive(env("LINES"), DEFAULT_LINES)
    return out


def _positive(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def progress_bar(iterable: Iterable[T] | None = None, *, desc: str | None = None, total: int | None = None,
                 unit: str = "it", show: bool = True, leave: bool = False, **kwargs: Any):
    """A tqdm bar on stderr, drawn when ``show`` and stderr is a terminal; otherwise a disabled bar that passes
    ``iterable`` through and prints nothing.

    Parameters
    ----------
    iterable : iterable, default=None
        What to iterate (or ``None`` and call ``update``).
    desc, total, unit, leave
        As tqdm's.
    show : bool, default=True
        The run's progress setting.
    **kwargs
        More tqdm arguments (``position``...).

    Returns
    -------
    tqdm.tqdm
        Usable as an iterator and as a context manager. On a terminal that reports a size of 0 the bar is drawn
        at :func:`bar_size`, where tqdm would draw nothing. A drawn bar redraws itself every
        :data:`TICK_SECONDS` from a daemon thread (its elapsed time moves while its count does not); closing
        the bar (the end of its loop or ``with`` block, or ``close()``) stops and joins the thread.
    """
    draw = show and on_terminal()
    if draw:
        kwargs = {**bar_size(), **kwargs}
    bar = _ticking_class()(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=not draw, **kwargs)
    if draw:
        bar._harness_ticker = _Ticker(bar, TICK_SECONDS)
    return bar


@functools.cache
def _ticking_class():
    """tqdm.auto's bar class whose ``close`` also stops its redraw thread (imported on the first bar)."""
    from tqdm.auto import tqdm
    from tqdm.std import tqdm as std_tqdm

    class TickingBar(tqdm):
        def close(self) -> None:
            ticker = self.__dict__.pop("_harness_ticker", None)
            if ticker is not None:
                ticker.stop()
            super().close()

    # one lock with tqdm's own bars and tqdm.write (a subclass made first would otherwise hold a lock of its own)
    TickingBar.set_lock(std_tqdm.get_lock())
    # no tqdm monitor thread of this class's own (tqdm starts one per bar class, also for a disabled bar, and it
    # outlives the bars: the soak test counts threads); the redraw thread already refreshes a drawn bar
    TickingBar.monitor_interval = 0
    return TickingBar


class _Ticker:
    """A daemon thread redrawing a bar every ``every`` seconds until stopped, or until the bar is closed or
    collected (it holds the bar through a weak reference, so a bar nobody closes is still freed)."""

    def __init__(self, bar: Any, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(weakref.ref(bar), every), name=_TICK_THREAD,
                                        daemon=True)
        self._thread.start()

    def _run(self, ref: Callable[[], Any], every: float) -> None:
        while not self._stop.wait(every):
            bar = ref()
            if bar is None:
                return
            with bar.get_lock():  # close() marks the bar disabled before it takes the lock to clear the line
                if bar.disable:
                    return
                bar.refresh(nolock=True)
            del bar

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


class StepProgress:
    """Progress of one stage: iterate it, call :meth:`step` after each step.

    On a terminal a tqdm bar (with the running loss when given); otherwise one INFO line per step on ``log``;
    silent when ``progress`` is false.

    Parameters
    ----------
    items : iterable
        The stage's items (batches, splits...).
    total : int
        Number of items.
    desc : str
        E.g. ``"epoch 1/3"``.
    progress : bool
    log : logging.Logger
    unit : str, default="step"
    """

    def __init__(self, items: Iterable[Any], total: int, desc: str, progress: bool, log: logging.Logger,
                 unit: str = "step") -> None:
        interactive = progress and on_terminal()
        self._lines = progress and not interactive
        self._bar = progress_bar(total=total, desc=desc, unit=unit, show=interactive)
        self._items, self._desc, self._total, self._log, self._n, self._unit = items, desc, total, log, 0, unit

    def __iter__(self):
        return iter(self._items)

    @property
    def bar(self):
        """The tqdm bar (disabled off a terminal), e.g. for :func:`ticking`."""
        return self._bar

    def step(self, loss: float | None = None, note: str = "") -> None:
        """Report a finished step (the bar counts finished steps), with the loss the trainer shows (nats) when
        there is one, or a short note."""
        self._n += 1
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.update(1)
        if self._lines:
            tail = f": loss {loss:.4f}" if loss is not None else (f": {note}" if note else "")
            self._log.info("%s %s %d/%d%s", self._desc, self._unit, self._n, self._total, tail)

    def describe(self, note: str) -> None:
        """Show ``note`` (the item being worked on) after the bar."""
        self._bar.set_postfix_str(note, refresh=True)

    def close(self) -> None:
        self._bar.close()


def track(items: Iterable[T], total: int, desc: str, progress: bool, log: logging.Logger,
          unit: str = "step", label: Callable[[T], str] | None = None) -> Iterator[T]:
    """Iterate ``items`` under a :class:`StepProgress`: each item counts as a step once the loop body is done
    with it (when the next item is asked for), and the bar is closed at the end or on an error. ``label(item)``
    names the item in the bar and in its log line (``tokenizing split 2/4: news4/test``)."""
    bar = StepProgress(items, total, desc, progress, log, unit)
    try:
        for item in bar:
            note = label(item) if label is not None else ""
            if note:
                bar.describe(note)
            yield item
            bar.step(note=note)
    finally:
        bar.close()


@contextlib.contextmanager
def ticking(bar: Any, every: float = TICK_SECONDS) -> Iterator[Any]:
    """Redraw ``bar`` every ``every`` seconds while the block runs; yields ``bar``. For a tqdm bar made outside
    :func:`progress_bar` (a bar from :func:`progress_bar` redraws itself already: nothing more is started).

    A disabled bar (off a terminal, or progress off) gets no thread. The thread is a daemon and is stopped and
    joined when the block ends, also on an error.
    """
    if getattr(bar, "disable", False) or "_harness_ticker" in getattr(bar, "__dict__", {}):
        yield bar
        return
    ticker = _Ticker(bar, every)
    try:
        yield bar
    finally:
        ticker.stop()


_COMMAND_START: list[float] = []  # time.time() at the start of the CLI command, when the CLI set it


def mark_command_start(started: float | None = None) -> None:
    """Record when the command began (``time.time()`` seconds; default: now). The CLI calls it first thing, so a
    run's wall time covers imports, model loading and training too; without it a run measures from its API call."""
    _COMMAND_START[:] = [time.time() if started is None else float(started)]


def process_started() -> float | None:
    """When this process started (``time.time()`` seconds), from Linux's ``/proc`` (its start in clock ticks after
    boot and the uptime, both 10 ms resolution); ``None`` elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime (the name may hold spaces)
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def command_wall_time(call_started: float) -> dict[str, float | str]:
    """The wall time of the command so far, for manifest.json: ``{"seconds": s, "from": what}``; from the CLI's
    start (:func:`mark_command_start`) when set and earlier than ``call_started`` (``time.time()`` at the API
    call), else from the API call."""
    if _COMMAND_START and _COMMAND_START[0] <= call_started:
        return {"seconds": round(time.time() - _COMMAND_START[0], 3), "from": "the start of the command"}
    return {"seconds": round(time.time() - call_started, 3), "from": "the start of the API call"}

