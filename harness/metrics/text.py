"""Per-example scorers for language-model tasks (no torch): generation scores, multiple-choice predictions and
perplexity sufficient statistics, with lm-eval 0.4.13's definitions where lm-eval has the metric.

Every aggregate here is a ratio of sums over examples, so a bootstrap resamples documents and recomputes the
ratio (a ratio estimator): per-example statistics are rows ``(numerator, denominator)`` of shape ``(n, 2)``
(:func:`mean_stats`, :func:`perplexity_stats`) and the value is a function of their (weighted) column sums
(:func:`mean_value`, :func:`perplexity_value`, :func:`bits_per_byte_value`), vectorised over leading axes like
:mod:`harness.metrics.registry`'s ``value`` functions.

Sources: ``lm_eval/api/metrics.py`` (``exact_match_hf_evaluate``, ``weighted_perplexity``, ``bits_per_byte``),
``lm_eval/api/task.py`` (``ConfigurableTask.process_results``: ``acc``, ``acc_norm``; ``count_words``,
``count_bytes``), SQuAD v1.1's ``evaluate-v1.1.py`` (token F1).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import numpy as np

__all__ = ["extract_answer", "normalize", "exact_match", "contains", "extract_number", "numeric_match", "token_f1",
           "multiple_choice_scores", "count_words", "count_bytes", "mean_stats", "mean_value",
           "perplexity_stats", "perplexity_value", "bits_per_byte_value"]

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_DIGIT_TABLE = str.maketrans("", "", string.digits)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


#: What :func:`extract_answer` returns when the pattern matches nothing (lm-eval's regex filter's fallback).
INVALID = "[invalid]"


def extract_answer(text: str, pattern: str, *, match: str = "first", fallback: str = INVALID) -> str:
    r"""The answer extracted by a regular expression, as lm-eval's ``regex`` filter: ``re.findall``, the first
    (``match="first"``, lm-eval ``group_select=0``) or last (``"last"``, ``group_select=-1``) match, its first
    non-empty group when the pattern has several, stripped; ``fallback`` when nothing matches.

    >>> extract_answer("so 3 + 4 = 7. #### 7", r"#### (\-?[0-9\.\,]+)")
    '7'
    >>> extract_answer("12 apples, then 1,200", r"(-?[$0-9.,]{2,})|(-?[0-9]+)", match="last")
    '1,200'
    >>> extract_answer("none", r"#### (\d+)")
    '[invalid]'
    """
    found = re.findall(pattern, text)
    if not found:
        return fallback
    m = found[0 if match == "first" else -1]
    if isinstance(m, tuple):
        m = next((g for g in m if g), fallback)
    return m.strip()


def normalize(text: str, *, ignore_case: bool = False, ignore_punctuation: bool = False,
              ignore_numbers: bool = False, regexes_to_ignore: Sequence[str] = (), strip: bool = False) -> str:
    """lm-eval's ``exact_match`` normalisation, in its order: delete each regex's matches, lower-case, delete
    ASCII punctuation, delete digits; then (an addition, off by default) strip surrounding whitespace.

    >>> normalize("The answer is $1,200.", ignore_case=True, regexes_to_ignore=[",", r"\\$", r"\\.$"])
    'the answer is 1200'
    """
    for rx in regexes_to_ignore:
        text = re.sub(rx, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCT_TABLE)
    if ignore_numbers:
        text = text.translate(_DIGIT_TABLE)
    return text.strip() if strip else text


def exact_match(prediction: str, reference: str, **options) -> float:
    """1.0 if the normalised strings are equal, else 0.0 (``options``: :func:`normalize`'s keywords).

    >>> exact_match(" Paris", "paris", ignore_case=True, strip=True)
    1.0
    """
    return float(normalize(prediction, **options) == normalize(reference, **options))


def contains(prediction: str, reference: str, **options) -> float:
    """1.0 if the normalised reference occurs in the normalised prediction (an empty reference never matches).

    >>> contains("I think it is Paris, France.", "paris", ignore_case=True)
    1.0
    """
    ref = normalize(reference, **options)
    return float(bool(ref) and ref in normalize(prediction, **options))


def extract_number(text: str) -> Decimal | None:
    """The final number of ``text``, or ``None``.

    Rule: if ``text`` contains ``####`` (GSM8K's answer marker) only the part after the last ``####`` is read;
    the number is the last match of ``-?$?D[D,]*(.D+)?`` (D a digit: an optional minus, optional dollar sign,
    digits with thousands commas, an optional decimal part); the dollar sign and commas are dropped. A trailing
    full stop is not part of the number (``1200.`` is 1200).

    >>> extract_number("#### 1,200")
    Decimal('1200')
    >>> extract_number("3 boxes of 400, so the answer is 1200.")
    Decimal('1200')
    >>> extract_number("no digits") is None
    True
    """
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return Decimal(found[-1].replace("$", "").replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only matches numbers
        return None


def numeric_match(prediction: str, reference: str) -> float:
    """1.0 if the final numbers of prediction and reference (:func:`extract_number`) are equal as numbers.

    >>> numeric_match("so the answer is 1200.", "Natalia sold ... #### 1,200")
    1.0
    >>> numeric_match("about 12", "#### 1,200")
    0.0

    Raises
    ------
    ValueError
        If the reference holds no number (a data problem, not a model error).
    """
    gold = extract_number(reference)
    if gold is None:
        raise ValueError(f"the reference answer {reference[-60:]!r} holds no number; numeric_match needs one")
    pred = extract_number(prediction)
    return float(pred is not None and pred == gold)


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: lower-case, drop punctuation and the articles a/an/the, split on whitespace, F1 of the
    token multisets; 1.0 when both are empty, 0.0 when only one is.

    >>> round(token_f1("the big red barn", "a red barn"), 4)
    0.8
    """
    pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def multiple_choice_scores(loglik: Sequence[Sequence[float]], choices: Sequence[Sequence[str]],
                           gold: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-example multiple-choice predictions and scores, as lm-eval's ``process_results``.

    ``pred = argmax(ll)``; ``pred_norm = argmax(ll / len(choice))`` with the length in *characters* of the
    choice text (without the target delimiter), which is what lm-eval's ``acc_norm`` uses; ``acc_bytes`` uses
    the UTF-8 byte length (lm-eval's ``acc_bytes``). Ties go to the first choice (``np.argmax``). A gold index
    outside the choices scores 0 (lm-eval warns and scores 0).

    Parameters
    ----------
    loglik : sequence of sequences of float
        Per example, the summed log-likelihood of each choice (examples may have different numbers of choices).
    choices : sequence of sequences of str
        Per example, the choice texts, aligned with ``loglik``.
    gold : sequence of int
        Per example, the index of the correct choice.

    Returns
    -------
    dict of str to ndarray of shape (n,)
        ``pred``, ``pred_norm`` (int64) and ``acc``, ``acc_norm``, ``acc_bytes`` (float64, 0.0 or 1.0).

    Raises
    ------
    ValueError
        If the lengths of ``loglik``, ``choices`` and ``gold`` differ, or an example's ll and choices differ.

    >>> s = multiple_choice_scores([[-4.0, -5.0]], [["no", "maybe"]], [1])
    >>> s["acc"].tolist(), s["acc_norm"].tolist()
    ([0.0], [1.0])
    """
    if not len(loglik) == len(choices) == len(gold):
        raise ValueError(f"loglik, choices and gold must have one entry per example; got {len(loglik)}, "
                         f"{len(choices)}, {len(gold)}")
    out = {k: np.zeros(len(gold), dtype=np.int64) for k in ("pred", "pred_norm")}
    out |= {k: np.zeros(len(gold), dtype=np.float64) for k in ("acc", "acc_norm", "acc_bytes")}
    for i, (ll, ch, g) in enumerate(zip(loglik, choices, gold)):
        ll = np.asarray(ll, dtype=np.float64)
        if len(ll) != len(ch) or not len(ch):
            raise ValueError(f"example {i}: {len(ll)} log-likelihoods for {len(ch)} choices")
        pred = int(np.argmax(ll))
        pred_norm = int(np.argmax(ll / np.array([float(len(c)) for c in ch])))
        pred_bytes = int(np.argmax(ll / np.array([float(len(c.encode("utf-8"))) for c in ch])))
        out["pred"][i], out["pred_norm"][i] = pred, pred_norm
        out["acc"][i], out["acc_norm"][i], out["acc_bytes"][i] = (pred == g), (pred_norm == g), (pred_bytes == g)
    return out


def count_words(text: str) -> int:
    """lm-eval's word count: ``len(re.split(r"\\s+", text))`` (so leading/trailing whitespace adds a word).

    >>> count_words("two words")
    2
    """
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """UTF-8 byte length (lm-eval ``count_bytes``).

    >>> count_bytes("café")
    5
    """
    return len(text.encode("utf-8"))


def mean_stats(scores: Sequence[float]) -> np.ndarray:
    """Rows ``(score, 1.0)`` of shape (n, 2), float64: sufficient statistics of a mean."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([s, np.ones_like(s)], axis=1)


def mean_value(sums: np.ndarray) -> np.ndarray:
    """``sums[..., 0] / sums[..., 1]`` (NaN where the denominator is 0)."""
    return _ratio(sums)


def perplexity_stats(loglik: Sequence[float], counts: Sequence[int]) -> np.ndarray:
    """Rows ``(loglik, count)`` of shape (n, 2), float64, with ``count`` = :func:`count_words` (word
    perplexity) or :func:`count_bytes` (byte perplexity, bits per byte) of each document."""
    return np.stack([np.asarray(loglik, dtype=np.float64), np.asarray(counts, dtype=np.float64)], axis=1)


def perplexity_value(sums: np.ndarray) -> np.ndarray:
    """lm-eval ``weighted_perplexity``: ``exp(-sum(loglik) / sum(count))``.

    >>> float(perplexity_value(perplexity_stats([-2.0, -4.0], [1, 2]).sum(0)))  # exp(6/3)
    7.38905609893065
    """
    return np.exp(-_ratio(sums))


def bits_per_byte_value(sums: np.ndarray) -> np.ndarray:
    """lm-eval ``bits_per_byte``: ``-sum(loglik) / sum(bytes) / ln 2``.

    >>> float(bits_per_byte_value(np.array([-math.log(2) * 8, 4.0])))
    2.0
    """
    return -_ratio(sums) / math.log(2)


def _ratio(sums: np.ndarray) -> np.ndarray:
    sums = np.asarray(sums, dtype=np.float64)
    den = sums[..., 1]
    return np.divide(sums[..., 0], den, out=np.full(den.shape, np.nan), where=den != 0)
