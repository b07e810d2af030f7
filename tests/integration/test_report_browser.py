"""Slow: open report.html in headless Chromium, take a screenshot and check it shows the plots without console
errors. Needs the Debian package ``chromium`` (skipped when no Chromium binary is on PATH)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.report import render_report

pytestmark = pytest.mark.slow

CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
# Chromium logs every console message (console.error, uncaught exceptions, CSP refusals) as ":CONSOLE".
CONSOLE = re.compile(r":CONSOLE|Uncaught")


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "_report_fixtures", Path(__file__).resolve().parents[1] / "unit" / "test_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _screenshot(page: Path, shot: Path, profile: Path, height: int = 4000) -> str:
    """Render ``page`` headless into ``shot``; returns Chromium's stderr (its log)."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size=1280,{height}", f"--screenshot={shot}",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian package `chromium`)")
def test_report_html_renders_in_chromium(tmp_path):
    from PIL import Image

    fx = _fixtures()
    run = fx.make_run(tmp_path / "run")
    paths = render_report(run, text_lookup=fx.lookup)

    # Control: the log capture does see console errors in this Chromium build.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefined_fn();</script></body></html>")
    assert CONSOLE.search(_screenshot(bad, tmp_path / "bad.png", tmp_path / "profile-bad"))

    shot = tmp_path / "report.png"
    log = _screenshot(paths.html, shot, tmp_path / "profile")
    errors = [line for line in log.splitlines() if CONSOLE.search(line)]
    assert errors == [], errors
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape == (4000, 1280, 3)
    assert (img.sum(axis=2) < 600).mean() > 0.05  # not a blank page
    # Pixels of the chosen blend's green (#2ca02c) exist only inside the embedded figures.
    green = (np.abs(img - np.array([44, 160, 44])).max(axis=2) < 12).sum()
    assert green > 500, green
