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


# Injected into a copy of report.html (whose CSP forbids scripts): every table wrapper that would need
# horizontal scrolling, and every element whose right edge passes the viewport, is written into an attribute
# that --dump-dom returns.
PROBE = """<script>
const out = [], vw = document.documentElement.clientWidth;
for (const w of document.querySelectorAll('.table-wrap')) {
  if (w.scrollWidth > w.clientWidth + 1) out.push('scrolls: ' + w.querySelector('th').textContent);
}
for (const el of document.querySelectorAll('main, h1, h2, p, table, figure, img, nav')) {
  if (el.getBoundingClientRect().right > vw + 1) out.push('past the edge: ' + el.tagName);
}
document.body.setAttribute('data-clipped', JSON.stringify(out));
document.body.setAttribute('data-tables', String(document.querySelectorAll('table').length));
</script>"""


def _dump_dom(page: Path, profile: Path, width: int) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian package `chromium`)")
def test_report_at_1400px_clips_no_column(tmp_path):
    """Issue 19: the 'accuracy along alpha' table was clipped at 1400 px. With 13 suites every table must fit
    (wide ones are split into column chunks) and nothing may pass the right edge of the window."""
    import json

    from PIL import Image

    fx = _fixtures()
    spec = {"id-suite": ("id", {"validation": ("validation", 40), "test": ("test", 40)}, 1.2, 2.6)}
    spec.update({f"shift-domain-{i:02d}": ("shift", {"validation": ("validation", 30), "test": ("test", 30)}, 1.4,
                                           0.9 + 0.03 * i) for i in range(12)})
    run = fx.make_run(tmp_path / "run", suites_spec=spec, alphas=[0.0, 0.25, 0.5, 0.75, 1.0])
    paths = render_report(run)
    html = paths.html.read_text()
    assert "Table continued" in html  # the alpha table (27 columns) was split
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
                     .replace("</body>", PROBE + "</body>"))
    dom = _dump_dom(probe, tmp_path / "profile-dom", 1400)
    clipped = re.search(r'data-clipped="([^"]*)"', dom)
    assert clipped is not None, dom[-2000:]
    assert json.loads(clipped.group(1).replace("&quot;", '"')) == []
    assert int(re.search(r'data-tables="(\d+)"', dom).group(1)) > 10

    shot = tmp_path / "report-1400.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1400,6000", f"--screenshot={shot}",
         "--virtual-time-budget=5000", paths.html.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[1] == 1400 and (img.sum(axis=2) < 600).mean() > 0.02


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian package `chromium`)")
@pytest.mark.parametrize("width", [1280, 1400])
def test_long_gate_table_fits_whole(tmp_path, width):
    """Issue 19 trial: the gate table was split ("Table continued ... rule repeated") at 1280 px though the browser
    fits it; now it is one table, and at 1280 and 1400 px no table scrolls and nothing passes the edge."""
    import json

    run = _fixtures()._long_gate_run(tmp_path / "run")
    html = render_report(run).html.read_text()
    gate = html[html.index("<h2>Gate verdict</h2>"):]
    assert gate[:gate.index("</section>")].count("<table>") == 1
    probe = tmp_path / "probe.html"
    probe.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
                     .replace("</body>", PROBE + "</body>"))
    dom = _dump_dom(probe, tmp_path / "profile", width)
    clipped = re.search(r'data-clipped="([^"]*)"', dom)
    assert clipped is not None, dom[-2000:]
    assert json.loads(clipped.group(1).replace("&quot;", '"')) == []
