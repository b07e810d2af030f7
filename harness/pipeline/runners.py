"""Which model a run loads and which runner serves its suites: a sequence classifier for classification suites,
a causal language model for multiple-choice, generation and perplexity suites (:func:`model_kind`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import SpecError, format_error
from harness.pipeline.common import RunOptions

__all__ = ["load_live", "make_runner", "make_scorer", "causal_scorer_defaults", "unpacked"]


def load_live(model: str | Path, kind: str, opts: RunOptions):
    """Load ``model`` for scoring as ``kind`` (``classification`` or ``causal_lm``).

    Raises
    ------
    ModelError
        A missing or unsafe checkpoint, or one that does not fit the kind (a causal LM where a classifier is
        needed and the reverse: the message names what fits); never a model with randomly initialised weights.
    SpecError
        ``device_map`` set for a classification run.
    """
    # torch-backed stages, imported when a model is loaded: `harness validate`, `gate` and `report` never load torch
    from harness.models.causal_load import load_causal_lm
    from harness.models.load import load_model

    common = dict(dtype=opts.dtype, device=opts.device, allow_pickle=opts.allow_pickle,
                  trust_remote_code=opts.trust_remote_code)
    if kind == "causal_lm":
        return load_causal_lm(model, device_map=opts.device_map, **common)
    if opts.device_map is not None:
        raise SpecError(format_error("--device-map applies to language models only", where="--device-map",
                                     got=f"{opts.device_map} for a classification run",
                                     fix="drop --device-map: sequence classifiers are scored on one device"))
    return load_model(model, **common)


def causal_scorer_defaults(device_type: str) -> dict[str, Any]:
    """Batching of :class:`~harness.models.causal.CausalLMScorer` per device type (issue 20). On a CPU its own
    defaults (512 tokens, 32 rows: a CPU batch takes seconds, so the scoring bars move; measured in its
    docstring). On an accelerator: 32,768 tokens per log-likelihood forward with the row cap out of the way
    (benchmarks/lm_gpu.py, 1.1B llama, bf16, H200: 43.0% model FLOP utilisation at 32,768 vs 42.6% at 16,384 and
    41.6% at 8,192; 32 rows of ~130 tokens would cap a batch at ~4,000), and generation in batches of 64 prompts
    (the KV cache is the ``generation_cache`` setting).

    >>> causal_scorer_defaults("cpu")
    {}
    """
    if device_type == "cpu":
        return {}
    return {"batch_tokens": 32768, "batch_size": 4096, "generation_batch_size": 64}


def make_scorer(live, kind: str, opts: RunOptions):
    """The model-side scorer: :class:`~harness.models.scorer.HFScorer` for classification, else
    :class:`~harness.models.causal.CausalLMScorer` (input length ``opts.max_length`` or the model's)."""
    from harness.models.causal import CausalLMScorer  # torch (see load_live)
    from harness.models.scorer import HFScorer

    if kind == "causal_lm":
        kw: dict[str, Any] = {"max_length": opts.max_length, **causal_scorer_defaults(live.device.type),
                              "generation_cache": None if opts.generation_cache == "dynamic" else "static"}
        if opts.batch_tokens is not None:
            kw["batch_tokens"] = opts.batch_tokens
        if opts.compile:
            from harness.models.scorer import compile_layers

            compile_layers(live.model)
        return CausalLMScorer(live.model, live.tokenizer, **kw)
    return HFScorer.from_settings(live.model, opts)


def unpacked(opts: RunOptions) -> RunOptions:
    """The options for scoring under a ReFT intervention: padded batches only (the interventions find their token
    positions from the 2-D attention mask, which packed batches do not have).

    Raises
    ------
    SpecError
        For ``--packed on``.
    """
    if opts.packed == "on":
        raise SpecError(format_error("--packed on does not apply to a ReFT adaptation", where="--packed",
                                     expected="auto or off", got="on",
                                     fix="drop --packed: interventions need padded batches"))
    return replace(opts, packed="off")


def make_runner(scorer, live, kind: str, opts: RunOptions, columns: np.ndarray | None = None, trunk: Any = None):
    """The runner of a run's requests: :class:`~harness.predict.LMRunner` or
    :class:`~harness.predict.ClassifierRunner` (logit ``columns`` ordered as the suite classes, optional
    frozen-trunk replay)."""
    from harness.predict import ClassifierRunner, LMRunner  # torch (see load_live)

    if kind == "causal_lm":
        return LMRunner(scorer, progress=opts.progress, compiled=opts.compile)
    return ClassifierRunner(scorer, pad_id=int(live.tokenizer.pad_token_id or 0), batch_tokens=opts.batch_tokens,
                            columns=columns, progress=opts.progress, trunk=trunk, compiled=opts.compile)
