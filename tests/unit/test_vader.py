"""Tests of the built-in VADER loader on a synthetic source archive (same layout as the real one, made-up
sentences); one slow test reads the real archive."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.data import vader
from harness.data.sources import load_splits
from harness.errors import DataError
from harness.spec.schema import Suite

INNER_DIR = "hutto_ICWSM_2014"

# id, rating, text. Ratings cover: clear positive/negative, inside the 0.5 band, exactly 0, exactly on the band.
SYNTH = {
    "movieReviewSnippets": [
        ("1", 2.5, "A bright &amp; lively film."), ("2", -1.75, "Dull from start to end."),
        ("3", 0.3, "It is a film."), ("4", 0.0, "There are scenes."), ("5", -0.5, "Slightly weak."),
        ("6", 0.49, "Fine, I suppose."),
    ],
    "tweets": [
        ("1", 1.2, "so happy &amp; proud &lt;3"), ("2", -2.0, "worst day ever &gt;:("), ("3", 0.1, "ok then"),
    ],
    "amazonReviewSnippets": [(f"{d}_{s}", (-1) ** (d + s) * (0.2 + 0.5 * s), f"Review {d} line {s} text.")
                             for d in range(1, 31) for s in range(1, 7)],
    "nytEditorialSnippets": [(f"{d}_{s}", (-1) ** d * 0.1 * s, f"Editorial {d} sentence {s}.")
                             for d in range(1, 41) for s in range(1, 9)],
}


def _ground_truth(rows) -> bytes:
    return "".join(f"{i}\t{r}\t{t}\r\n" for i, r, t in rows).encode("utf-8")


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_inner(extra=None, files=SYNTH) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dir_info = tarfile.TarInfo(INNER_DIR)
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)
        for stem, rows in files.items():
            _add(tar, f"{INNER_DIR}/{stem}_GroundTruth.txt", _ground_truth(rows))
        _add(tar, f"{INNER_DIR}/_README_.txt", b"readme\r\n")
        for args in extra or []:
            _add(tar, *args[:2], **(args[2] if len(args) > 2 else {}))
    return buf.getvalue()


def make_sdist(inner: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add(tar, "vaderSentiment-3.3.2/setup.py", b"# synthetic\n")
        _add(tar, vader.INNER_MEMBER, inner)
    return buf.getvalue()


def install(monkeypatch, tmp_path: Path, inner: bytes, *, patch_sdist=True, patch_inner=True) -> Path:
    """Write a synthetic sdist, point the loader at it and at a fresh cache, patch the expected checksums."""
    sdist = make_sdist(inner)
    path = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(sdist)
    monkeypatch.setenv("HARNESS_VADER_ARCHIVE", str(path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    if patch_sdist:
        monkeypatch.setattr(vader, "SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    if patch_inner:
        monkeypatch.setattr(vader, "INNER_SHA256", hashlib.sha256(inner).hexdigest())
    return path


@pytest.fixture
def synthetic(monkeypatch, tmp_path):
    return install(monkeypatch, tmp_path, make_inner())


def vader_suite(domain: str, band: float = 0.5, **kw) -> Suite:
    doc = {"kind": "suite", "name": f"v-{domain}", "role": "id", "classes": ["negative", "positive"],
           "source": {"type": "builtin", "name": "vader-icwsm2014", "domain": domain, "neutral_band": band},
           "splits": [{"name": "all", "role": "test"}]}
    doc.update(kw)
    return Suite.model_validate(doc)


def test_reads_domain_with_entities_unescaped_and_crlf_stripped(synthetic):
    tweets = vader.read_vader_domain("tweets")
    assert tweets["text"].tolist() == ["so happy & proud <3", "worst day ever >:(", "ok then"]
    assert tweets["example_id"].tolist() == ["1", "2", "3"]
    assert tweets["source_id"].tolist() == ["1", "2", "3"]
    assert str(tweets["rating"].dtype) == "float64"
    movies = vader.read_vader_domain("movies")
    assert movies["text"][0] == "A bright & lively film."
    assert not any("\r" in t or "\n" in t for t in movies["text"])
    assert list(movies.columns) == ["example_id", "source_id", "text", "rating"]


def test_doc_sentence_ids_give_document_keys(synthetic):
    amazon = vader.read_vader_domain("amazon")
    assert len(amazon) == 180
    assert amazon["source_id"].nunique() == 30
    assert (amazon["source_id"] == amazon["example_id"].str.split("_").str[0]).all()


def test_unknown_domain(synthetic):
    with pytest.raises(DataError, match="unknown VADER domain"):
        vader.read_vader_domain("books")


def test_neutral_band_counts_and_labels(synthetic):
    out = load_splits(vader_suite("movies"))["all"]
    # kept: 2.5 (pos), -1.75 (neg), -0.5 (on the band edge: kept); dropped: 0.3, 0.0, 0.49
    assert out.frame["example_id"].tolist() == ["1", "2", "5"]
    assert out.frame["label"].tolist() == [1, 0, 0]
    assert out.drop_reasons == {"neutral_band": 3}
    assert out.n_dropped == 3
    zero_band = load_splits(vader_suite("movies", band=0.0))["all"]
    assert zero_band.drop_reasons == {"neutral_band": 1}  # rating exactly 0 is always excluded
    assert len(zero_band) == 5


def test_cache_is_reused_without_fetching(synthetic, monkeypatch):
    vader.read_vader_domain("movies")
    monkeypatch.delenv("HARNESS_VADER_ARCHIVE")

    def no_fetch(*a, **k):
        raise AssertionError("must not fetch again")

    monkeypatch.setattr(vader, "_pip_download", no_fetch)
    assert len(vader.read_vader_domain("tweets")) == 3
    folder = vader.vader_files()
    assert folder.parent.parent == Path(os.environ["HARNESS_CACHE"]) / "vader-icwsm2014"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}_GroundTruth.txt" for s in SYNTH)


def test_altered_cache_is_rebuilt(synthetic):
    folder = vader.vader_files()
    target = folder / "tweets_GroundTruth.txt"
    target.write_bytes(b"1\t4\ttampered\r\n")
    assert vader.read_vader_domain("tweets")["text"].tolist()[0] == "so happy & proud <3"


def test_sdist_checksum_mismatch(monkeypatch, tmp_path):
    install(monkeypatch, tmp_path, make_inner(), patch_sdist=False)
    with pytest.raises(DataError) as e:
        vader.read_vader_domain("movies")
    msg = str(e.value)
    assert "sha256" in msg and vader.SDIST_SHA256 in msg and "HARNESS_VADER_ARCHIVE" in msg
    assert not (tmp_path / "cache" / "vader-icwsm2014").exists() or not any(
        (tmp_path / "cache" / "vader-icwsm2014").glob("*/.complete.json"))


def test_inner_checksum_mismatch(monkeypatch, tmp_path):
    install(monkeypatch, tmp_path, make_inner(), patch_inner=False)
    with pytest.raises(DataError, match="hutto_ICWSM_2014.tar.gz"):
        vader.read_vader_domain("movies")


def test_inner_archive_accepted_directly(monkeypatch, tmp_path):
    inner = make_inner()
    path = tmp_path / "hutto_ICWSM_2014.tar.gz"
    path.write_bytes(inner)
    monkeypatch.setenv("HARNESS_VADER_ARCHIVE", str(path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vader, "INNER_SHA256", hashlib.sha256(inner).hexdigest())
    assert len(vader.read_vader_domain("nyt")) == 320


@pytest.mark.parametrize("evil", [
    ("../evil.txt", b"pwned"),
    ("/tmp/harness-evil-abs.txt", b"pwned"),
    (f"{INNER_DIR}/../../evil.txt", b"pwned"),
    (f"{INNER_DIR}/link", b"", {"type": tarfile.SYMTYPE, "linkname": "../../evil.txt"}),
])
def test_unsafe_members_are_refused(monkeypatch, tmp_path, evil):
    install(monkeypatch, tmp_path, make_inner(extra=[evil]))
    with pytest.raises(DataError, match="unsafe"):
        vader.read_vader_domain("movies")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "cache" / "evil.txt").exists()
    assert not Path("/tmp/harness-evil-abs.txt").exists()
    assert not any((tmp_path / "cache").rglob(".complete.json"))
    assert not any(p.name.endswith("evil.txt") for p in tmp_path.rglob("*"))


def test_wanted_member_as_link_is_refused(monkeypatch, tmp_path):
    files = {k: v for k, v in SYNTH.items() if k != "tweets"}
    link = (f"{INNER_DIR}/tweets_GroundTruth.txt", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})
    install(monkeypatch, tmp_path, make_inner(extra=[link], files=files))
    with pytest.raises(DataError, match="unsafe"):
        vader.read_vader_domain("tweets")


def test_missing_member(monkeypatch, tmp_path):
    install(monkeypatch, tmp_path, make_inner(files={"tweets": SYNTH["tweets"]}))
    with pytest.raises(DataError, match="lacks expected files"):
        vader.read_vader_domain("tweets")


def test_archive_env_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_VADER_ARCHIVE", str(tmp_path / "absent.tar.gz"))
    with pytest.raises(DataError, match="HARNESS_VADER_ARCHIVE names no file"):
        vader.read_vader_domain("movies")


def test_pip_failure_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_VADER_ARCHIVE", raising=False)
    calls = []

    real_popen = subprocess.Popen

    def fake_popen(cmd, **kw):  # pip's output comes line by line through a pipe
        calls.append(cmd)
        return real_popen(["sh", "-c", "echo 'ERROR: network is unreachable'; exit 1"], **kw)

    monkeypatch.setattr(vader.subprocess, "Popen", fake_popen)
    with pytest.raises(DataError) as e:
        vader.read_vader_domain("movies")
    assert "HARNESS_VADER_ARCHIVE" in str(e.value) and "network is unreachable" in str(e.value)
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and ":all:" in cmd
    assert "vaderSentiment==3.3.2" in cmd


def test_malformed_line(monkeypatch, tmp_path):
    files = dict(SYNTH, tweets=[("1", "high", "not a number")])
    install(monkeypatch, tmp_path, make_inner(files=files))
    with pytest.raises(DataError, match="malformed VADER ground-truth line"):
        vader.read_vader_domain("tweets")


@pytest.mark.parametrize("domain", ["amazon", "nyt"])
def test_documents_never_straddle_splits(synthetic, domain):
    suite = vader_suite(domain, band=0.0, splits=[{"name": "validation", "role": "validation", "fraction": 0.5},
                                                   {"name": "test", "role": "test", "fraction": 0.5}])
    out = load_splits(suite)
    docs_v = set(out["validation"].frame["source_id"])
    docs_t = set(out["test"].frame["source_id"])
    assert docs_v and docs_t and not docs_v & docs_t
    for split in out.values():  # every sentence of a kept document is in its split
        counts = split.frame["source_id"].value_counts()
        assert (counts == 6 if domain == "amazon" else counts == 8).all()


REAL = Path("/tmp/vd/vaderSentiment-3.3.2.tar.gz")


@pytest.mark.slow
def test_real_archive_row_counts(monkeypatch, tmp_path):
    if not os.environ.get("HARNESS_VADER_ARCHIVE") and REAL.is_file():
        monkeypatch.setenv("HARNESS_VADER_ARCHIVE", str(REAL))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    try:
        frames = {d: vader.read_vader_domain(d) for d in vader.DOMAINS}
    except DataError as e:
        if os.environ.get("HARNESS_VADER_ARCHIVE") or "pip download" not in str(e):
            raise
        pytest.skip(f"VADER archive unavailable: {e}")
    assert {d: len(f) for d, f in frames.items()} == {"movies": 10605, "tweets": 4200, "amazon": 3708,
                                                       "nyt": 5190}
    kept = {d: int((f["rating"].abs() >= 0.5).sum()) for d, f in frames.items()}
    assert kept == {"movies": 10072, "tweets": 3432, "amazon": 2985, "nyt": 2970}
    assert {d: f["source_id"].nunique() for d, f in frames.items()} == {"movies": 10605, "tweets": 4200,
                                                                        "amazon": 300, "nyt": 498}
    assert not any("&amp;" in t for t in frames["tweets"]["text"])
    suites = Path(__file__).resolve().parents[2] / "suites"
    from harness.spec.load import load_suite

    sizes = {}
    for name in ("vader-movies", "vader-tweets", "vader-amazon", "vader-nyt", "vader-movies-typos"):
        path = suites / f"{name}.yaml"
        for split, data in load_splits(load_suite(path), suite_path=path).items():
            sizes[f"{name}/{split}"] = (len(data), data.n_dropped)
    assert sum(sizes[f"vader-movies/{s}"][0] for s in ("train", "validation", "test")) == 10072
    assert sizes["vader-nyt/validation"][0] + sizes["vader-nyt/test"][0] == 2970
    assert sizes["vader-movies-typos/test"] == sizes["vader-movies/test"]


def test_a_cold_fetch_reports_each_step_and_pips_lines(synthetic, monkeypatch, caplog):
    """The cold demo sat silent for 15.8 s while VADER was fetched: a cold fetch now reports pip's lines as they
    come (shown on the bar) and one step each for fetching, the sha256 checks and the extraction (INFO lines off a
    terminal); a warm cache reports nothing."""
    import logging
    import shutil

    sdist = Path(os.environ.pop("HARNESS_VADER_ARCHIVE"))
    monkeypatch.delenv("HARNESS_VADER_ARCHIVE", raising=False)
    real_popen = subprocess.Popen
    script = ("echo 'Collecting vaderSentiment==3.3.2'; echo '  Downloading vaderSentiment-3.3.2.tar.gz (2.5 MB)'; "
              "cp {src} {dest}/; echo 'Saved {dest}/vaderSentiment-3.3.2.tar.gz'")

    def fake_pip(cmd, **kw):
        assert "--progress-bar" in cmd
        dest = cmd[cmd.index("-d") + 1]
        return real_popen(["sh", "-c", script.format(src=sdist, dest=dest)], **kw)

    monkeypatch.setattr(vader.subprocess, "Popen", fake_pip)
    seen = []
    described = []
    real_pip_download = vader._pip_download
    monkeypatch.setattr(vader, "_pip_download",
                        lambda dest, on_line=None: real_pip_download(dest, lambda l: (seen.append(l), on_line(l))))
    monkeypatch.setattr(vader.StepProgress, "describe", lambda self, note: described.append(note))
    with caplog.at_level(logging.INFO, logger="harness.data.vader"):
        vader.vader_files(progress=True)
    assert seen[1] == "Downloading vaderSentiment-3.3.2.tar.gz (2.5 MB)"
    assert "pip: Downloading vaderSentiment-3.3.2.tar.gz (2.5 MB)" in described
    steps = [r.getMessage() for r in caplog.records if "VADER data step" in r.getMessage()]
    assert [m.split(":")[0] for m in steps] == [f"VADER data step {i}/3" for i in (1, 2, 3)]
    assert "sha256" in steps[1] and "extracted to" in steps[2]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="harness.data.vader"):
        vader.vader_files(progress=True)
    assert not [r for r in caplog.records if "VADER data step" in r.getMessage()]
    shutil.rmtree(Path(os.environ["HARNESS_CACHE"]))
