"""Stage 4a: load models, tokenizers and adapters safely, fingerprint their weights, and check their labels.

Security defaults: weights load from safetensors only (a pickle-only checkpoint is refused unless
``allow_pickle=True``, which then loads with ``torch.load(weights_only=True)``); ``trust_remote_code`` is off
unless asked; safetensors headers are checked before any tensor is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from harness.errors import ModelError, format_error
from harness.io import atomic_write_json, cache_root, sha256_file
from harness.models.blend import head_keys
from harness.models.paths import looks_like_hub_id, missing_model_error
from harness.models.sanity import check_cast_finite, check_model_files, ensure_pad_token

__all__ = ["DTYPES", "LoadedModel", "resolve_model_dir", "is_adapter_dir", "weight_files", "check_safetensors",
           "fingerprint_files", "model_fingerprint", "load_tokenizer", "checked_checkpoint", "load_model",
           "align_labels", "pick_device", "GENERIC_LABEL"]

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GENERIC_LABEL = "LABEL_"
_MAX_HEADER = 100 * 1024 * 1024
_VOCAB_FILES = frozenset({"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"})
_fp_lock = threading.Lock()


@dataclass
class LoadedModel:
    """A model ready to score: ``model`` in eval mode on ``device``, its tokenizer, and its identity.

    ``fingerprint`` is the sha256 of the weight files (or of hub id + revision + files); ``id2label`` is the
    model's own label names by logit column (:func:`align_labels` maps suite classes to these columns).
    """

    model: torch.nn.Module
    tokenizer: Any
    source: str
    path: Path
    fingerprint: str
    id2label: dict[int, str]
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else CUDA when available, else CPU.

    Raises
    ------
    ModelError
        If the requested device is not available.
    """
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(format_error("unknown device", where="--device", expected="cpu, cuda, cuda:N or mps",
                                      got=device, fix="use --device cpu or leave --device unset")) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(format_error("CUDA device requested but none is available", where="--device",
                                      got=device, fix="use --device cpu or leave --device unset"))
    return dev


def resolve_model_dir(name: str | Path, revision: str | None = None) -> Path:
    """A local folder for a model: ``name`` itself if it is a folder, else a hub snapshot (cache or network).

    Raises
    ------
    ModelError
        If ``name`` is neither an existing folder nor a reachable hub id (the message names HF_HUB_OFFLINE and
        the cache when offline).
    """
    p = Path(name).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise ModelError(format_error("model path is a file, not a folder", where=str(p),
                                      expected="a folder holding config.json and weights",
                                      fix="pass the folder that contains the file"))
    text = str(name)
    if not looks_like_hub_id(text):
        raise missing_model_error(text)
    try:
        from huggingface_hub import snapshot_download  # only for hub ids

        return Path(snapshot_download(text, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, missing repo, auth
        raise ModelError(format_error(f"cannot fetch model {text!r} from the hub", where=text, got=str(e)[:300],
                                      fix="pass a local folder, or go online; offline runs (HF_HUB_OFFLINE=1) need "
                                          "the model in the Hugging Face cache (HF_HUB_CACHE)")) from e


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a PEFT adapter folder (it holds ``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def check_safetensors(path: Path) -> None:
    """Check a safetensors file's header before loading: size, JSON, and every tensor's offsets in range.

    Raises
    ------
    ModelError
        For a truncated file, a corrupt or oversized header, or offsets past the end of the file.
    """
    size = path.stat().st_size

    def bad(why: str) -> ModelError:
        return ModelError(format_error(f"corrupt safetensors file: {why}", where=str(path),
                                       fix="re-download or re-save the checkpoint"))

    if size < 8:
        raise bad("file shorter than its 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(_MAX_HEADER, size - 8):
            raise bad(f"header length {n} exceeds the file ({size} bytes) or the {_MAX_HEADER}-byte limit")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise bad("header is not valid JSON") from e
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_size = size - 8 - n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = meta["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise bad(f"tensor {name!r} has no valid data_offsets") from e
        if not (0 <= start <= end <= data_size):
            raise bad(f"tensor {name!r} ends at byte {end} but the data section has {data_size} bytes (truncated?)")


def weight_files(path: Path, allow_pickle: bool = False) -> list[Path]:
    """The weight files a checkpoint folder really uses: the shards named by the index file when there is one,
    else the single weights file; safetensors preferred.

    Raises
    ------
    ModelError
        If there are no weights, only pickle weights and ``allow_pickle`` is False, or the index names a missing
        shard.
    """
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("adapter_model.safetensors.index.json", "adapter_model.safetensors")):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise ModelError(format_error("sharded checkpoint index is invalid", where=str(index),
                                              fix="re-save the checkpoint")) from e
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise ModelError(format_error("sharded checkpoint is missing shards", where=str(path),
                                              expected=f"{len(shards)} shards", got=f"missing {missing[:3]}",
                                              fix="copy the whole checkpoint folder"))
            return [path / s for s in shards]
        if (path / single).is_file():
            return [path / single]
    pickles = sorted(path.glob("pytorch_model*.bin")) + sorted(path.glob("adapter_model.bin"))
    if pickles:
        if not allow_pickle:
            raise ModelError(format_error("checkpoint has only pickle weights (pytorch_model.bin), which can run "
                                          "code when loaded", where=str(path),
                                          expected="model.safetensors",
                                          fix="convert it to safetensors, or pass --allow-pickle if you trust it "
                                              "(it then loads with torch.load(weights_only=True))"))
        return pickles
    raise ModelError(format_error("no weights found in model folder", where=str(path),
                                  expected="model.safetensors (or a sharded index)",
                                  got=sorted(p.name for p in path.iterdir())[:10],
                                  fix="pass the folder written by save_pretrained"))


def fingerprint_files(files: list[Path]) -> str:
    """sha256 over the contents of ``files`` (names and bytes), memoised in ``$HARNESS_CACHE/fingerprints.json``
    by (absolute path, size, mtime) so unchanged files are not rehashed."""
    memo_path = cache_root() / "fingerprints.json"
    with _fp_lock:
        try:
            memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
        except (ValueError, OSError):
            memo = {}
        if not isinstance(memo, dict) or not all(isinstance(v, str) for v in memo.values()):
            memo = {}  # a damaged memo is only a cache: rebuild it
        h = hashlib.sha256()
        changed = False
        for f in files:
            st = f.stat()
            k = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
            digest = memo.get(k)
            if digest is None:
                digest = memo[k] = sha256_file(f)
                changed = True
            h.update(f.name.encode() + b"\0" + digest.encode())
        if changed:
            try:
                atomic_write_json(memo_path, memo)
            except OSError:
                log.warning("could not update the fingerprint memo %s", memo_path)
    return h.hexdigest()


def model_fingerprint(path: Path, allow_pickle: bool = False) -> str:
    """Fingerprint of a checkpoint folder: its weight files, its config.json (or adapter_config.json) and its
    generation_config.json (greedy generation applies its logits processing, e.g. ``repetition_penalty``, as
    ``generate`` does: two folders of the same weights can generate different text). The tokenizer files are
    not in it: the tokenized split's own key covers them."""
    files = weight_files(path, allow_pickle=allow_pickle)
    files += [p for p in (path / "config.json", path / "adapter_config.json", path / "generation_config.json")
              if p.is_file()]
    return fingerprint_files(files)


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(path)`` with a harness error on failure."""
    from transformers import AutoTokenizer  # heavy: only when a model is loaded

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(format_error("cannot load the tokenizer", where=str(path), got=str(e)[:300],
                                      fix="make sure the model folder holds tokenizer files (tokenizer.json or "
                                          "vocab files; copy them from the base model if the checkpoint was saved "
                                          "without its tokenizer)")) from e
    specials = set(tok.all_special_tokens)
    if len(tok) <= len(specials):  # transformers builds an empty tokenizer when the vocabulary files are absent
        vocab_files = sorted(p.name for p in Path(path).glob("*") if p.name in _VOCAB_FILES or p.suffix == ".model")
        if not vocab_files:
            raise ModelError(format_error("the folder holds no tokenizer vocabulary, so the tokenizer would map "
                                          "every word to the unknown token", where=str(path),
                                          expected=f"one of {', '.join(sorted(_VOCAB_FILES))} or *.model",
                                          got=f"a tokenizer of {len(tok)} special tokens {sorted(specials)}",
                                          fix="copy the tokenizer files saved with the model into the folder"))
        raise ModelError(format_error("the tokenizer loads with no vocabulary, so every word would become the "
                                      "unknown token", where=str(path),
                                      got=f"{len(tok)} special tokens although the folder holds "
                                          f"{', '.join(vocab_files)}",
                                      fix="re-save the tokenizer with save_pretrained (a tokenizer.json written by "
                                          "an older or mismatched library version may not load)"))
    return tok


def _check_vocab_fits(model: torch.nn.Module, tok: Any, path: Path) -> None:
    """Token ids must index the model's embedding rows (else an IndexError deep inside the forward pass)."""
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return
    if len(tok) > rows:
        raise ModelError(format_error("the tokenizer has more tokens than the model has embedding rows",
                                      where=str(path), expected=f"at most {rows} tokens (the embedding rows)",
                                      got=f"{len(tok)} tokens",
                                      fix="use the tokenizer saved with this model (its vocabulary was resized)"))


def _load_hf(path: Path, dtype: torch.dtype, allow_pickle: bool, trust_remote_code: bool,
             use_safetensors: bool | None = None) -> tuple[torch.nn.Module, list[str]]:
    from transformers import AutoModelForSequenceClassification  # heavy: as above

    from harness.models.hfconfig import read_config

    config = read_config(path, trust_remote_code)
    if use_safetensors is None:
        use_safetensors = not allow_pickle
    auto_map = getattr(config, "auto_map", None) or {}
    if not trust_remote_code and "AutoModelForSequenceClassification" in auto_map:
        log.warning("%s ships its own model code (%s), which does not run without --trust-remote-code; it is loaded "
                    "as the stock %r architecture instead", path, auto_map["AutoModelForSequenceClassification"],
                    config.model_type)
    from transformers.utils import logging as hf_logging  # heavy: as above

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # harness reports missing/unexpected weights itself (_check_loading_info)
    with _weights_view(path) as view:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(view), config=config, dtype=dtype, use_safetensors=use_safetensors,
                trust_remote_code=trust_remote_code, output_loading_info=True)
        except Exception as e:
            raise ModelError(format_error("cannot load the model weights", where=str(path), got=str(e)[:400],
                                          fix="check that the folder is a complete sequence-classification "
                                              "checkpoint (config.json + weights)")) from e
        finally:
            hf_logging.set_verbosity(verbosity)
    return model, _check_loading_info(model, info, path)  # (model, head tensors left random)


@contextmanager
def _weights_view(path: Path) -> Iterator[Path]:
    """``path`` itself, or, when a sharded index sits beside a stray single weights file, a temporary view of the
    folder without the stray file: the index decides which weights a checkpoint has (and what is fingerprinted)."""
    stray = [path / single for index, single in (("model.safetensors.index.json", "model.safetensors"),
                                                  ("pytorch_model.bin.index.json", "pytorch_model.bin"))
             if (path / index).is_file() and (path / single).is_file()]
    if not stray:
        yield path
        return
    log.warning("%s holds both a sharded index and %s; following the index and ignoring the stray file", path,
                ", ".join(p.name for p in stray))
    with tempfile.TemporaryDirectory(prefix="harness-view-") as tmp:
        for f in path.iterdir():
            if f not in stray:
                (Path(tmp) / f.name).symlink_to(f.resolve())
        yield Path(tmp)


_WRAPPER_PREFIXES = ("module.", "base_model.model.", "_orig_mod.", "model.")


def _check_loading_info(model: torch.nn.Module, info: dict[str, Any], path: Path) -> list[str]:
    """Refuse a checkpoint whose tensors did not land on the model: transformers only logs missing keys and
    initialises those weights at random, so a wrapped (``module.``, ``base_model.model.``) or foreign state dict
    would otherwise be scored as a random model. A missing classification head alone (a bare encoder used as
    base with ``--head adapted``) and extra tensors (e.g. pretraining heads) are only warned about; the missing
    head tensors are returned (they are random: :mod:`harness.models.sanity` refuses to evaluate them)."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    want = set(missing)
    for prefix in _WRAPPER_PREFIXES:
        mapped = [k for k in unexpected if k.startswith(prefix) and k[len(prefix):] in want]
        if mapped:
            raise ModelError(format_error(
                f"checkpoint tensor names carry a wrapper prefix {prefix!r}, so they match no parameter of the "
                "model and would be left randomly initialised", where=str(path),
                expected=f"names such as {missing[0]!r}", got=f"{len(mapped)} names such as {mapped[0]!r}",
                fix=f"save the unwrapped model (e.g. model.module or peft's merge_and_unload()) or strip the "
                    f"{prefix!r} prefix from the state dict keys; pass a PEFT adapter folder as --adapted"))
    heads = head_keys(model.state_dict().keys(), getattr(model, "base_model_prefix", None))
    body = [k for k in missing if k not in heads]
    if body or mismatched:
        raise ModelError(format_error(
            "checkpoint does not hold the model's weights (transformers would initialise them at random)",
            where=str(path), expected="every tensor of the architecture in config.json",
            got=f"{len(body)} missing (e.g. {body[:3]}), {len(mismatched)} of another shape (e.g. {mismatched[:2]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            fix="check that config.json and the weights belong to the same model"))
    if missing:
        log.warning("%s has no classification head %s; it is initialised at random, so its predictions mean "
                    "nothing until it is trained (fine as the base of "
                    "`--head adapted`)", path, missing[:4])
    if unexpected:
        log.warning("%s holds %d tensors the model does not use (ignored), e.g. %s", path, len(unexpected),
                    unexpected[:3])
    return missing


def checked_checkpoint(name: str | Path, revision: str | None, allow_pickle: bool) -> tuple[Path, list[Path]]:
    """The folder of a full checkpoint and its weight files, checked before anything is loaded: not an adapter
    folder, ``config.json`` present, safetensors (pickle only with ``allow_pickle``) with sane headers.

    Raises
    ------
    ModelError
        For an adapter folder, a missing file, pickle-only weights without ``allow_pickle``, a corrupt header.
    """
    path = resolve_model_dir(name, revision)
    if is_adapter_dir(path):
        raise ModelError(format_error("this folder is a PEFT adapter, not a full model", where=str(path),
                                      fix="an adapter is scored with the model it adapts: `harness eval --model "
                                          "ADAPTER --base BASE`, or `harness sweep --base BASE --adapted ADAPTER` "
                                          "(alpha 1 is the adapted model); `harness blend --base BASE --adapted "
                                          "ADAPTER --alpha 1 --out DIR` writes it as a full model"))
    check_model_files(path)  # names a missing config.json / adapter_config.json (issue 17)
    files = weight_files(path, allow_pickle=allow_pickle)
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    return path, files


def load_model(name: str | Path, *, dtype: str = "fp32", device: str | None = None, allow_pickle: bool = False,
               trust_remote_code: bool = False, revision: str | None = None,
               tokenizer_path: str | Path | None = None) -> LoadedModel:
    """Load a sequence-classification checkpoint for scoring (eval mode, on the chosen device).

    Parameters
    ----------
    name : str or Path
        A local folder written by ``save_pretrained`` or a hub id (pinned by ``revision``).
    dtype : {"fp32", "bf16", "fp16"}, default="fp32"
        Storage and compute dtype of the weights.
    device : str, default=None
        Torch device; default CUDA when available, else CPU.
    allow_pickle : bool, default=False
        Allow pickle weights (loaded with ``weights_only=True``).
    trust_remote_code : bool, default=False
        Allow code shipped with the checkpoint to run.
    revision : str, default=None
        Hub revision for hub ids.
    tokenizer_path : str or Path, default=None
        Take the tokenizer from here instead of the model folder.

    Raises
    ------
    ModelError
        Missing folder, no or unsafe weights, corrupt safetensors, unknown architecture, bad dtype/device.
    """
    from transformers.utils import logging as hf_logging  # heavy: as above

    from harness.models.pooling import register  # transformers: as above

    register()
    hf_logging.disable_progress_bar()
    if dtype not in DTYPES:
        raise ModelError(format_error("unknown dtype", where="--dtype", expected=", ".join(DTYPES), got=dtype))
    if dtype != "fp32":
        log.warning("--dtype %s: reduced precision changes some predictions compared with fp32 (MiniLM on VADER "
                    "tweets: 5 of 1,694 flipped in bf16); runs and stored results are keyed by dtype, and "
                    "benchmarks/bench_runner.py --bf16 measures the agreement for your model", dtype)
    path, files = checked_checkpoint(name, revision, allow_pickle)
    dev = pick_device(device)
    # the files checked and fingerprinted above are the ones loaded: safetensors whenever the folder has them
    # (--allow-pickle only permits a pickle-only checkpoint; it never makes a pickle win over safetensors)
    use_st = any(f.suffix == ".safetensors" for f in files)
    model, random_weights = _load_hf(path, DTYPES[dtype], allow_pickle, trust_remote_code, use_safetensors=use_st)
    model = model.to(dev).eval()
    if dtype != "fp32":
        check_cast_finite(model, DTYPES[dtype], files, path)
    tok = load_tokenizer(Path(tokenizer_path) if tokenizer_path else path, trust_remote_code)
    _check_vocab_fits(model, tok, path)
    pad_note = ensure_pad_token(model, tok, path)
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return LoadedModel(model=model, tokenizer=tok, source=str(name), path=path,
                       fingerprint=model_fingerprint(path, allow_pickle), id2label=id2label, device=dev,
                       dtype=DTYPES[dtype], info={"n_parameters": sum(p.numel() for p in model.parameters()),
                                                  "random_weights": random_weights,
                                                  "notes": [pad_note] if pad_note else []})


def align_labels(id2label: dict[int, str], classes: list[str] | tuple[str, ...],
                 label_map: dict[str, str] | None = None, *, where: str = "model") -> np.ndarray:
    """Map each suite class to a logit column of the model.

    Generic names (``LABEL_0``, ``LABEL_1``, ...) map by position with a warning; real names must be the suite's
    classes in the same order (case-insensitive); a different order or set is an error, never a silent
    mislabelled run. ``label_map`` (model label -> class) maps explicitly and overrides both.

    Returns
    -------
    numpy.ndarray of int64, shape (n_classes,)
        ``columns[c]`` is the logit column for suite class ``c``.

    Raises
    ------
    ModelError
        If the number of labels differs, or real names do not match the classes (both orders are printed with
        the ``--label-map`` to use).
    """
    names = [id2label[i] for i in sorted(id2label)]
    classes = list(classes)
    if len(names) != len(classes):
        raise ModelError(format_error("the model's number of labels differs from the suite's classes", where=where,
                                      expected=f"{len(classes)} labels {classes}", got=f"{len(names)} labels {names}",
                                      fix="evaluate with a suite of the same classes, or use a model with a head "
                                          "of the right size"))
    if label_map:
        mapped = [label_map.get(n, n) for n in names]
        if sorted(mapped) != sorted(classes):
            raise ModelError(format_error("--label-map does not map the model's labels onto the classes",
                                          where=where, expected=classes, got=mapped))
        return np.array([mapped.index(c) for c in classes], dtype=np.int64)
    if all(n.startswith(GENERIC_LABEL) for n in names):
        log.warning("%s has generic labels %s; mapping them by position to the suite classes %s (pass --label-map "
                    "to map them otherwise)", where, names, classes)
        return np.arange(len(classes), dtype=np.int64)
    if names == classes:
        return np.arange(len(classes), dtype=np.int64)
    if [n.lower() for n in names] == [c.lower() for c in classes]:
        return np.arange(len(classes), dtype=np.int64)
    same_set = sorted(n.lower() for n in names) == sorted(c.lower() for c in classes)
    by_name = {n.lower(): n for n in names}
    if same_set:
        suggestion = ",".join(f"{by_name[c.lower()]}={c}" for c in classes)
        raise ModelError(format_error("the model's labels are the suite's classes in a different order",
                                      where=where, expected=f"classes in order {classes}",
                                      got=f"model labels in order {names}",
                                      fix=f"put the classes in the model's order in the suite, or pass "
                                          f"--label-map {suggestion} to map them by name"))
    suggestion = ",".join(f"{n}={c}" for n, c in zip(names, classes))
    raise ModelError(format_error("the model's labels are not the suite's classes", where=where,
                                  expected=f"classes in order {classes}", got=f"model labels in order {names}",
                                  fix=f"map them explicitly, e.g. --label-map {suggestion} (check the meaning!)"))
