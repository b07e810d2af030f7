"""Issue 7, part 2: every output appears whole or not at all; unwritable or full output folders fail cleanly
(exit 2, nothing partial, no temp folders); a crash while writing keeps the previous run; corrupt cache and
results-store entries are detected, reported and recomputed to the same numbers.

Unit-level cache checks live in tests/unit/test_tokcache.py (corrupt entry, entry under the wrong key) and
tests/unit/test_store.py (bad checksum, row-count mismatch, unreadable database); here the same faults go through
a whole ``harness eval``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

import pytest

import harness
from _helpers import leftovers, tree
from harness.cli import main

FAST = ["--no-report", "--quiet", "--n-resamples", "10", "--no-store"]


def _eval_argv(tiny_pair, tiny_suites, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(tiny_pair[0]), "--suite", str(tiny_suites[0]), "--out", str(out), *FAST, *extra]


@pytest.fixture
def previous_run(tiny_pair, tiny_suites, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A finished run directory at tmp_path/out/run, and a snapshot of its files."""
    out = tmp_path / "out" / "run"
    assert main(_eval_argv(tiny_pair, tiny_suites, out)) == 0
    snap = tree(out)
    assert "summary.json" in snap and "predictions.parquet" in snap
    return out, snap


def _root_ignores_chmod(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


def _under(path, folder: Path) -> bool:
    try:
        return Path(os.fspath(path)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError):
        return False


def _fail_disk(monkeypatch, folder: Path, where: str) -> None:
    """Simulate a full disk (ENOSPC) for files below ``folder`` only (the cache keeps working): at the final
    rename of an atomic write (``replace``) or when data is flushed (``fsync``)."""
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "replace":
        real = os.replace

        def replace(src, dst, *a, **k):
            if _under(dst, folder):
                raise full
            return real(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)
    else:
        real_fsync = os.fsync

        def fsync(fd):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if _under(target, folder):
                raise full
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("fault", ["read_only_folder", "parent_is_a_file", "disk_full_at_rename",
                                   "disk_full_at_flush"])
def test_unwritable_or_full_output_fails_cleanly_and_keeps_the_previous_run(previous_run, tiny_pair, tiny_suites,
                                                                            monkeypatch, capsys, fault):
    out, snap = previous_run
    parent = out.parent
    if fault == "read_only_folder":
        parent.chmod(0o555)
        if _root_ignores_chmod(parent):  # tests run as root here: chmod does not stop root's writes
            parent.chmod(0o755)
            pytest.skip("running as root, which ignores folder permissions; the other faults cover this path")
        target = out
    elif fault == "parent_is_a_file":
        (parent / "blocker").write_text("a file where a folder is needed\n")
        target = parent / "blocker" / "run"
    else:
        _fail_disk(monkeypatch, parent, "replace" if fault == "disk_full_at_rename" else "fsync")
        target = out
    try:
        code = main(_eval_argv(tiny_pair, tiny_suites, target))
    finally:
        parent.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert str(target.parent) in err or str(target) in err
    assert tree(out) == snap  # the previous run is untouched
    assert leftovers(parent) == []  # no temp folder or temp file is left behind
    assert not (parent / "blocker" / "run").exists()


@pytest.mark.parametrize("crash", [RuntimeError("simulated crash"), KeyboardInterrupt()],
                         ids=["exception", "interrupt"])
def test_crash_while_writing_keeps_the_previous_run(previous_run, tiny_pair, tiny_suites, monkeypatch, capsys, crash):
    """A crash half-way through writing the predictions (a partial file already on disk) leaves the previous run
    directory exactly as it was and no temporary folder."""
    import harness.rundir as rundir

    out, snap = previous_run
    real = rundir.write_predictions

    def half_written(run_dir, preds):
        (Path(run_dir) / "predictions.parquet").write_bytes(b"PAR1 partial")
        raise crash

    monkeypatch.setattr(rundir, "write_predictions", half_written)
    code = main(_eval_argv(tiny_pair, tiny_suites, out))
    assert code == (3 if isinstance(crash, Exception) else 130)
    assert tree(out) == snap
    assert leftovers(out.parent) == []
    monkeypatch.setattr(rundir, "write_predictions", real)
    assert main(_eval_argv(tiny_pair, tiny_suites, out)) == 0  # and the next run replaces it as a whole
    assert leftovers(out.parent) == []


def test_failed_swap_restores_the_previous_run(previous_run, tiny_pair, tiny_suites, monkeypatch, capsys):
    """If moving the new run into place fails after the old one was moved aside, the old one comes back."""
    out, snap = previous_run
    real_rename = Path.rename

    def rename(self, target):
        if Path(self).name.startswith(f".{out.name}.") and Path(target) == out and ".old-" not in Path(self).name:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    code = main(_eval_argv(tiny_pair, tiny_suites, out))
    err = capsys.readouterr().err
    assert code == 2, err
    assert tree(out) == snap
    assert leftovers(out.parent) == []


# ------------------------------------------------------------------------------------------- corrupt caches --

def _corrupt_token_cache(cache: Path, how: str) -> int:
    files = sorted((cache / "tokens").glob("*.parquet"))
    assert files
    if how == "swapped":  # valid parquet files, each under another split's key
        blobs = [f.read_bytes() for f in files]
        for f, b in zip(files, blobs[1:] + blobs[:1]):
            f.write_bytes(b)
    for f in files:
        data = f.read_bytes()
        if how == "garbage":
            f.write_bytes(os.urandom(len(data)))
        elif how == "truncated":
            f.write_bytes(data[: len(data) // 3])
        elif how == "empty":
            f.write_bytes(b"")
    return len(files)


def _corrupt_store(cache: Path) -> int:
    db = sqlite3.connect(str(cache / "results.sqlite"))
    rows = db.execute("SELECT key, logits FROM predictions").fetchall()
    for key, blob in rows:
        blob = bytearray(blob)
        blob[-5] ^= 0xFF  # one flipped bit pattern in the logits payload
        db.execute("UPDATE predictions SET logits=? WHERE key=?", (bytes(blob), key))
    db.commit()
    db.close()
    return len(rows)


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "swapped"])
def test_corrupt_cache_entries_are_recomputed_with_a_warning(tiny_pair, tiny_suites, tmp_path, monkeypatch, caplog,
                                                             how):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    kw = dict(n_resamples=20, progress=False, report=False)
    first = harness.run_eval(tiny_pair[0], tiny_suites[:2], **kw)
    n_tok = _corrupt_token_cache(cache, how)
    n_rows = _corrupt_store(cache)
    assert n_tok == 4 and n_rows == 4
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = harness.run_eval(tiny_pair[0], tiny_suites[:2], **kw)
    text = caplog.text
    assert text.count("is unusable") == n_tok, text
    assert text.count("results store entry") == n_rows, text
    assert second.summary.results == first.summary.results  # identical numbers
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = harness.run_eval(tiny_pair[0], tiny_suites[:2], **kw)
    assert "cache entry" not in caplog.text and "store entry" not in caplog.text  # healed
    assert third.summary.results == first.summary.results


@pytest.mark.parametrize("memo", [b"\x00\xff garbage", b"[1, 2, 3]", b'{"x": 5}'])
def test_damaged_fingerprint_memo_is_rebuilt(tiny_pair, tmp_path, monkeypatch, memo):
    from harness.models.load import model_fingerprint

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    want = model_fingerprint(tiny_pair[0])
    (tmp_path / "cache" / "fingerprints.json").write_bytes(memo)
    assert model_fingerprint(tiny_pair[0]) == want


def test_full_cache_folder_only_warns(tiny_pair, tiny_suites, tmp_path, monkeypatch, caplog):
    """The tokenized cache saves time only: a cache folder that cannot be written (full disk) is a warning, and the
    numbers are those of a run with a working cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    kw = dict(n_resamples=20, progress=False, report=False, use_store=False)
    want = harness.run_eval(tiny_pair[0], tiny_suites[:1], **kw).summary.results
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "full-cache"))
    _fail_disk(monkeypatch, tmp_path / "full-cache", "replace")
    with caplog.at_level(logging.WARNING, logger="harness.tokcache"):
        got = harness.run_eval(tiny_pair[0], tiny_suites[:1], **kw).summary.results
    assert got == want
    assert "cannot write the tokenized cache entry" in caplog.text and "No space left" in caplog.text
    assert leftovers(tmp_path / "full-cache") == []


@pytest.mark.parametrize("name", ["manifest.json", "summary.json", "predictions.parquet", "per_alpha.csv",
                                  "verdict.json"])
def test_damaged_run_directory_files_never_crash_gate_or_report(previous_run, tmp_path, capsys, name):
    """``gate`` and ``report`` read only the run directory: a damaged file is an input error (2) naming it, or is
    ignored when it is informative only (manifest.json, per_alpha.csv), never an internal error (3)."""
    out, _ = previous_run
    policy = tmp_path / "floor.yaml"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    assert main(["gate", str(out), "--policy", str(policy), "--quiet"]) == 0  # writes verdict.json
    (out / name).write_bytes(b"\x00\xff{ damaged")
    capsys.readouterr()
    for argv in (["report", str(out)], ["gate", str(out), "--policy", str(policy), "--quiet"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, (argv[0], code, err)
        if code == 2:
            assert name in err, err


def _age(path: Path, seconds: float) -> None:
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def test_folders_left_by_a_killed_writer_are_tidied_on_the_next_run(previous_run, tiny_pair, tiny_suites, caplog):
    """After a SIGKILL mid-write: old hidden temp folders of this run are removed, a young one (maybe a writer still
    at work), another run's folders and a user's own hidden sibling (``.run.backup1``, which the old pattern
    ``.<name>.<word>`` would have deleted) are left alone, and the next run completes."""
    from harness.rundir import tmp_prefix

    out, _ = previous_run
    stale = out.parent / f"{tmp_prefix(out)}k2j4x_9q"
    young = out.parent / f"{tmp_prefix(out)}abc123__"
    other = out.parent / ".run.v2.tmp-k2j4x_9q"  # the temp folder of a run named "run.v2": not ours
    mine = out.parent / ".run.backup1"
    for p in (stale, young, other, mine):
        p.mkdir()
        (p / "summary.json").write_text("{}")
    for p in (stale, other, mine):
        _age(p, 3600)
    with caplog.at_level(logging.WARNING):
        assert main(_eval_argv(tiny_pair, tiny_suites, out)) == 0
    assert not stale.exists() and young.exists() and other.exists() and mine.exists()
    assert "left by an interrupted run" in caplog.text
    assert (out / "summary.json").is_file()


def test_previous_run_moved_aside_by_a_killed_swap_is_restored(previous_run):
    """SIGKILL between moving the previous run aside and moving the new one in: the previous run comes back."""
    from harness.rundir import clean_stale_siblings

    out, snap = previous_run
    aside = out.with_name(f".{out.name}.old-1732900000000000000")
    out.rename(aside)
    _age(aside, 3600)
    assert clean_stale_siblings(out) == [aside]
    assert tree(out) == snap and not aside.exists()
    # with the new run in place, a leftover previous run is just removed
    aside.mkdir()
    _age(aside, 3600)
    assert clean_stale_siblings(out) == [aside] and not aside.exists() and tree(out) == snap


def _precious(folder: Path) -> dict[str, bytes]:
    """A folder of someone's own files (not a run directory) and a snapshot of it."""
    (folder / "src").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\section{Results}\n")
    (folder / "src" / "train.py").write_text("print('mine')\n")
    return tree(folder)


@pytest.mark.parametrize("command", ["eval", "sweep", "blend"])
def test_an_out_folder_holding_other_files_is_refused_not_replaced(tiny_pair, tiny_suites, tmp_path, capsys,
                                                                    monkeypatch, command):
    """New-user trial (2026-12-01): ``--out`` naming an existing folder replaced it whole, so ``--out ~/project``
    deleted the project after the run. Now such a folder is refused before any work (exit 2) and left intact; a
    new folder, an empty one and an earlier run directory (or blend) are still written."""
    import harness.pipeline.blend as bl
    import harness.pipeline.evaluate as ev
    import harness.pipeline.evaluator as evr

    folder = tmp_path / "project"
    snap = _precious(folder)
    base, adapted = map(str, tiny_pair)
    argv = {"eval": ["eval", "--model", base, "--suite", str(tiny_suites[0]), *FAST],
            "sweep": ["sweep", "--base", base, "--adapted", adapted, "--suite", *map(str, tiny_suites[:2]),
                      "--alphas", "0,1", *FAST],
            "blend": ["blend", "--base", base, "--adapted", adapted, "--alpha", "0.5", "--quiet"]}[command]

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before --out was checked")

    with monkeypatch.context() as m:  # the check comes before any model is loaded
        m.setattr(ev, "load_live", no_model)
        m.setattr(evr, "load_live", no_model)
        m.setattr(bl, "_stream", no_model)
        m.setattr(bl, "_stream_adapter", no_model)
        assert main([*argv, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "--out names a folder that is not" in err and "thesis.tex" in err and "Traceback" not in err, err
    assert tree(folder) == snap and leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty, tmp_path / "new"):  # the last: replaces the earlier run (or blend)
        assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    assert tree(folder) == snap


def test_a_gated_and_reported_run_directory_can_be_rerun_into(previous_run, tiny_pair, tiny_suites, tmp_path,
                                                               capsys):
    """Everything gate and report add to a run directory (verdict.json, junit.xml, report.md/html, figures/) is a
    run directory's own: the rerun into it is not refused by the --out check."""
    from harness.rundir import RUN_ENTRIES, check_out_dir

    out, _ = previous_run
    policy = tmp_path / "floor.yaml"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    assert main(["gate", str(out), "--policy", str(policy), "--quiet"]) == 0
    assert main(["report", str(out), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"verdict.json", "junit.xml", "report.md", "report.html", "figures"} <= names <= RUN_ENTRIES, names
    check_out_dir(out)
    capsys.readouterr()
    assert main(["gate", str(out), "--policy", str(policy)]) == 0  # LM user trial: report.md kept an older verdict
    assert f"`harness report {out}` shows this one" in capsys.readouterr().out
    assert main(_eval_argv(tiny_pair, tiny_suites, out)) == 0, capsys.readouterr().err
    assert not (out / "verdict.json").exists()  # replaced whole: the earlier verdict does not outlive its run


def test_a_junit_file_the_gate_wrote_into_the_run_directory_does_not_block_a_rerun(tiny_pair, tiny_suites, tmp_path,
                                                                                    capsys):
    """CI-integration trial (2026-12-01): ``sweep --gate P --out RUN --junit RUN/gate-junit.xml`` passed once and
    the same command then exited 2, the --out check refusing the JUnit file the gate had written. The gate's own
    JUnit XML (recognised by how it starts) is a run directory's entry; another .xml file still is not."""
    from harness.rundir import check_out_dir, is_gate_junit

    out = tmp_path / "run"
    policy = tmp_path / "floor.yaml"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    base, adapted = map(str, tiny_pair)
    argv = ["sweep", "--base", base, "--adapted", adapted, "--suite", *map(str, tiny_suites[:2]), "--alphas", "0,1",
            *FAST, "--gate", str(policy), "--out", str(out), "--junit", str(out / "gate-junit.xml")]
    for _ in range(2):
        assert main(argv) == 0, capsys.readouterr().err
        assert is_gate_junit(out / "gate-junit.xml")
    (out / "notes.xml").write_text("<?xml version='1.0' encoding='utf-8'?>\n<notes>mine</notes>\n")
    with pytest.raises(OSError, match="notes.xml"):
        check_out_dir(out)


@pytest.mark.parametrize("rule", ["{name: g, kind: floor, metric: accuracy, suites: [tiny-shfit], floor: 0.0}",
                                  "{name: g, kind: floor, metric: accuracy, suites: [vader-yelp], floor: 0.0}",
                                  "{name: g, kind: floor, metric: acc_norm, suites: id, floor: 0.0}"])
def test_gate_refuses_a_policy_that_cannot_pass_on_the_run_and_keeps_the_verdict(previous_run, tmp_path, capsys,
                                                                                 rule):
    """CI-integration trial (2026-12-01): ``harness gate`` with a policy naming a suite the run lacks exited 1 and
    replaced the run's verdict.json and junit.xml, while ``sweep --gate`` refused the same policy with exit 2. Now
    both refuse it (a misspelt or missing suite, a metric the run's suite lacks) and nothing is written."""
    out, _ = previous_run
    good = tmp_path / "good.yaml"
    good.write_text("kind: policy\nname: good\ncandidate: adapted\nrules:\n"
                    "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    assert main(["gate", str(out), "--policy", str(good), "--quiet"]) == 0
    kept = tree(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"kind: policy\nname: bad\ncandidate: adapted\nrules:\n  - {rule}\n")
    capsys.readouterr()
    assert main(["gate", str(out), "--policy", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the gate policy cannot pass on this run" in err and "nothing was written" in err, err
    assert tree(out) == kept


def test_out_naming_the_current_folder_is_refused(tiny_pair, tiny_suites, tmp_path, monkeypatch, capsys):
    """``--out .`` (review: ``Path('.').with_name`` raised ValueError, an internal error; replacing the folder a
    command runs in would leave it in a deleted folder): refused with exit 2, like ``..``; the folder is kept."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "mine.txt").write_text("keep me")
    monkeypatch.chdir(here)
    for out in (".", "..", str(here)):
        assert main(_eval_argv(tiny_pair, tiny_suites, Path(out))) == 2
        err = capsys.readouterr().err
        assert "error: --out is the folder this command runs in" in err and "cannot be read" not in err, err
    assert (here / "mine.txt").read_text() == "keep me" and leftovers(tmp_path) == []
    assert main(_eval_argv(tiny_pair, tiny_suites, Path("runs") / "a")) == 0  # a subfolder is fine


def test_an_unused_baseline_is_noted(previous_run, tmp_path, caplog):
    """CI-integration trial (2026-12-01): ``--baseline`` was ignored without a word when no rule compares with a
    baseline run; the gate now says so (and still judges: the verdict does not depend on it)."""
    out, _ = previous_run
    policy = tmp_path / "floor.yaml"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    with caplog.at_level("WARNING"):
        assert main(["gate", str(out), "--policy", str(policy), "--baseline", str(out), "--quiet"]) == 0
    assert "is not used: no rule of policy 'floor' compares with a baseline run" in caplog.text


def test_a_declared_suite_no_rule_judges_is_noted_not_refused(previous_run, tmp_path, caplog):
    """Review: a declared suite the run lacks that no rule over its role judges does not decide the verdict, so
    the gate judges the run (no refusal) and says the name is ignored."""
    out, _ = previous_run
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: policy\nname: p\ncandidate: adapted\nsuites: {shift: [vader-yelp]}\nrules:\n"
                      "  - {name: f, kind: floor, metric: accuracy, suites: id, floor: 0.0, mode: point}\n")
    with caplog.at_level("WARNING"):
        assert main(["gate", str(out), "--policy", str(policy), "--quiet"]) == 0
    assert "names suite 'vader-yelp' (suites.shift)" in caplog.text and "so the gate ignores it" in caplog.text
