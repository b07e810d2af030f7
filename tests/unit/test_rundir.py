"""Reading a run directory: a missing folder, a file, and a folder without summary.json each say what they are."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import DataError
from harness.rundir import read_summary


def test_nonexistent_run_directory_says_it_does_not_exist(tmp_path):
    (tmp_path / "rc1").mkdir()
    (tmp_path / "rc1" / "summary.json").write_text("{}")
    with pytest.raises(DataError) as e:
        read_summary(tmp_path / "rc2")
    msg = str(e.value)
    assert "the run directory does not exist" in msg and "has no summary.json" not in msg
    assert f"did you mean {tmp_path / 'rc1'}" in msg and "runs in" in msg


def test_report_on_a_nonexistent_run_exits_2_with_the_reason(tmp_path, capsys):
    assert main(["report", str(tmp_path / "runs" / "nonexistent")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "has no summary.json" not in err


def test_a_file_and_an_empty_folder_are_told_apart(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        read_summary(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="run directory has no summary.json"):
        read_summary(tmp_path / "empty")


def test_the_cache_note_names_tokenized_splits_only_for_a_classification_run():
    """Only classification tasks cache tokenized splits (harness.tokcache); an LM run's note must not claim it."""
    from harness.rundir import run_dir_line

    cls = run_dir_line(None).splitlines()[1]
    lm = run_dir_line(None, model_kind="causal_lm").splitlines()[1]
    assert cls.endswith("; tokenized splits and model file fingerprints are cached there too")
    assert lm.endswith("; model file fingerprints are cached there too") and "tokenized" not in lm


def test_the_run_directory_line_says_where_the_report_is(tmp_path):
    from harness.rundir import run_dir_line

    first, report = run_dir_line(tmp_path / "r").splitlines()
    assert first == f"run directory: {tmp_path / 'r'}"
    assert report.startswith(f"report: {tmp_path / 'r' / 'report.html'}") and "`harness report" in report
    assert "not rendered (--no-report)" in run_dir_line(tmp_path / "r", report=False)
