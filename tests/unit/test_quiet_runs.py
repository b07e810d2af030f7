"""Issue 17 item 13: an ordinary run prints no library warning on stderr. peft 0.21 triggers transformers'
``is_gradient_checkpointing`` FutureWarning on every adapter it loads; the harness silences that one message at
the load (and nothing else)."""

from __future__ import annotations

import warnings

import pytest
from _models import make_lora_adapter

from harness.models.adapters import load_adapted, quiet_peft_deprecations
from harness.models.load import load_model


def test_loading_a_lora_adapter_warns_nothing(tiny_pair, tmp_path):
    with quiet_peft_deprecations():  # building the fixture warns too
        adapter = make_lora_adapter(tiny_pair[0], tmp_path / "lora", seed=1)
    base = load_model(tiny_pair[0], device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (FutureWarning from peft/transformers included) fails
        adapted = load_adapted(base, adapter)
    assert adapted.kind == "lora"


def test_only_that_message_is_silenced():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_peft_deprecations():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else"]


def test_the_silenced_warning_still_exists_upstream(tiny_pair):
    """If transformers drops the deprecation, this test says the filter can go."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_pair[0]))
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        getattr(model, "is_gradient_checkpointing")
