"""Token-level request building for causal-LM scoring, pure Python (no torch): lm-eval 0.4.13's rules.

* :func:`rolling_windows` splits a document's tokens into ``(context, continuation)`` windows exactly as
  ``lm_eval.utils.get_rolling_token_windows`` + ``make_disjoint_window`` do (``context_len=1`` when
  ``stride is None``), so summing the windows' log-likelihoods gives ``HFLM.loglikelihood_rolling``.
* :func:`model_input` is HFLM's left truncation of ``context + continuation`` to the model's length.

Source: ``lm_eval/utils.py`` (get_rolling_token_windows, make_disjoint_window) and
``lm_eval/models/huggingface.py`` (``_loglikelihood_tokens``), lm-eval 0.4.13.
"""

from __future__ import annotations

from harness.errors import ModelError

__all__ = ["rolling_windows", "model_input"]


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int,
                    stride: int | None = None) -> list[tuple[list[int], list[int]]]:
    """Disjoint ``(context, continuation)`` windows that score every token of ``tokens`` exactly once.

    Parameters
    ----------
    tokens : list of int
        The document's tokens (every one is predicted).
    prefix_token : int
        Conditions the first token (lm-eval: the BOS id, else EOS).
    max_length : int
        Model input length in tokens (>= 1).
    stride : int, default=None
        Tokens predicted per window after the first. ``None`` reproduces lm-eval (``stride = max_length``: windows
        do not overlap, each later window conditions on one token of the previous one). A smaller stride gives
        every token after the first window at least ``max_length - stride + 1`` tokens of context
        (``context_len = max_length - stride + 1`` in lm-eval's terms). The first window always predicts the
        first ``max_length`` tokens.

    Returns
    -------
    list of (context, continuation)
        Each ``len(context) + len(continuation) - 1 <= max_length``; the continuations concatenate to ``tokens``.

    Raises
    ------
    ModelError
        If ``max_length < 1`` or ``stride`` is outside ``[1, max_length]``.

    Examples
    --------
    >>> rolling_windows([1, 2, 3, 4, 5], prefix_token=0, max_length=2)
    [([0], [1, 2]), ([2], [3, 4]), ([3, 4], [5])]
    >>> rolling_windows([1, 2, 3, 4], prefix_token=0, max_length=3, stride=1)
    [([0], [1, 2, 3]), ([1, 2, 3], [4])]
    """
    if max_length < 1:
        raise ModelError(f"max_length must be >= 1; got {max_length}")
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ModelError(f"stride must be in [1, max_length={max_length}]; got {stride}")
    if not tokens:
        return []
    context_len = max_length - stride + 1
    pred_len = max_length - context_len + 1
    first = min(max_length, len(tokens))
    windows = [([prefix_token] + tokens[:first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n_pred = min(len(tokens) - predicted, pred_len)
        end = predicted + n_pred
        windows.append((tokens[max(end - max_length - 1, 0):end - 1], tokens[end - n_pred:end]))
        predicted += n_pred
    # make_disjoint_window: drop the context tokens that are also predicted
    return [(ctx[:len(ctx) - (len(cont) - 1)], cont) for ctx, cont in windows]


def model_input(context: list[int], continuation: list[int], max_length: int) -> list[int]:
    """The tokens HFLM feeds the model for one request: ``(context + continuation)[-(max_length + 1):][:-1]``.

    The last continuation token is never an input; left truncation keeps the whole continuation as long as it
    has at most ``max_length`` tokens.

    Raises
    ------
    ModelError
        If the context or continuation is empty, or the continuation is longer than ``max_length`` tokens.
    """
    if not context or not continuation:
        raise ModelError(f"context and continuation must both have tokens; got {len(context)} and "
                         f"{len(continuation)}")
    if len(continuation) > max_length:
        raise ModelError(f"a continuation of {len(continuation)} tokens does not fit the model's {max_length} "
                         "positions; shorten the choice or target text")
    return (context + continuation)[-(max_length + 1):][:-1]
