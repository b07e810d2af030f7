"""Progress on a terminal (issue 19, fresh-user trial: "no tqdm bars appeared on a terminal for harness train,
sweep and demo"). The trial ran in a pseudo-terminal whose size was never set (0 x 0), where tqdm alone draws
nothing. Each test runs the real CLI in a child process whose stdin, stdout and stderr are such a pseudo-terminal
(``os.openpty``) and reads what a user would see: tqdm bars for training steps, tokenization, each alpha's
scoring and report rendering; none with ``--quiet``, which still prints the final line. Off a terminal the same
stages log one INFO line per step (in-process, stderr captured)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from test_train_tiny import cls_setup  # noqa: F401  (fixture: a tiny BERT, a 4-class suite, a training file)

ROOT = Path(__file__).resolve().parents[2]


def run_in_pty(code: str, env: dict[str, str], timeout: float = 400.0) -> tuple[int, str]:
    """Run ``python -c code`` with a fresh pseudo-terminal (size 0 x 0) as stdin, stdout and stderr; returns the
    exit code and everything it wrote (carriage returns kept)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True, cwd=ROOT)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail("the command under the pseudo-terminal did not finish in time")
        rc = proc.wait(timeout=60)
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def child_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(ROOT), HARNESS_CACHE=str(cache), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def bar(desc: str) -> re.Pattern:
    """A tqdm bar line of ``desc``: ``desc:  40%|####      | 2/5 [00:01<00:01, 2.00step/s]``."""
    return re.compile(re.escape(desc) + r":\s+\d+%\|.*\| \d+/\d+ \[")


def test_train_and_sweep_draw_bars_on_a_pseudo_terminal(cls_setup, tmp_path):  # noqa: F811
    s = {k: str(v) for k, v in cls_setup.items()}
    pair, run = tmp_path / "pair", tmp_path / "run"
    train = ["train", "-c", s["training"], "--suite", s["suite"], "--base", s["bert"], "--out", str(pair),
             "--method", "lpft"]
    sweep = ["sweep", "--base", str(pair / "base"), "--adapted", str(pair / "adapted"), "--suite", s["suite"],
             s["shift"], "--alphas", "0,0.5,1", "--n-resamples", "20", "--no-store"]
    code = ("import sys\nfrom harness.cli import main\n"
            f"rc = main({train!r}) or main({sweep + ['--out', str(run)]!r})\n"
            "print('=== quiet ===', flush=True)\n"
            f"rc = rc or main({sweep + ['--out', str(tmp_path / 'quiet'), '--quiet', '--no-report']!r})\n"
            "sys.exit(rc)\n")
    rc, out = run_in_pty(code, child_env(tmp_path / "cache"))
    assert rc == 0, out[-3000:]
    loud, quiet = out.split("=== quiet ===")
    for desc in ("probe features (train)", "epoch 1/2", "epoch 2/2", "loading models", "tokenizing",
                 "base news4/validation",
                 "alpha=0.5 news4-shift/test", "adapted news4/test", "rendering the report"):
        assert bar(desc).search(loud), f"no bar for {desc!r} in:\n{loud[-3000:]}"
    assert "trained lpft:" in loud and "chosen alpha:" in loud
    assert "%|" not in quiet and "INFO" not in quiet, quiet
    assert "chosen alpha: " in quiet and f"run directory: {tmp_path / 'quiet'}" in quiet  # the final lines


def test_off_a_terminal_each_stage_logs_a_line_per_step(cls_setup, tmp_path, capsys, caplog):  # noqa: F811
    """stderr is not a terminal under pytest: no bar characters; each training step, tokenized split, alpha and
    report section logs one INFO line (the CLI sets the harness loggers to INFO off a terminal)."""
    pair = tmp_path / "pair"
    assert main(["train", "-c", str(cls_setup["training"]), "--suite", str(cls_setup["suite"]), "--base",
                 str(cls_setup["bert"]), "--out", str(pair), "--method", "lpft"]) == 0
    assert main(["sweep", "--base", str(pair / "base"), "--adapted", str(pair / "adapted"), "--suite",
                 str(cls_setup["suite"]), "--select", "id-only", "--alphas", "0,1", "--n-resamples", "20",
                 "--no-store", "--out",
                 str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err and "\r" not in err
    for line in ("epoch 1/2 step 1/6: loss ", f"loading models step 1/3: base {pair / 'base'}",
                 "loading models step 3/3: pair checked", "tokenizing split 1/2: news4/validation",
                 "adapted (alpha=1): 2 splits scored", "rendering the report section 1/17: overview"):
        assert line in caplog.text, f"{line!r} not in:\n{caplog.text}"


@pytest.mark.slow
def test_demo_draws_bars_on_a_pseudo_terminal(tmp_path):
    """``harness demo`` (quick profile) on the tiny stand-ins of test_demo_tiny (a synthetic VADER archive, a tiny
    encoder): bars for the demo's training, tokenization, each alpha's scoring and the report; ``--quiet`` prints
    the final line only. Slow: about 40 s for the two runs (models trained once) on a shared 2-core machine."""
    import random

    from conftest import make_fake_sentence_transformer, make_vader_archive
    from test_demo_tiny import FILL, NEG, POS, sentence

    rng = random.Random(0)
    rows = {"movieReviewSnippets": [(str(i), *sentence(rng)) for i in range(1, 241)],
            "tweets": [(str(i), *sentence(rng)) for i in range(1, 81)],
            "amazonReviewSnippets": [(f"{d}_{s}", *sentence(rng)) for d in range(1, 21) for s in range(1, 4)],
            "nytEditorialSnippets": [(f"{d}_{s}", *sentence(rng)) for d in range(1, 21) for s in range(1, 4)]}
    archive, sdist, inner = make_vader_archive(tmp_path / "vaderSentiment-3.3.2.tar.gz", rows)
    env = child_env(tmp_path / "cache")
    env.update(HARNESS_VADER_ARCHIVE=str(archive), HARNESS_DEMO_ENCODER=str(
        make_fake_sentence_transformer(tmp_path / "encoder", POS + NEG + FILL + ["&"])))

    def demo(*extra: str) -> str:  # one process per run: --quiet sets the log level when logging starts
        code = ("import sys\nfrom harness.data import vader\n"
                f"vader.SDIST_SHA256, vader.INNER_SHA256 = {sdist!r}, {inner!r}\n"
                f"from harness.cli import main\nsys.exit(main({['demo', '--n-resamples', '50', *extra]!r}))\n")
        rc, out = run_in_pty(code, env)
        assert rc == 0, out[-3000:]
        return out

    loud = demo("--out", str(tmp_path / "run"))
    quiet = demo("--out", str(tmp_path / "quiet"), "--quiet")
    for desc in ("preparing MiniLM", "probe features (train)", "epoch 1/2", "loading models", "tokenizing",
                 "base vader-movies/validation",
                 "adapted vader-nyt/test", "rendering the report"):
        assert bar(desc).search(loud), f"no bar for {desc!r} in:\n{loud[-3000:]}"
    assert "%|" not in quiet and quiet.strip().startswith(f"report: {tmp_path / 'quiet' / 'report.html'}"), quiet
