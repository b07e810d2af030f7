"""The demo's plumbing end to end on tiny stand-ins: a synthetic VADER archive (real layout) and a tiny
sentence-transformers encoder; the real training spec, quick profile, suites, gate policy and report."""

from __future__ import annotations

import json
import random

import pytest

from conftest import make_fake_sentence_transformer, make_vader_archive

POS = ["good", "great", "fine", "lovely", "superb", "fun"]
NEG = ["bad", "awful", "dull", "boring", "poor", "weak"]
FILL = ["the", "film", "movie", "plot", "was", "a", "very", "and", "cast", "story", "phone", "day", "city"]


def sentence(rng: random.Random) -> tuple[float, str]:
    positive = rng.random() < 0.5
    words = [rng.choice(POS if positive else NEG)] + [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
    rng.shuffle(words)
    return (1.0 + 2 * rng.random()) * (1 if positive else -1), " ".join(words) + ("" if rng.random() < .5 else " &amp; fun")


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    from harness.data import vader

    rng = random.Random(0)
    rows = {
        "movieReviewSnippets": [(str(i), *sentence(rng)) for i in range(1, 241)],
        "tweets": [(str(i), *sentence(rng)) for i in range(1, 81)],
        "amazonReviewSnippets": [(f"{d}_{s}", *sentence(rng)) for d in range(1, 21) for s in range(1, 4)],
        "nytEditorialSnippets": [(f"{d}_{s}", *sentence(rng)) for d in range(1, 21) for s in range(1, 4)],
    }
    archive, sdist_sha, inner_sha = make_vader_archive(tmp_path / "vaderSentiment-3.3.2.tar.gz", rows)
    monkeypatch.setattr(vader, "SDIST_SHA256", sdist_sha)
    monkeypatch.setattr(vader, "INNER_SHA256", inner_sha)
    monkeypatch.setenv("HARNESS_VADER_ARCHIVE", str(archive))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_DEMO_ENCODER",
                       str(make_fake_sentence_transformer(tmp_path / "encoder", POS + NEG + FILL + ["&"])))
    return rows


def test_demo_runs_end_to_end_and_reuses_its_models(demo_env, tmp_path, capsys):
    from harness.demo.run import refresh_sample_report, run_demo
    from harness.pipeline import RunOptions

    out = tmp_path / "run"
    res = run_demo(profile="quick", out=out, options=RunOptions(progress=False, n_resamples=100))
    for name in ("summary.json", "per_alpha.csv", "predictions.parquet", "manifest.json", "verdict.json",
                 "junit.xml", "report.md", "report.html"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "demo" and summary["profile"] == "quick"
    assert any("Quick profile" in n for n in summary["notes"])
    assert any("probe C=" in n and "(adapted)" in n for n in summary["notes"])
    assert {"vader-movies", "vader-tweets", "vader-amazon", "vader-nyt"} == set(summary["suites"])
    assert summary["selection"]["search"] == "adaptive" and summary["selection"]["n_evaluations"] <= 6
    assert all(s.endswith("/validation") for s in summary["selection"]["selected_on"])
    ids = {p["id"] for p in summary["points"]}
    assert {"base", "adapted"} <= ids and sum(p["is_chosen"] for p in summary["points"]) == 1
    assert "quick profile" in (out / "report.md").read_text().lower()
    printed = capsys.readouterr().out
    assert "chosen alpha" in printed and "gate (demo)" in printed and "report:" in printed
    # the models' folders are repeated at the end, for sweeping them on one's own suites (LM user trial)
    assert "models: base " in printed and "        adapted " in printed and "harness sweep --base BASE" in printed
    assert res.verdict is not None

    again = run_demo(profile="quick", out=out, options=RunOptions(progress=False, n_resamples=100))
    assert again.summary.results == res.summary.results  # models reused, predictions served from the store
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["store_computed_splits"] == 0

    sample = refresh_sample_report(out, tmp_path / "sample")
    texts = [t for rows in demo_env.values() for _, _, t in rows]
    blob = "".join(p.read_text(errors="ignore") for p in sample.rglob("*") if p.suffix in (".md", ".json", ".csv"))
    assert not any(t in blob for t in texts), "dataset sentences leaked into the sample report"
    assert sorted(p.name for p in (sample / "figures").glob("*.png"))
