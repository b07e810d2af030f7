"""The command's wall time: measured from the start of the command (or API call), recorded in the manifest and
shown apart from the sum of the stage times."""

from __future__ import annotations

import time

from harness import progress
from harness.report.sections import wall_time_text


def test_command_wall_time_counts_from_the_command_start(monkeypatch):
    monkeypatch.setattr(progress, "_COMMAND_START", [])
    call = time.time()
    assert progress.command_wall_time(call)["from"] == "the start of the API call"
    progress.mark_command_start(call - 20.0)  # the CLI began 20 s before the API call (imports, training)
    got = progress.command_wall_time(call)
    assert got["from"] == "the start of the command" and 20.0 <= got["seconds"] < 25.0
    progress.mark_command_start(call + 5.0)  # a mark after the call (another command in-process) is ignored
    assert progress.command_wall_time(call)["from"] == "the start of the API call"


def test_process_started_is_in_the_past():
    started = progress.process_started()
    assert started is None or 0.0 < time.time() - started < 7 * 24 * 3600


def test_report_shows_the_command_time_and_labels_the_stage_sum():
    text = wall_time_text({"command_wall_s": {"seconds": 23.6, "from": "the start of the command"},
                           "timings_s": {"load_model": 1.9, "predict": 0.9}})
    assert text.startswith("23.6 s from the start of the command to writing the run directory")
    assert "stage times sum to 2.8 s (load_model 1.9 s, predict 0.9 s)" in text
    old = wall_time_text({"timings_s": {"predict": 2.0}})
    assert old == "the whole command's time was not recorded; stage times sum to 2.0 s (predict 2.0 s)"
