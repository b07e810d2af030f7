"""Stream the blend of two full checkpoints shard by shard, with bounded memory, into standard sharded safetensors.

Inputs are read through safetensors memory maps (``safe_open``, one tensor's map open per checkpoint), each
tensor in row chunks of at most 16M elements computed as ``torch.lerp(base.float(), adapted.float(), alpha)`` and
cast to the output dtype (the values of :func:`harness.models.blend.interpolate`); output shards are written as
they fill (``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``, or one
``model.safetensors``). Peak resident memory is about one output shard plus a few 64 MB chunks (measured: 3.14 GB
bf16 llama, 1.07 GB shards, see ``benchmarks/bench_blend_stream.py``).

What the plan (:func:`plan_blend`) handles, all from the configs' architectures built on the meta device:

* **Ties.** Tensor names resolve through each side's tied groups (a tied checkpoint stores ``lm_head.weight`` only
  as ``model.embed_tokens.weight``). When one side is tied and the other not, the missing head is materialised from
  the tied side's embedding, head and embedding are blended separately and the output says
  ``tie_word_embeddings=false``; if the output config would still tie tensors that now differ, the plan stops.
* **Resized vocabulary.** A fine-tune with more embedding/head rows (``vocab_size``) than the base: the shared rows
  are blended, the added rows come from the fine-tune, and the caller writes the fine-tune's tokenizer after
  :func:`check_tokenizer_extends` (same id for every base token).
* **Checks.** Names, shapes and dtypes go through :func:`harness.models.checks.validate_pair` on header metadata
  before anything is read; values (integer buffers, finiteness, saved aliases) through the same module as each
  tensor is read.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import BlendError, format_error
from harness.models.checks import (TensorMeta, alias_groups, check_keys, check_ties, check_values, head_keys,
                                   is_float, validate_pair)

__all__ = ["Checkpoint", "Plan", "open_checkpoint", "plan_blend", "stream_blend", "check_tokenizer_extends",
           "SAFETENSORS_DTYPES"]

log = logging.getLogger(__name__)
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
_ROWS_ELEMS = 1 << 24  # elements per chunk of one tensor (64 MB of fp32 per operand)


@dataclass
class Checkpoint:
    """A safetensors checkpoint folder read lazily: its config, which shard holds each tensor, header metadata,
    and at most one open memory map at a time."""

    path: Path
    config: Any
    where: dict[str, Path]
    meta: dict[str, TensorMeta]
    _open: tuple[str, Any] | None = field(default=None, repr=False)

    def handle(self, name: str) -> Any:
        """An open ``safe_open`` handle of the shard holding ``name``, kept while chunks of ``name`` are read and
        closed when another tensor is asked for: the map's pages leave the resident set after each tensor (opening
        a shard reads only its header)."""
        from safetensors import safe_open

        if self._open is None or self._open[0] != name:
            self.close()
            self._open = (name, safe_open(str(self.where[name]), framework="pt").__enter__())
        return self._open[1]

    def read(self, name: str, rows: slice | None = None) -> torch.Tensor:
        """Tensor ``name`` (or rows ``rows`` of it), copied out of the map."""
        h = self.handle(name)
        if rows is None or not self.meta[name].shape:
            return h.get_tensor(name)
        return h.get_slice(name)[rows]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].__exit__(None, None, None)
            self._open = None


def open_checkpoint(path: str | Path, trust_remote_code: bool = False) -> Checkpoint:
    """Open a full checkpoint for streaming: config, shard index and headers (no tensor is read).

    Raises
    ------
    ModelError
        For a missing folder, pickle-only or corrupt weights, or an unreadable config.
    """
    from safetensors import safe_open

    from harness.models.hfconfig import read_config
    from harness.models.load import check_safetensors, resolve_model_dir, weight_files

    p = resolve_model_dir(path)
    files = weight_files(p, allow_pickle=False)
    where, meta = {}, {}
    for f in files:
        check_safetensors(f)
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                sl = h.get_slice(k)
                where[k] = f
                meta[k] = TensorMeta(tuple(sl.get_shape()), SAFETENSORS_DTYPES[sl.get_dtype()])
    config = read_config(p, trust_remote_code)
    return Checkpoint(path=p, config=config, where=where, meta=meta)


@dataclass
class _Entry:
    """One output tensor: its base and adapted source names, how it is made, and the vocabulary axis (resized)."""

    name: str
    b: str
    a: str
    mode: str  # "lerp", "adapted" (a head taken from the adapted model), "vocab" (shared rows lerped)
    axis: int = 0
    shared: int = 0


@dataclass
class Plan:
    """What the output holds: entries in writing order, its config, and notes for the user."""

    entries: list[_Entry]
    config: Any
    notes: list[str]
    resized: bool
    base_groups: list[list[str]]
    adapted_groups: list[list[str]]


def _vocab(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)


def _tied(model: torch.nn.Module) -> bool:
    try:
        out = model.get_output_embeddings()
        return out is not None and out.weight is model.get_input_embeddings().weight
    except (AttributeError, NotImplementedError):
        return False


def _resolver(ck: Checkpoint, groups: list[list[str]], which: str):
    by_name = {n: g for g in groups for n in g}

    def src(name: str) -> str:
        for cand in [name] + [n for n in by_name.get(name, []) if n != name]:
            if cand in ck.where:
                return cand
        raise BlendError(format_error(f"the {which} checkpoint lacks a tensor of its architecture", where=name,
                                      expected=f"{name!r} (or a tensor tied to it) in {ck.path}",
                                      fix="pass a complete checkpoint written by save_pretrained"))
    return src


def _meta_of(ck: Checkpoint, name: str, out_dtype: torch.dtype) -> TensorMeta:
    m = ck.meta[name]
    return TensorMeta(m.shape, out_dtype) if is_float(m) else m


def _vocab_axis(mb: TensorMeta, ma: TensorMeta, nb: int, na: int) -> int | None:
    if len(mb.shape) != len(ma.shape):
        return None
    diff = [i for i, (x, y) in enumerate(zip(mb.shape, ma.shape)) if x != y]
    return diff[0] if len(diff) == 1 and mb.shape[diff[0]] == nb and ma.shape[diff[0]] == na else None


def plan_blend(base: Checkpoint, adapted: Checkpoint, *, head: str = "shared", out_dtype: torch.dtype,
               trust_remote_code: bool = False) -> Plan:
    """Decide every output tensor and the output config (see the module docstring); reads headers only.

    Raises
    ------
    BlendError
        Different architectures, key sets, shapes or dtypes (other than a resized vocabulary), a checkpoint
        lacking a tensor, or an output config that would re-tie tensors with different values on load.
    """
    from harness.models.arch import meta_model

    mb, ma = meta_model(base.config, trust_remote_code), meta_model(adapted.config, trust_remote_code)
    gb, ga = alias_groups(mb), alias_groups(ma)
    names_b, names_a = list(mb.state_dict().keys()), list(ma.state_dict().keys())
    check_keys(names_b, names_a)
    src_b, src_a = _resolver(base, gb, "base"), _resolver(adapted, ga, "adapted")
    out_cfg, notes = copy.deepcopy(base.config), []
    nb, na = _vocab(base.config), _vocab(adapted.config)
    resized = nb is not None and na is not None and nb != na
    if resized:
        if na < nb:
            raise BlendError(format_error("the fine-tune has fewer vocabulary rows than the base", where="vocab_size",
                                          expected=f">= {nb}", got=na, fix="blend checkpoints of one vocabulary"))
        out_cfg.vocab_size = na
        notes.append(f"vocabulary resized: base {nb} rows, fine-tune {na}; rows 0..{nb - 1} are blended, rows "
                     f"{nb}..{na - 1} come from the fine-tune, and the output uses the fine-tune's tokenizer")
    if _tied(mb) != _tied(ma):
        out_cfg.tie_word_embeddings = False
        tied_side = "base" if _tied(mb) else "fine-tune"
        notes.append(f"the {tied_side} ties its output head to the input embedding and the other does not: the "
                     "missing head was materialised from the tied side's embedding, head and embedding were blended "
                     "separately, and the output is written with tie_word_embeddings=false")
    mo = meta_model(out_cfg, trust_remote_code)
    heads = head_keys(names_b, getattr(mb, "base_model_prefix", None)) if head == "adapted" else set()
    entries = _entries(mo, src_b, src_a, heads, base)
    metas_b, metas_a, skip = {}, {}, set(heads)
    for e in entries:
        metas_b[e.name], metas_a[e.name] = _meta_of(base, e.b, out_dtype), _meta_of(adapted, e.a, out_dtype)
        axis = _vocab_axis(metas_b[e.name], metas_a[e.name], nb, na) if resized and e.mode == "lerp" else None
        if axis is not None:
            e.mode, e.axis, e.shared = "vocab", axis, nb
            skip.add(e.name)
    validate_pair(metas_b, metas_a, skip=skip, values=False)
    entries.sort(key=lambda e: (str(base.where[e.b]), e.name))  # one pass over each base shard
    return Plan(entries=entries, config=out_cfg, notes=notes, resized=resized, base_groups=gb, adapted_groups=ga)


def _entries(mo: torch.nn.Module, src_b, src_a, heads: set[str], base: Checkpoint) -> list[_Entry]:
    """One entry per storage of the output model; tied names must have the same sources."""
    groups = {n: g for g in alias_groups(mo) for n in g}
    done, out = set(), []
    for name in mo.state_dict().keys():
        if name in done:
            continue
        members = groups.get(name, [name])
        done.update(members)
        sources = {(src_b(n), src_a(n)) for n in members}
        if len(sources) > 1:
            raise BlendError(format_error(
                "the output config ties tensors that would hold different blended values, so loading it would "
                "silently drop one of them", where=", ".join(members), got=f"sources {sorted(sources)}",
                fix="this architecture ties these tensors whatever tie_word_embeddings says; blend checkpoints with "
                    "the same weight tying"))
        rep = next((n for n in members if n in base.where), members[0])
        b, a = sources.pop()
        out.append(_Entry(rep, b, a, "adapted" if rep in heads else "lerp"))
    return out


def _check_saved_aliases(ck: Checkpoint, groups: list[list[str]], which: str) -> None:
    """Aliases a checkpoint stores more than once must agree (else the model would silently use one of them)."""
    for g in groups:
        saved = [n for n in g if n in ck.where]
        if len(saved) > 1:
            sd = {n: ck.read(n) for n in saved}
            check_ties([saved], sd if which == "base" else {}, sd if which == "adapted" else {})


def _blend_tensor(e: _Entry, base: Checkpoint, adapted: Checkpoint, alpha: float, out_dtype: torch.dtype
                  ) -> torch.Tensor:
    """The output tensor of one entry, computed in row chunks (fp32 arithmetic, cast to the output dtype)."""
    ma = adapted.meta[e.a]
    out = torch.empty(ma.shape, dtype=out_dtype if is_float(ma) else ma.dtype)
    if not out.dim() or (e.mode == "vocab" and e.axis != 0):  # scalars; vocabulary along another axis (small)
        a = adapted.read(e.a)
        b = None if e.mode == "adapted" else base.read(e.b)
        check_values(e.name, b, a)
        out.copy_(a)
        if b is not None:
            k = e.shared if e.mode == "vocab" else (out.shape[e.axis] if out.dim() else 0)
            dst, src = (out, a) if not out.dim() else (out.narrow(e.axis, 0, k), a.narrow(e.axis, 0, k))
            dst.copy_(torch.lerp(b.float(), src.float(), alpha) if is_float(b) else b)
        return out
    n = out.shape[0]
    shared = {"lerp": n, "adapted": 0, "vocab": e.shared}[e.mode]
    step = max(1, _ROWS_ELEMS // max(1, out[0].numel()))
    for start, stop, blend in ((0, shared, True), (shared, n, False)):
        for i in range(start, stop, step):
            rows = slice(i, min(i + step, stop))
            a = adapted.read(e.a, rows)
            b = base.read(e.b, rows) if blend else None
            value = a if b is None else torch.lerp(b.float(), a.float(), alpha) if is_float(b) else b
            check_values(e.name, b, a, result=value if is_float(a) else None)
            out[rows].copy_(value)
    return out


class _ShardWriter:
    """Collects output tensors and writes a shard whenever ``max_bytes`` would be exceeded."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        n = t.numel() * t.element_size()
        if self.pending and self.size + n > self.max_bytes:
            self.flush()
        self.pending[name] = t.contiguous()
        self.size += n
        self.total += n

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        f = self.folder / f".shard-{len(self.shards):05d}.safetensors"
        save_file(self.pending, str(f), metadata={"format": "pt"})
        self.shards.append((f, list(self.pending)))
        self.pending, self.size = {}, 0

    def finish(self) -> list[Path]:
        """Rename the shards to the standard names and write the index (none for a single shard)."""
        self.flush()
        if len(self.shards) == 1:
            dst = self.folder / "model.safetensors"
            self.shards[0][0].rename(dst)
            return [dst]
        n, weight_map, files = len(self.shards), {}, []
        for i, (f, names) in enumerate(self.shards, 1):
            dst = self.folder / f"model-{i:05d}-of-{n:05d}.safetensors"
            f.rename(dst)
            files.append(dst)
            weight_map.update(dict.fromkeys(names, dst.name))
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return files


def stream_blend(base: Checkpoint, adapted: Checkpoint, plan: Plan, alpha: float, folder: Path, *,
                 out_dtype: torch.dtype, max_shard_bytes: int | None = None) -> list[Path]:
    """Write the blend's weights into ``folder`` (the config and tokenizer are the caller's), shard by shard.

    ``max_shard_bytes`` defaults to the largest base shard (at least 64 MB). Returns the written weight files.

    Raises
    ------
    BlendError
        Non-finite weights, differing integer buffers, or saved aliases with other values (nothing is renamed
        into place by the caller then).
    """
    if max_shard_bytes is None:
        max_shard_bytes = max([64 << 20] + [f.stat().st_size for f in set(base.where.values())])
    _check_saved_aliases(base, plan.base_groups, "base")
    _check_saved_aliases(adapted, plan.adapted_groups, "adapted")
    writer = _ShardWriter(folder, max_shard_bytes)
    try:
        for e in plan.entries:
            writer.add(e.name, _blend_tensor(e, base, adapted, alpha, out_dtype))
        return writer.finish()
    finally:
        base.close()
        adapted.close()


def check_tokenizer_extends(base_tok: Any, adapted_tok: Any, where: str) -> None:
    """The fine-tune's tokenizer keeps every base token at the same id (it may add tokens after them).

    Raises
    ------
    BlendError
        Naming a base token whose id differs or that is missing.
    """
    vb, va = base_tok.get_vocab(), adapted_tok.get_vocab()
    for tok, i in sorted(vb.items(), key=lambda x: x[1]):
        if va.get(tok) != i:
            raise BlendError(format_error(
                "the fine-tune's tokenizer does not extend the base's, so the blended embedding rows would "
                "belong to different tokens", where=where, expected=f"token {tok!r} at id {i}",
                got=f"id {va.get(tok)}" if tok in va else "token missing",
                fix="blend a fine-tune whose tokenizer only appends tokens to the base's vocabulary"))
