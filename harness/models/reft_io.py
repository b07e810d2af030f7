"""Reading and writing ReFT adaptations: the harness format and folders saved by pyreft 0.1.0 (pyvene 0.1.7).

**Harness format** (a folder; :func:`save_reft` writes it, :func:`load_reft` reads it)::

    reft_config.json          {"format": "harness-reft", "format_version": 1, "kind": "loreft" | "direft",
                               "hidden_size": int, "num_layers": int, "rank": int,
                               "interventions": [{"layer": int, "component": "block_output" | "block_input",
                                                  "positions": "f<N>+l<M>" | "f<N>" | "l<M>", "rank": int}, ...],
                               "base_model": {"name": str, "fingerprint": str, "model_type": str},
                               "dtype": "float32", "training": {...}}
    reft_weights.safetensors  interventions.<i>.R (rank, hidden), interventions.<i>.W (rank, hidden),
                              interventions.<i>.b (rank,), fp32; i indexes "interventions" above

**pyreft layout** (``ReftModel.save`` = ``pyvene.IntervenableModel.save``): ``config.json`` (an
``IntervenableConfig``: ``representations`` is a list of ``RepresentationConfig`` tuples saved as lists
``[layer, component, unit, max_number_of_units, low_rank_dimension, intervention_type, intervention, ...]``,
``intervention_types`` the class names as ``"<class 'pyreft.interventions.LoreftIntervention'>"``, ``sorted_keys``)
and one pickled ``intkey_<key>.bin`` per intervention, ``<key>`` = ``layer_<l>_comp_<component>_unit_<unit>_nunit_<n>#<k>``
(``comp_<component with . as _>_unit_...`` for a module-path component such as ``model.layers[3].output``; ``#k``
counts repeats of one key). Tensors: LoReFT ``weight`` (W), ``bias`` (b), ``rotate_layer`` = R^T ``(hidden, rank)``;
DiReFT ``learned_source.weight``, ``learned_source.bias`` and ``rotate_layer.parametrizations.weight.original`` /
``.0.base`` (torch's orthogonal parametrization, evaluated here with torch to get R^T). pyreft does not save the
token positions (they belong to its dataset): pass ``positions`` (and ``share_weights``) as trained; with
``"f<N>+l<M>"`` and unshared weights, the first half of the interventions edits the first tokens and the second
half the last ones (pyreft's ``examples/loreft/train.py`` doubles the layer list). The activation ``act_fn`` is not
saved either; pyreft's default (linear) is assumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from harness.errors import ModelError, format_error
from harness.models.load import check_safetensors, fingerprint_files
from harness.models.reft import (COMPONENTS, KINDS, InterventionSpec, ReftAdapter, ReftIntervention,
                                 parse_positions)

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ORTH_TOL", "reft_format", "load_reft", "save_reft",
           "check_orthogonality", "reft_fingerprint", "adapted_fingerprint", "recorded_base"]

log = logging.getLogger(__name__)
CONFIG_NAME = "reft_config.json"
WEIGHTS_NAME = "reft_weights.safetensors"
FORMAT = "harness-reft"
ORTH_TOL = 1e-3
_PYREFT_TYPES = {"LoreftIntervention": "loreft", "DireftIntervention": "direft"}
_LAYER_COMPONENT = re.compile(r"^(?:.*\.)?(?:layers|layer|h)\[(\d+)\]\.(output|input)$")


def reft_format(path: str | Path) -> str | None:
    """``"harness"`` for a folder holding ``reft_config.json``, ``"pyreft"`` for a pyvene/pyreft save
    (``config.json`` with ``representations`` and ``intervention_types``), else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / CONFIG_NAME).is_file():
        return "harness"
    cfg = p / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (ValueError, OSError):
            return None
        if isinstance(data, dict) and "representations" in data and "intervention_types" in data:
            return "pyreft"
    return None


def recorded_base(path: str | Path) -> str | None:
    """The base model a harness-format folder records (``base_model.name``), else None (pyreft folders record
    none)."""
    p = Path(path).expanduser()
    if reft_format(p) != "harness":
        return None
    name = (_read_json(p / CONFIG_NAME).get("base_model") or {}).get("name")
    return str(name) if name else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ModelError(format_error("cannot read the ReFT config", where=str(path), got=str(e)[:200],
                                      fix="re-save the adaptation")) from e
    if not isinstance(data, dict):
        raise ModelError(format_error("the ReFT config is not a JSON object", where=str(path)))
    return data


def reft_fingerprint(path: str | Path) -> str:
    """sha256 of the adaptation's files (config and weights)."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin")))
    return fingerprint_files(files)


def check_orthogonality(adapter: ReftAdapter, tol: float = ORTH_TOL) -> float:
    """Max over interventions of ``max |R R^T - I|``; logs a warning naming it when above ``tol``.

    pyreft keeps R's rows orthonormal with torch's orthogonal parametrization; a violation means the file was
    edited, saved in low precision, or trained without the constraint (the edit is then not a projection).
    """
    worst, where = 0.0, None
    for spec, mod in zip(adapter.specs, adapter.interventions):
        R = mod.R.detach().double()
        dev = float((R @ R.T - torch.eye(R.shape[0], dtype=R.dtype)).abs().max())
        if dev > worst:
            worst, where = dev, spec.layer
    if worst > tol:
        log.warning("ReFT rotation R of %s is not orthonormal: max |R R^T - I| = %.3g at layer %s (tolerance %g); "
                    "the edit is applied as stored", adapter.info.get("source", "the adapter"), worst, where, tol)
    return worst


def _build(kind: str, specs: list[InterventionSpec], tensors: list[dict[str, torch.Tensor]],
           info: dict[str, Any], hidden: int, n_layers: int) -> ReftAdapter:
    mods = torch.nn.ModuleList()
    for spec, t in zip(specs, tensors):
        R, W, b = (t[k].detach().to(torch.float32) for k in ("R", "W", "b"))
        if R.dim() != 2 or R.shape[1] != hidden or W.shape != R.shape or b.shape != (R.shape[0],):
            raise ModelError(format_error("ReFT tensor shapes are inconsistent", where=f"{info.get('source')}, "
                                          f"layer {spec.layer}", expected=f"R and W (rank, {hidden}), b (rank,)",
                                          got=f"R {tuple(R.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)}"))
        mod = ReftIntervention(kind, hidden, R.shape[0])
        with torch.no_grad():
            mod.R.copy_(R)
            mod.W.copy_(W)
            mod.b.copy_(b)
        mods.append(mod)
    return ReftAdapter(kind=kind, specs=specs, interventions=mods, hidden_size=hidden, num_layers=n_layers,
                       info=info)


def save_reft(adapter: ReftAdapter, path: str | Path, *, base_name: str | None = None,
              base_fingerprint: str | None = None, base_model_type: str | None = None,
              training: dict | None = None) -> Path:
    """Write ``adapter`` in the harness format (module docstring) into folder ``path``; returns it. ``training``
    defaults to ``adapter.info["training"]`` (set by the trainer)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, mod in enumerate(adapter.interventions):
        for name in ("R", "W", "b"):
            tensors[f"interventions.{i}.{name}"] = getattr(mod, name).detach().to("cpu", torch.float32).contiguous()
    cfg = {"format": FORMAT, "format_version": 1, "kind": adapter.kind, "hidden_size": adapter.hidden_size,
           "num_layers": adapter.num_layers, "rank": adapter.rank,
           "interventions": [{"layer": s.layer, "component": s.component, "positions": s.positions,
                              "rank": m.rank} for s, m in zip(adapter.specs, adapter.interventions)],
           "base_model": {"name": base_name, "fingerprint": base_fingerprint, "model_type": base_model_type},
           "dtype": "float32", "training": training if training is not None else adapter.info.get("training", {})}
    save_file(tensors, str(p / WEIGHTS_NAME), metadata={"format": FORMAT})
    (p / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    return p


def _load_harness(p: Path) -> ReftAdapter:
    from safetensors.torch import load_file

    cfg = _read_json(p / CONFIG_NAME)
    where = str(p / CONFIG_NAME)
    if cfg.get("format") != FORMAT or cfg.get("format_version") != 1:
        raise ModelError(format_error("unsupported ReFT config format", where=where,
                                      expected=f"format {FORMAT!r}, format_version 1",
                                      got=f"{cfg.get('format')!r} v{cfg.get('format_version')!r}"))
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ModelError(format_error("unknown ReFT kind", where=f"{where}: kind", expected=KINDS, got=kind))
    try:
        hidden, n_layers = int(cfg["hidden_size"]), int(cfg["num_layers"])
        specs = []
        for i, e in enumerate(cfg["interventions"]):
            first, last = parse_positions(e["positions"])
            specs.append(InterventionSpec(int(e["layer"]), e.get("component", "block_output"), first, last))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(format_error("malformed ReFT config", where=where, got=repr(e)[:200],
                                      fix="re-save it with harness.models.reft_io.save_reft")) from e
    wfile = p / WEIGHTS_NAME
    if not wfile.is_file():
        raise ModelError(format_error("ReFT weights file missing", where=str(wfile), fix="re-save the adaptation"))
    check_safetensors(wfile)
    sd = load_file(str(wfile))
    tensors = []
    for i in range(len(specs)):
        try:
            tensors.append({k: sd[f"interventions.{i}.{k}"] for k in ("R", "W", "b")})
        except KeyError as e:
            raise ModelError(format_error("ReFT weights file lacks a tensor", where=str(wfile),
                                          expected=f"interventions.{i}.R/W/b", got=str(e))) from e
    info = {"source": str(p), "format": "harness", "base_model": cfg.get("base_model") or {},
            "training": cfg.get("training") or {}}
    return _build(kind, specs, tensors, info, hidden, n_layers)


def _pyvene_key(layer: Any, component: str, unit: str, nunit: Any, seen: dict[str, int]) -> str:
    """pyvene's ``IntervenableModel._get_representation_key``."""
    u = str(unit).replace(".", "_")
    base = f"comp_{component.replace('.', '_')}_unit_{u}_nunit_{nunit}" if "." in component \
        else f"layer_{layer}_comp_{component}_unit_{u}_nunit_{nunit}"
    seen[base] = seen.get(base, -1) + 1
    return f"{base}#{seen[base]}"


def _pyreft_component(layer: Any, component: str, where: str) -> tuple[int, str]:
    if component in COMPONENTS:
        return int(layer), component
    m = _LAYER_COMPONENT.match(component)
    if m:
        return int(m.group(1)), f"block_{m.group(2)}"
    raise ModelError(format_error("unsupported pyreft component", where=where,
                                  expected="block_output, block_input or a block path such as "
                                           "'model.layers[3].output'", got=component))


def _torch_load(f: Path) -> dict:
    try:
        sd = torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise ModelError(format_error("cannot read a pyreft intervention file with weights_only=True",
                                      where=str(f), got=str(e)[:300],
                                      fix="re-save the interventions with plain tensors")) from e
    if not isinstance(sd, dict):
        raise ModelError(format_error("a pyreft intervention file holds no state dict", where=str(f),
                                      got=type(sd).__name__))
    return sd


def _rotation_from_parametrization(sd: dict, f: Path, hidden: int) -> torch.Tensor:
    """R^T ``(hidden, rank)`` from torch's orthogonal parametrization state (pyreft's DiReFT ``rotate_layer``)."""
    from torch.nn.utils.parametrizations import orthogonal

    original = sd.get("rotate_layer.parametrizations.weight.original")
    if original is None:
        raise ModelError(format_error("pyreft DiReFT file lacks its rotation", where=str(f),
                                      expected="rotate_layer.parametrizations.weight.original",
                                      got=sorted(sd)[:6]))
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(torch.empty(hidden, original.shape[-1]))
    orthogonal(holder)
    state = {k.removeprefix("rotate_layer."): v.float() for k, v in sd.items() if k.startswith("rotate_layer.")}
    try:
        holder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(format_error("pyreft DiReFT rotation does not load", where=str(f), got=str(e)[:300])) from e
    with torch.no_grad():
        return holder.weight.detach().clone()


def _pyreft_tensors(kind: str, sd: dict, f: Path) -> dict[str, torch.Tensor]:
    try:
        if kind == "loreft":
            return {"R": sd["rotate_layer"].float().T, "W": sd["weight"], "b": sd["bias"]}
        W = sd["learned_source.weight"]
        return {"R": _rotation_from_parametrization(sd, f, W.shape[1]).T, "W": W, "b": sd["learned_source.bias"]}
    except KeyError as e:
        raise ModelError(format_error("pyreft intervention file lacks a tensor", where=str(f),
                                      expected="LoReFT: weight, bias, rotate_layer; DiReFT: learned_source.*, "
                                               "rotate_layer.parametrizations.weight.*", got=sorted(sd)[:6])) from e


def _pyreft_kind(types: list, where: str) -> str:
    """``loreft`` or ``direft`` from pyvene's class-repr strings (one kind per folder)."""
    kinds = set()
    for t in types:
        name = str(t).rsplit(".", 1)[-1].strip("'>")
        if name not in _PYREFT_TYPES:
            raise ModelError(format_error("unsupported pyreft intervention type", where=where,
                                          expected=sorted(_PYREFT_TYPES), got=str(t)))
        kinds.add(_PYREFT_TYPES[name])
    if len(kinds) != 1:
        raise ModelError(format_error("mixed pyreft intervention types", where=where, got=sorted(kinds)))
    return kinds.pop()


def _load_pyreft(p: Path, positions: str | None, share_weights: bool, allow_pickle: bool) -> ReftAdapter:
    where = str(p / "config.json")
    if not allow_pickle:
        raise ModelError(format_error("a pyreft folder stores its interventions as pickled torch files "
                                      "(intkey_*.bin)", where=str(p),
                                      fix="pass --allow-pickle (allow_pickle=True; they are then read with "
                                          "torch.load(weights_only=True)) or convert to the harness format"))
    if positions is None:
        raise ModelError(format_error("pyreft does not save the token positions its interventions were trained at",
                                      where=str(p), expected="positions such as 'l1' (pyreft's last-position "
                                      "examples) or 'f1+l1' (its loreft/train.py default)",
                                      fix="pass the positions used for training"))
    first, last = parse_positions(positions)
    cfg = _read_json(p / "config.json")
    reps, types = cfg.get("representations") or [], cfg.get("intervention_types") or []
    if not reps or len(reps) != len(types):
        raise ModelError(format_error("pyreft config: representations and intervention_types differ",
                                      where=where, got=f"{len(reps)} representations, {len(types)} types"))
    kind = _pyreft_kind(types, where)
    split = bool(first and last and not share_weights)
    if split and len(reps) % 2:
        raise ModelError(format_error("unshared 'f+l' interventions come in pairs", where=where, got=len(reps),
                                      fix="pass share_weights=True if one intervention served both ends"))
    seen: dict[str, int] = {}
    specs, tensors, hidden = [], [], None
    for i, r in enumerate(reps):
        r = dict(zip(("layer", "component", "unit", "max_number_of_units"), r)) if isinstance(r, list) else r
        comp = r.get("component", "block_output")
        key = _pyvene_key(r.get("layer", 0), comp, r.get("unit", "pos"), r.get("max_number_of_units", 1), seen)
        layer, component = _pyreft_component(r.get("layer", 0), comp, where)
        f = p / f"intkey_{key}.bin"
        if not f.is_file():
            raise ModelError(format_error("pyreft intervention file missing", where=str(f),
                                          fix="copy the whole folder written by ReftModel.save"))
        t = _pyreft_tensors(kind, _torch_load(f), f)
        hidden = t["R"].shape[1]
        fn, ln = (first, 0) if split and i < len(reps) // 2 else ((0, last) if split else (first, last))
        specs.append(InterventionSpec(layer, component, fn, ln))
        tensors.append(t)
    info = {"source": str(p), "format": "pyreft", "pyreft_model_type": cfg.get("model_type"),
            "transformers_version": cfg.get("transformers_version")}
    return _build(kind, specs, tensors, info, int(hidden), 0)


def load_reft(path: str | Path, *, positions: str | None = None, share_weights: bool = False,
              allow_pickle: bool = False, orth_tol: float = ORTH_TOL) -> ReftAdapter:
    """Load a ReFT adaptation from a harness-format or pyreft folder, and check R's orthogonality.

    Parameters
    ----------
    path : str or Path
        The folder.
    positions : str, default=None
        pyreft folders only (required there): the positions string used in training (``"l1"``, ``"f1+l1"``).
    share_weights : bool, default=False
        pyreft folders only: with ``"f<N>+l<M>"``, whether one intervention per layer served both ends.
    allow_pickle : bool, default=False
        pyreft folders store pickled ``.bin`` files; they are read (``torch.load(weights_only=True)``) only when
        True.
    orth_tol : float, default=1e-3
        Tolerance on ``max |R R^T - I|`` before a warning.

    Returns
    -------
    ReftAdapter
        fp32 interventions on CPU; ``info["fingerprint"]`` is the sha256 of the folder's files. For a pyreft
        folder ``num_layers`` is 0 (unknown; only layer indices are checked against the base).

    Raises
    ------
    ModelError
        Not a ReFT folder, pickle without ``allow_pickle``, missing positions, unknown kinds or components,
        missing files or tensors, or inconsistent shapes.
    """
    p = Path(path).expanduser()
    fmt = reft_format(p)
    if fmt is None:
        raise ModelError(format_error("not a ReFT folder", where=str(p),
                                      expected=f"{CONFIG_NAME} + {WEIGHTS_NAME} (harness) or config.json + "
                                               "intkey_*.bin (pyreft)", fix="pass the folder the adaptation was "
                                                                            "saved to"))
    adapter = _load_harness(p) if fmt == "harness" else _load_pyreft(p, positions, share_weights, allow_pickle)
    adapter.info["fingerprint"] = reft_fingerprint(p)
    adapter.info["orthogonality_deviation"] = check_orthogonality(adapter, orth_tol)
    return adapter


def adapted_fingerprint(base_fingerprint: str, adapter: ReftAdapter) -> str:
    """Identity of base + adaptation, for the results store (the same adapter on another base differs). It names
    where each intervention acts (layer, component, positions): a pyreft folder takes its positions from
    ``--reft-positions``, not from its files, so the same folder under other positions is another adaptation."""
    where = ";".join(f"{s.layer}:{s.component}:{s.positions}" for s in adapter.specs)
    return hashlib.sha256(f"reft|{base_fingerprint}|{adapter.info.get('fingerprint')}|{where}".encode()).hexdigest()
