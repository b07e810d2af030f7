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


# ------------------------------------------------------------------------------- --out folders (check_out_dir) --

def _run_like(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text("{}")
    return folder


def test_out_check_accepts_new_empty_and_earlier_run_folders(tmp_path):
    from harness.rundir import check_out_dir

    check_out_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")
    run = _run_like(tmp_path / "run", "summary.json", "manifest.json", "verdict.json", "report.md", ".DS_Store",
                    ".report.html.k2j3h4.tmp")  # a Finder file, and the temp file of a killed report write
    (run / "figures").mkdir()
    (run / "figures" / "id_vs_shift.png").write_bytes(b"png")
    check_out_dir(run)


@pytest.mark.parametrize("case", ["other_file", "report_only", "pdf_in_figures", "figures_is_a_file",
                                  "junit_elsewhere_named", "symlink", "file"])
def test_out_check_refuses_what_a_run_would_delete(tmp_path, case):
    """Review of the --out check: names alone do not make a run directory (a paper folder holding report.md and
    figures/ is no run), a figures folder holds PNGs only, and a link is not followed into a folder it would
    replace."""
    import os

    from harness.errors import OutputError
    from harness.rundir import check_out_dir

    out = tmp_path / "out"
    if case == "other_file":
        _run_like(out, "summary.json", "notes.txt")
    elif case == "report_only":
        _run_like(out, "report.md")
        (out / "figures").mkdir()
    elif case == "pdf_in_figures":
        _run_like(out, "summary.json")
        (out / "figures").mkdir()
        (out / "figures" / "plot.pdf").write_bytes(b"%PDF")
    elif case == "figures_is_a_file":
        _run_like(out, "summary.json", "figures")
    elif case == "junit_elsewhere_named":
        _run_like(out, "summary.json", "ci.xml")
    elif case == "symlink":
        _run_like(tmp_path / "real", "summary.json")
        os.symlink(tmp_path / "real", out)
    else:
        out.write_text("a file")
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    with pytest.raises(OutputError) as e:
        check_out_dir(out)
    assert str(out) in str(e.value) and e.value.exit_code == 2
    assert "cannot be read" not in str(e.value)  # the reason itself, not re-wrapped as an OSError (review 2)
    if case == "junit_elsewhere_named":
        assert "ci.xml" in str(e.value)  # not the gate's JUnit XML (that one is a run's entry: test_atomic_outputs)
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


def test_out_check_turns_an_unreadable_folder_into_an_output_error(tmp_path, monkeypatch):
    """A folder that cannot be listed (permissions) is an input error (exit 2), not an internal one."""
    from pathlib import Path

    from harness.errors import OutputError
    from harness.rundir import check_out_dir

    out = _run_like(tmp_path / "out", "summary.json")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(OutputError, match="cannot be read"):
        check_out_dir(out)


@pytest.mark.parametrize("task", ["sentiment", "lm"])
def test_the_demos_check_out_before_building_models(tmp_path, monkeypatch, task):
    """Review: ``harness demo --out ~/project`` trained the models (minutes) before the write refused the folder;
    now it is refused first, and untouched."""
    import harness.demo.lm_assets as assets
    import harness.demo.run as demo
    from harness.demo.lm_run import run_lm_demo
    from harness.errors import OutputError

    def no_models(*a, **k):
        raise AssertionError("models were built before --out was checked")

    monkeypatch.setattr(demo, "_build_models", no_models)
    monkeypatch.setattr(assets, "smollm2_dir", no_models)
    out = _run_like(tmp_path / "project", "thesis.tex")
    with pytest.raises(OutputError, match="not a harness run directory"):
        (run_lm_demo if task == "lm" else demo.run_demo)(out=out, quiet=True)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    # CI-integration trial: without --out the demo wrote into the clone's reports/ from any folder; the default
    # is relative to the current folder, as every --out (here a folder of other files there: refused, untouched)
    default = _run_like(tmp_path / "reports" / ("lm-demo" if task == "lm" else "demo"), "mine.txt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="not a harness run directory") as e:
        (run_lm_demo if task == "lm" else demo.run_demo)(quiet=True)
    assert f"reports/{default.name}" in str(e.value) and [p.name for p in default.iterdir()] == ["mine.txt"]
