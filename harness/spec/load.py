"""YAML to spec objects: safe parsing, ``include:`` resolution, kind dispatch, field-path error reports and the
content hash of the normalised spec."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import SpecError, did_you_mean, format_error, unknown_name
from harness.io import sha256_json
from harness.spec.keys import unknown_key_message

__all__ = ["KINDS", "read_yaml", "load_spec", "load_suite", "spec_hash", "validate_paths", "problems_of",
           "suite_name_clashes"]

#: kind -> "module:class" of its pydantic model (lazy, so loading one kind imports no other).
KINDS: dict[str, str] = {
    "suite": "harness.spec.schema:Suite",
    "policy": "harness.spec.policy:GatePolicy",
    "training": "harness.spec.training:TrainingSpec",
    "run": "harness.spec.run:RunConfig",
}
_MAX_INCLUDE_DEPTH = 8
_MAX_BYTES = 1 << 20  # a spec file above 1 MiB is not a hand-written spec
_MAX_NODES = 100_000  # YAML nodes once aliases are expanded (a "billion laughs" document expands to ~10^9)


def _model_class(kind: str) -> type[BaseModel]:
    module, attr = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), attr)


def read_yaml(path: str | Path, _depth: int = 0) -> dict[str, Any]:
    """Parse one YAML file with ``yaml.safe_load`` and resolve ``include:`` (a path or list of paths, relative
    to the file; the including file's keys win).

    Raises
    ------
    SpecError
        If the file is missing or unreadable, is not valid YAML, is not a mapping, or includes too deeply.
    """
    path = Path(path)
    if _depth > _MAX_INCLUDE_DEPTH:
        raise SpecError(format_error("include chain too deep", where=str(path),
                                     expected=f"at most {_MAX_INCLUDE_DEPTH} levels", fix="remove the include cycle"))
    text = _read_text(path)
    try:
        doc = _safe_load_bounded(text, path)
    except yaml.YAMLError as e:
        raise SpecError(format_error("spec file is not valid YAML", where=str(path), got=_yaml_problem(e, path),
                                     fix="fix the YAML syntax at the position shown")) from e
    except RecursionError as e:
        raise SpecError(format_error("spec file nests too deeply", where=str(path),
                                     fix="flatten the YAML structure")) from e
    if not isinstance(doc, dict):
        raise SpecError(format_error("spec file must hold a mapping at the top level", where=str(path),
                                     expected="keys such as kind:, name:", got=type(doc).__name__))
    include = doc.pop("include", None)
    if include is None:
        return doc
    merged: dict[str, Any] = {}
    for inc in [include] if isinstance(include, str) else list(include):
        if not isinstance(inc, str):
            raise SpecError(format_error("include must be a path or a list of paths", where=str(path), got=inc))
        target = path.parent / inc
        if not target.exists():
            raise SpecError(format_error("included spec file not found", where=f"include: {inc} in {path}",
                                         expected=f"a file at {target}",
                                         fix="an include is taken relative to the file that includes it: fix the "
                                             "include's path"))
        merged.update(read_yaml(target, _depth + 1))
    merged.update(doc)
    return merged


def _read_text(path: Path) -> str:
    """The file's UTF-8 text, reading at most ``_MAX_BYTES`` (so /dev/zero or a huge file cannot exhaust memory)."""
    try:
        if not path.exists():
            raise FileNotFoundError(str(path))
        if not path.is_file():
            raise SpecError(format_error("spec path is not a regular file", where=str(path),
                                         fix="pass a YAML file (or a folder to `harness validate`)"))
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
        if len(data) > _MAX_BYTES:
            raise SpecError(format_error("spec file is too large", where=str(path),
                                         expected=f"at most {_MAX_BYTES} bytes", got=f"more than {_MAX_BYTES} bytes",
                                         fix="a spec describes data, it does not hold it: move rows to a data file"))
        return data.decode("utf-8")
    except FileNotFoundError as e:
        close = _close_files(path)
        hint = f"did you mean {' or '.join(map(str, close))}? " if close else ""
        raise SpecError(format_error("spec file not found", where=_where(path),
                                     fix=f"{hint}check the path (relative paths are taken from the current "
                                         "folder)")) from e
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(format_error("spec file cannot be read", where=str(path), got=str(e),
                                     fix="make it a readable UTF-8 YAML file")) from e


def _yaml_problem(error: yaml.YAMLError, path: Path) -> str:
    """PyYAML's message with its line breaks kept (the caret under the column only lines up that way), indented
    under ``got:``, and the file's name for PyYAML's ``"<unicode string>"``."""
    lines = [ln.replace('"<unicode string>"', path.name) for ln in str(error).splitlines() if ln.strip()]
    return "".join(f"\n    {ln}" for ln in lines)


def _close_files(path: Path) -> list[Path]:
    """YAML files beside a missing ``path`` whose names are close to its name (``arc-easy.yml`` for
    ``arc-easy.yaml``, a typo), at most 3; empty when its folder does not exist."""
    import difflib

    try:
        names = sorted(q.name for q in path.parent.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
    except OSError:
        return []
    return [path.parent / n for n in difflib.get_close_matches(path.name, names, n=3, cutoff=0.75)]


def _safe_load_bounded(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that refuses recursive aliases and documents expanding past ``_MAX_NODES`` nodes.

    ``safe_load`` shares aliased nodes, so a "billion laughs" document loads quickly, but anything that walks the
    result (validation of free-form fields, the spec hash, JSON) expands it and exhausts memory.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, path: Path) -> None:
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [n for kv in node.value for n in kv]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if size[key] > _MAX_NODES:
                raise SpecError(format_error("spec file expands to too many values (aliases repeated inside "
                                             "aliases, a 'billion laughs' document?)", where=str(path),
                                             expected=f"at most {_MAX_NODES} values once aliases are expanded",
                                             got=f"more than {_MAX_NODES}", fix="write the values out plainly"))
            continue
        if key in size:
            continue
        if key in open_:
            raise SpecError(format_error("spec file holds a recursive alias (a value that contains itself)",
                                         where=str(path), fix="remove the alias that refers to its own anchor"))
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children)


def _where(path: str | Path) -> str:
    """``path`` as given, with the folder a relative path was looked for in (``suites/x.yaml (in /home/me)``)."""
    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (in {Path.cwd()})"


def problems_of(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One ``field.path: message`` line per problem in a pydantic ``ValidationError``; with ``model`` (the class
    validated), an unknown key's line names the valid keys at its path and the closest one."""
    lines = []
    errors = err.errors()
    # a union's member names (``literal['classification']``, ``list[str]``, ``tagged-union[...]``) are not field
    # paths. When a union field got a plain value (``suites: idd``), the member of names says what was wanted
    # (``'id' or 'shift'``, with a hint) and the others (``a valid list``) are noise; when it got a block
    # (``task: {kind: ...}``), the plain-string member's failure is the noise
    named = {_field(e) for e in errors if _is_literal(e) and _scalar(e.get("input"))}
    others: dict[tuple, list[str]] = {}  # field -> the other members' wants ("a valid list"), said on one line
    for e in errors:
        if (any("[" in str(p) for p in e["loc"]) and not _is_literal(e) and _field(e) in named
                and _scalar(e.get("input"))):
            others.setdefault(_field(e), []).append(e["msg"].removeprefix("Input should be "))
    for e in errors:
        if _is_literal(e) and not _scalar(e.get("input")) and len(errors) > 1:
            continue
        if _field(e) in others and not _is_literal(e) and any("[" in str(p) for p in e["loc"]):
            continue
        loc = ".".join(str(p) for p in e["loc"] if "[" not in str(p)) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_key_message(model, tuple(e["loc"]))
        elif e["type"] != "missing" and not e["type"].startswith("value_error"):
            if _is_literal(e) and _field(e) in others:
                msg += "".join(f", or {want}" for want in dict.fromkeys(others[_field(e)]))
            msg += _echo(e)
        lines.append(f"{loc}: {msg}")
    return lines


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))


def _is_literal(e: dict) -> bool:
    return any(str(p).startswith("literal[") for p in e["loc"])


def _field(e: dict) -> tuple:
    """The error's field path without union member names."""
    return tuple(p for p in e["loc"] if "[" not in str(p))


def _echo(e: dict) -> str:
    """`` (got 'x')`` for a scalar input pydantic refused (the message names what it wanted, not what it got),
    with a "did you mean" hint when the field takes one of a few names (``enum``, ``literal_error``), and a note
    when YAML read a bare yes/no/on/off as a boolean there; ``""`` for blocks and lists (their own fields' lines say
    what is wrong) and for messages that already quote the input."""
    value = e.get("input")
    ctx = e.get("ctx") or {}
    if e["type"] == "union_tag_not_found":  # a block without its kind/type key
        key = str(ctx.get("discriminator", "")).strip("'")
        return f" (add `{key}:` to the block, naming which form it is; suites/README.md lists the forms)"
    if e["type"] == "union_tag_invalid":  # a block whose kind/type names no form: the tag is in the message
        return did_you_mean(str(ctx.get("tag", "")), re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))),
                            families=False)
    if not _scalar(value) or "got " in e["msg"]:
        return ""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    hint = ""
    if e["type"] in ("enum", "literal_error"):
        if isinstance(value, bool):
            hint = " (YAML reads a bare yes/no/on/off/true/false as a boolean: quote the name)"
        elif isinstance(value, str):
            hint = did_you_mean(value, re.findall(r"'([^']*)'", str(ctx.get("expected", ""))), families=False)
    return f" (got {shown}){hint}"


def load_spec(path: str | Path, kind: str | None = None) -> BaseModel:
    """Load and validate one spec file of any kind (dispatched on its top-level ``kind:``).

    Parameters
    ----------
    path : str or Path
        The YAML file.
    kind : str, default=None
        If given, the file must be of this kind.

    Returns
    -------
    pydantic.BaseModel
        A frozen :class:`~harness.spec.schema.Suite`, ``GatePolicy``, ``TrainingSpec`` or ``RunConfig``.

    Raises
    ------
    SpecError
        Listing every problem with its field path.
    """
    doc = read_yaml(path)
    got_kind = doc.get("kind")
    if not isinstance(got_kind, str) or got_kind not in KINDS:
        raise SpecError(format_error("spec file has no valid top-level kind", where=str(path),
                                     expected=f"kind: one of {', '.join(KINDS)}", got=got_kind,
                                     fix="add the kind: line for what the file describes"))
    if kind is not None and got_kind != kind:
        raise SpecError(format_error(f"expected a {kind} file", where=str(path), expected=f"kind: {kind}",
                                     got=f"kind: {got_kind}"))
    cls = _model_class(got_kind)
    try:
        return cls.model_validate(doc)
    except ValidationError as e:
        probs = problems_of(e, cls)
        raise SpecError(f"{path}: {len(probs)} problem(s) in this {got_kind} file:\n"
                        + "\n".join(f"  {p}" for p in probs)) from e


def load_suite(path: str | Path):
    """Load a ``kind: suite`` file (see :func:`load_spec`)."""
    return load_spec(path, kind="suite")


def spec_hash(spec: BaseModel) -> str:
    """sha256 (hex) of the spec's canonical JSON (defaults filled in, keys sorted).

    Fields a spec class lists in ``HASH_OMIT_IF_DEFAULT`` (fields added after the format's first release, such as
    a suite's ``task``) are left out while they hold their default, so a spec written before they existed keeps
    its hash (its results-store entries and baselines stay valid). Fields in ``HASH_OMIT`` are always left out:
    they change how a run uses the suite's results, not the data or any example's output (a suite's
    ``in_selection``), so switching them keeps the store's entries and a baseline comparable."""
    data = spec.model_dump(mode="json")
    for name in getattr(type(spec), "HASH_OMIT", ()):
        data.pop(name, None)
    for name in getattr(type(spec), "HASH_OMIT_IF_DEFAULT", ()):
        field = type(spec).model_fields[name]
        default = field.get_default(call_default_factory=True)
        if getattr(spec, name) == default:
            data.pop(name, None)
    return sha256_json(data)


def validate_paths(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, BaseModel]], list[str]]:
    """Validate files and folders (every ``*.yaml``/``*.yml`` below a folder) without loading any model.

    Returns
    -------
    (valid, problems)
        The valid specs with their paths, and one message per invalid file (each listing all its problems).
    """
    files: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml"))
        elif p.exists():
            files.append(p)
        else:
            problems.append(format_error("path not found", where=_where(p),
                                         fix="check the path (relative paths are taken from the current folder)"))
    valid = []
    for f in files:
        try:
            valid.append((f, load_spec(f)))
        except SpecError as e:
            problems.append(str(e))
    return valid, problems


def suite_name_clashes(suites: Iterable[tuple[str, str | Path | None]]) -> dict[str, str]:
    """One message per suite name that two or more of ``suites`` share, keyed by the name, naming every file
    that uses it (a run, its store, summary and a policy tell suites apart by name only, so they would mix).
    ``harness validate`` reports it for each of those files; ``sweep``/``eval`` refuse such suites.

    >>> list(suite_name_clashes([("a", "x/a.yaml"), ("b", "x/b.yaml"), ("a", "x/../x/a.yaml")]))
    []
    >>> list(suite_name_clashes([("a", "x/a.yaml"), ("a", "y/a.yaml")]))
    ['a']

    Parameters
    ----------
    suites : iterable of (str, path or None)
        Each suite's ``name`` and the file it came from (``None`` for one built in Python).
    """
    files: dict[str, list[str]] = {}
    seen: set[tuple[str, Path]] = set()
    for name, path in suites:
        if path is not None and (name, Path(path).resolve()) in seen:  # one file given twice is one suite
            continue
        if path is not None:
            seen.add((name, Path(path).resolve()))
        files.setdefault(name, []).append(str(path) if path is not None else "(a Suite object, no file)")
    return {name: format_error(
        f"{len(where)} suites share the name {name!r}", where=f"name: {name} in {' and '.join(where)}",
        fix=f"give each suite its own name (e.g. name: {name}-2 in {where[-1]}): runs, stores and policies tell "
            "suites apart by name")
        for name, where in sorted(files.items()) if len(where) > 1}


def check_name(kind: str, name: str, available: Iterable[str]) -> None:
    """Raise :class:`SpecError` with near matches if ``name`` is not among ``available``."""
    available = list(available)
    if name not in available:
        raise SpecError(unknown_name(kind, name, available))
