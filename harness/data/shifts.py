"""Synthetic shifts: pure, seeded text perturbations kept in one explicit, frozen name -> transform table.

Each transform is a plain function ``fn(text, rng, **params) -> str``: it reads nothing but its arguments, draws
randomness only from ``rng`` (a :class:`random.Random`), and validates nothing itself; parameters are checked
once, up front, by :func:`validate_transforms` against the transform's declared parameters. :data:`TRANSFORMS` is
a literal mapping built at import time and read-only afterwards; nothing registers itself.

:func:`apply_transforms` seeds one generator per (transform position, transform name, transform seed, example id,
field) with sha256, so the perturbed text of an example does not depend on the order, batching or subset of the
examples it is processed with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

from harness.data.splits import rows_fingerprint
from harness.errors import SpecError, format_error, unknown_name
from harness.records import SplitData, SplitRef, SuiteRole
from harness.spec.schema import Suite, TransformSpec

__all__ = ["Param", "Transform", "TRANSFORMS", "validate_transforms", "example_rng", "apply_transforms",
           "typos", "case", "punctuation_removal", "word_dropout", "contractions"]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------- keyboard
#: US QWERTY rows and the x offset of each row's first key, in key widths (rows are staggered).
_QWERTY_ROWS = (("1234567890", 1.0), ("qwertyuiop", 1.5), ("asdfghjkl", 1.75), ("zxcvbnm", 2.25))


def _qwerty_neighbours() -> dict[str, str]:
    pos = {c: (r, off + i) for r, (row, off) in enumerate(_QWERTY_ROWS) for i, c in enumerate(row)}
    out = {}
    for c, (r, x) in pos.items():
        near = [d for d, (r2, x2) in pos.items()
                if d != c and ((r2 == r and abs(x2 - x) == 1) or (abs(r2 - r) == 1 and abs(x2 - x) < 1))]
        out[c] = "".join(sorted(near))
    return out


#: Lower-case key -> the letter and digit keys touching it on a US QWERTY keyboard.
QWERTY_NEIGHBOURS: Mapping[str, str] = MappingProxyType(_qwerty_neighbours())
_TYPO_OPS = ("substitute", "insert", "delete", "swap")


def _neighbour(c: str, rng: random.Random) -> str:
    near = QWERTY_NEIGHBOURS[c.lower()]
    d = near[rng.randrange(len(near))]
    return d.upper() if c.isupper() else d


def typos(text: str, rng: random.Random, *, rate: float = 0.05, ops: Sequence[str] = _TYPO_OPS) -> str:
    """Keyboard typos: each letter or digit is, with probability ``rate``, replaced by a QWERTY neighbour
    (``substitute``), preceded by one (``insert``), removed (``delete``) or swapped with the next character
    (``swap``), the operation drawn uniformly from ``ops``.

    Parameters
    ----------
    text : str
        The input text.
    rng : random.Random
        The example's generator (:func:`example_rng`).
    rate : float, default=0.05
        Probability in [0, 1] that a letter or digit gets a typo.
    ops : sequence of str, default=("substitute", "insert", "delete", "swap")
        The operations to draw from.

    Returns
    -------
    str
        The text with typos; case is kept. A text the typos would leave blank is returned unchanged.
    """
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if c.lower() not in QWERTY_NEIGHBOURS or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        op = ops[rng.randrange(len(ops))]
        if op == "substitute":
            out.append(_neighbour(c, rng))
        elif op == "insert":
            out += [_neighbour(c, rng), c]
        elif op == "swap" and i + 1 < len(chars) and chars[i + 1] != c:
            out += [chars[i + 1], c]
            i += 1
        elif op == "swap":
            out.append(c)  # nothing to swap with: the character stays
        # delete: append nothing
        i += 1
    result = "".join(out)
    return result if result.strip() else text


def _title_word(m: re.Match) -> str:
    w = m.group(0)
    k = next((j for j, ch in enumerate(w) if ch.isalpha()), None)
    return w if k is None else w[:k] + w[k].upper() + w[k + 1:].lower()


def case(text: str, rng: random.Random, *, mode: str = "lower") -> str:
    """Change letter case.

    Parameters
    ----------
    text : str
        The input text.
    rng : random.Random
        The example's generator (used by ``random`` only).
    mode : {"lower", "upper", "title", "random"}, default="lower"
        ``title`` upper-cases the first letter of each whitespace-separated word and lower-cases the rest (so
        ``don't`` becomes ``Don't``); ``random`` makes each character upper or lower case with probability 1/2.

    Returns
    -------
    str
        The text, same length.
    """
    if mode == "lower":
        return text.lower()
    if mode == "upper":
        return text.upper()
    if mode == "title":
        return re.sub(r"\S+", _title_word, text)
    return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)


def punctuation_removal(text: str, rng: random.Random, *, keep: str = "") -> str:
    """Remove every Unicode punctuation character (categories P*).

    Parameters
    ----------
    text : str
        The input text.
    rng : random.Random
        Unused (the transform is deterministic); accepted for the common signature.
    keep : str, default=""
        Punctuation characters to keep, e.g. ``"'"``.

    Returns
    -------
    str
        The text without punctuation, runs of spaces collapsed; a text made only of punctuation is returned
        unchanged.
    """
    out = "".join(ch for ch in text if ch in keep or not unicodedata.category(ch).startswith("P"))
    out = re.sub(r"[ \t]{2,}", " ", out).strip()
    return out if out else text


def word_dropout(text: str, rng: random.Random, *, rate: float = 0.1) -> str:
    """Drop whitespace-separated words at random.

    Parameters
    ----------
    text : str
        The input text.
    rng : random.Random
        The example's generator.
    rate : float, default=0.1
        Probability in [0, 1] that a word is dropped.

    Returns
    -------
    str
        The kept words joined with single spaces; at least one word (drawn from ``rng``) always stays, so the
        result is blank only if the input was.
    """
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= rate]
    if not kept:
        kept = [words[rng.randrange(len(words))]]
    return " ".join(kept)


#: (expanded, contracted) pairs, lower case; matching ignores case and accepts the typographic apostrophe.
CONTRACTIONS: tuple[tuple[str, str], ...] = (
    ("do not", "don't"), ("does not", "doesn't"), ("did not", "didn't"), ("is not", "isn't"),
    ("are not", "aren't"), ("was not", "wasn't"), ("were not", "weren't"), ("have not", "haven't"),
    ("has not", "hasn't"), ("had not", "hadn't"), ("will not", "won't"), ("would not", "wouldn't"),
    ("could not", "couldn't"), ("should not", "shouldn't"), ("cannot", "can't"), ("must not", "mustn't"),
    ("i am", "i'm"), ("you are", "you're"), ("we are", "we're"), ("they are", "they're"), ("it is", "it's"),
    ("that is", "that's"), ("there is", "there's"), ("what is", "what's"), ("i have", "i've"),
    ("you have", "you've"), ("we have", "we've"), ("they have", "they've"), ("i will", "i'll"),
    ("you will", "you'll"), ("we will", "we'll"), ("they will", "they'll"), ("let us", "let's"),
)
_TO_CONTRACTED = {e: c for e, c in CONTRACTIONS}
_TO_EXPANDED = {c: e for e, c in CONTRACTIONS}


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern:
    alts = sorted(phrases, key=len, reverse=True)
    body = "|".join(re.escape(p).replace("'", "['\u2019]").replace(r"\ ", r"\s+") for p in alts)
    return re.compile(rf"(?<![\w'\u2019])(?:{body})(?![\w'\u2019])", re.IGNORECASE)


_PATTERNS = {
    "contract": (_phrase_pattern(list(_TO_CONTRACTED)), _TO_CONTRACTED),
    "expand": (_phrase_pattern(list(_TO_EXPANDED)), _TO_EXPANDED),
    "swap": (_phrase_pattern(list(_TO_CONTRACTED) + list(_TO_EXPANDED)), {**_TO_CONTRACTED, **_TO_EXPANDED}),
}


def _match_case(src: str, repl: str) -> str:
    if src.isupper() and any(ch.isalpha() for ch in src[1:]):
        return repl.upper()
    if src[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl


def contractions(text: str, rng: random.Random, *, direction: str = "contract", rate: float = 1.0) -> str:
    """Contract or expand the phrases of :data:`CONTRACTIONS`.

    Parameters
    ----------
    text : str
        The input text.
    rng : random.Random
        The example's generator (used when ``rate`` < 1).
    direction : {"contract", "expand", "swap"}, default="contract"
        ``contract``: ``do not`` -> ``don't``; ``expand``: ``don't`` -> ``do not`` (one reading for ambiguous
        forms: ``it's`` -> ``it is``); ``swap``: both ways in one pass.
    rate : float, default=1.0
        Probability in [0, 1] that each matching phrase is changed.

    Returns
    -------
    str
        The text; a capitalised or all-caps phrase keeps its case.
    """
    pattern, table = _PATTERNS[direction]

    def repl(m: re.Match) -> str:
        if rate < 1.0 and rng.random() >= rate:
            return m.group(0)
        key = re.sub(r"\s+", " ", m.group(0).lower().replace("\u2019", "'"))
        return _match_case(m.group(0), table[key])

    return pattern.sub(repl, text)


# ------------------------------------------------------------------------------------------------------ table
@dataclass(frozen=True)
class Param:
    """One accepted parameter of a transform: its default, a check and the constraint in words."""

    default: Any
    check: Callable[[Any], bool]
    constraint: str


@dataclass(frozen=True)
class Transform:
    """An entry of :data:`TRANSFORMS`: the pure function and its accepted parameters."""

    fn: Callable[..., str]
    params: Mapping[str, Param] = field(default_factory=dict)


def _is_rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0


def _is_ops(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(o, str) and o in _TYPO_OPS for o in v))


_RATE = "a number in [0, 1] (probability per {})"

#: The transforms a suite may name, read-only. To add one: write a pure ``fn(text, rng, **params)`` above and add
#: a literal entry here.
TRANSFORMS: Mapping[str, Transform] = MappingProxyType({
    "typos": Transform(typos, MappingProxyType({
        "rate": Param(0.05, _is_rate, _RATE.format("letter or digit")),
        "ops": Param(list(_TYPO_OPS), _is_ops, f"a non-empty list drawn from {', '.join(_TYPO_OPS)}"),
    })),
    "case": Transform(case, MappingProxyType({
        "mode": Param("lower", lambda v: v in ("lower", "upper", "title", "random"),
                      "one of lower, upper, title, random"),
    })),
    "punctuation_removal": Transform(punctuation_removal, MappingProxyType({
        "keep": Param("", lambda v: isinstance(v, str), "a string of punctuation characters to keep"),
    })),
    "word_dropout": Transform(word_dropout, MappingProxyType({
        "rate": Param(0.1, _is_rate, _RATE.format("word")),
    })),
    "contractions": Transform(contractions, MappingProxyType({
        "direction": Param("contract", lambda v: v in ("expand", "contract", "swap"),
                           "one of expand, contract, swap"),
        "rate": Param(1.0, _is_rate, _RATE.format("matching phrase")),
    })),
})


def validate_transforms(transforms: Sequence[TransformSpec], *, owner: str = "suite") -> list[dict[str, Any]]:
    """Check every transform name and parameter; return each transform's full parameters (defaults filled in).

    Parameters
    ----------
    transforms : sequence of TransformSpec
        The suite's ``transforms`` in order.
    owner : str, default="suite"
        Named in error messages (e.g. ``suite 'vader-movies-typos'``).

    Returns
    -------
    list of dict
        One dict of parameter name -> value per transform.

    Raises
    ------
    SpecError
        For an unknown transform (with near matches and the available names), an unknown parameter (listing
        the accepted ones) or a value outside a parameter's constraint.
    """
    out = []
    for i, t in enumerate(transforms):
        if t.name not in TRANSFORMS:
            raise SpecError(f"{owner}: transforms[{i}]: " + unknown_name("transform", t.name, TRANSFORMS))
        spec = TRANSFORMS[t.name]
        extra = sorted(set(t.params) - set(spec.params))
        if extra:
            accepted = ", ".join(spec.params) or "none"
            raise SpecError(format_error(f"unknown parameter(s) {', '.join(map(repr, extra))} of transform "
                                         f"{t.name!r}", where=f"{owner}: transforms[{i}].params",
                                         expected=f"parameters among: {accepted}", got=dict(t.params),
                                         fix="remove or rename the parameter"))
        full = {}
        for name, p in spec.params.items():
            value = t.params.get(name, p.default)
            if not p.check(value):
                raise SpecError(format_error(f"parameter {name!r} of transform {t.name!r} is invalid",
                                             where=f"{owner}: transforms[{i}].params.{name}",
                                             expected=p.constraint, got=value,
                                             fix=f"set {name} to {p.constraint}"))
            full[name] = list(value) if isinstance(value, tuple) else value
        out.append(full)
    return out


def example_rng(seed: int, name: str, position: int, example_id: str, column: str = "text") -> random.Random:
    """The generator of one transform on one field of one example.

    Parameters
    ----------
    seed : int
        The transform's ``seed`` from the suite.
    name : str
        The transform's name.
    position : int
        Its index in the suite's ``transforms`` (two identical entries draw independently).
    example_id : str
        The example's id.
    column : str, default="text"
        ``text`` or ``text_pair``.

    Returns
    -------
    random.Random
        Seeded with the first 8 bytes of ``sha256(f"{seed}:{name}:{position}:{column}:{example_id}")``, so it
        depends on nothing but these values (not on row order, batch or process).
    """
    digest = hashlib.sha256(f"{int(seed)}:{name}:{position}:{column}:{example_id}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _perturb_column(values: Sequence[str], ids: Sequence[str], transforms: Sequence[TransformSpec],
                    params: Sequence[dict[str, Any]], column: str) -> list[str]:
    out = []
    for text, ex_id in zip(values, ids):
        for pos, (t, p) in enumerate(zip(transforms, params)):
            text = TRANSFORMS[t.name].fn(text, example_rng(t.seed, t.name, pos, ex_id, column), **p)
        out.append(text)
    return out


def apply_transforms(split: SplitData, transforms: Sequence[TransformSpec], suite: Suite) -> SplitData:
    """Perturb the texts of one split (in order, one transform after another) into a split of a derived suite.

    Parameters
    ----------
    split : SplitData
        The source split (of the suite named in ``suite.derived_from``).
    transforms : sequence of TransformSpec
        The transforms, applied in order to ``text`` and, when present, to ``text_pair`` (each field with its
        own generator).
    suite : Suite
        The derived suite: it names the new split's suite, suite role, shift type and version.

    Returns
    -------
    SplitData
        Same rows, order, ``example_id``, ``source_id`` and labels as ``split`` (so paired statistics and the
        cluster bootstrap line up with the source split), perturbed texts, the same ``n_dropped`` and
        ``drop_reasons``, and a new :class:`~harness.records.SplitRef`: the derived suite's name, role, shift
        type and version, the source split's name and role, and a fingerprint over the derived suite's spec hash
        (which holds the transform names, parameters and seeds), the source fingerprint and the new rows.

    Raises
    ------
    SpecError
        If a transform or parameter is invalid (see :func:`validate_transforms`) or the derived suite's classes
        differ from the source split's.
    """
    owner = f"suite {suite.name!r}"
    params = validate_transforms(transforms, owner=owner)
    if tuple(suite.classes) != tuple(split.classes):
        raise SpecError(format_error("a derived suite must keep the classes of the suite it perturbs",
                                     where=f"{owner}: classes", expected=list(split.classes), got=list(suite.classes),
                                     fix=f"set classes to {list(split.classes)}"))
    frame = split.frame
    ids = frame["example_id"].tolist()
    new = frame.copy()
    new["text"] = pd.Series(_perturb_column(frame["text"].tolist(), ids, transforms, params, "text"),
                            index=frame.index, dtype=object)
    if "text_pair" in frame.columns:
        new["text_pair"] = pd.Series(_perturb_column(frame["text_pair"].tolist(), ids, transforms, params,
                                                     "text_pair"), index=frame.index, dtype=object)
    changed = int((new["text"] != frame["text"]).sum())
    logger.info("%s/%s: %d of %d texts changed by %s", suite.name, split.ref.split, changed, len(frame),
                ", ".join(t.name for t in transforms))
    ref = SplitRef(suite=suite.name, split=split.ref.split, role=split.ref.role, suite_role=SuiteRole(suite.role),
                   shift_type=suite.shift_type.value if suite.shift_type is not None else None,
                   suite_version=suite.version,
                   fingerprint=rows_fingerprint(suite, split.ref.split, new, extra=json.dumps(
                       {"source": split.ref.fingerprint, "params": params}, sort_keys=True)))
    return SplitData(ref=ref, frame=new, classes=split.classes, n_dropped=split.n_dropped,
                     drop_reasons=dict(split.drop_reasons))
