"""Issue 7, part 3 (last class): a checkpoint that ships its own code (``auto_map`` in config.json pointing at a
module file beside it) needs ``--trust-remote-code``; without it nothing of that code runs and the error names the
flag. Loading it (trusted) must not change how a later stock checkpoint loads in the same process: the
AutoConfig/AutoModel registries stay clean and the stock model scores exactly as before.

The dynamic-module cache of transformers is redirected to a temporary folder, and sys.path / sys.modules are
restored afterwards, so nothing leaks into other tests.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

from harness.cli import main

FAST = ["--no-report", "--quiet", "--n-resamples", "10", "--no-store"]

CODE = '''
import pathlib
from transformers import BertConfig, BertForSequenceClassification

pathlib.Path({marker!r}).write_text("remote code ran")


class RelRemoteConfig(BertConfig):
    model_type = "rel_remote"


class RelRemoteForSequenceClassification(BertForSequenceClassification):
    config_class = RelRemoteConfig
'''

# a custom model class on a *stock* config (model_type bert): the case most likely to hijack later bert loads
STOCK_CONFIG_CODE = '''
import pathlib
import torch
from transformers import BertForSequenceClassification

pathlib.Path({marker!r}).write_text("remote code ran")


class HijackForSequenceClassification(BertForSequenceClassification):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = torch.zeros_like(out.logits)
        return out
'''


def _remote_checkpoint(src: Path, dst: Path, marker: Path, *, stock_config: bool) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    if stock_config:
        (dst / "hijack_code.py").write_text(STOCK_CONFIG_CODE.format(marker=str(marker)))
        cfg["auto_map"] = {"AutoModelForSequenceClassification": "hijack_code.HijackForSequenceClassification"}
        cfg["architectures"] = ["HijackForSequenceClassification"]
    else:
        (dst / "rel_remote_code.py").write_text(CODE.format(marker=str(marker)))
        cfg["model_type"] = "rel_remote"
        cfg["auto_map"] = {"AutoConfig": "rel_remote_code.RelRemoteConfig",
                           "AutoModelForSequenceClassification": "rel_remote_code.RelRemoteForSequenceClassification"}
        cfg["architectures"] = ["RelRemoteForSequenceClassification"]
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


@pytest.fixture
def isolated_modules_cache(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("transformers_modules"):
            del sys.modules[name]


def _registries_clean() -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert CONFIG_MAPPING["bert"] is BertConfig
    assert "rel_remote" not in CONFIG_MAPPING._extra_content
    mapping = AutoModelForSequenceClassification._model_mapping
    hijacked = {k: v for k, v in mapping._extra_content.items()
                if getattr(k, "__module__", "").startswith("transformers.")}
    assert not hijacked, hijacked
    assert mapping[BertConfig].__module__.startswith("transformers.models.bert")
    assert type(AutoConfig.for_model("bert")) is BertConfig


def _stock_eval(model: Path, suite: Path, out: Path) -> dict:
    assert main(["eval", "--model", str(model), "--suite", str(suite), "--out", str(out), *FAST]) == 0
    return json.loads((out / "summary.json").read_text())["results"]


@pytest.mark.parametrize("stock_config", [False, True], ids=["custom_config", "stock_config_custom_class"])
def test_remote_code_needs_the_flag_and_does_not_change_later_stock_loads(tiny_pair, tiny_suites, tmp_path, capsys,
                                                                          caplog, isolated_modules_cache,
                                                                          stock_config):
    from transformers import BertForSequenceClassification

    from harness.models.load import load_model

    marker = tmp_path / "remote-code-ran"
    remote = _remote_checkpoint(tiny_pair[0], tmp_path / "remote", marker, stock_config=stock_config)
    suite = tiny_suites[0]
    before = _stock_eval(tiny_pair[0], suite, tmp_path / "stock-before")

    caplog.set_level(logging.WARNING, logger="harness.models.load")
    code = main(["eval", "--model", str(remote), "--suite", str(suite), "--out", str(tmp_path / "r0"), *FAST])
    err = capsys.readouterr().err
    if stock_config:
        # transformers prefers its own class for a stock model_type: the shipped code is not run (and harness
        # says so); the checkpoint is scored as the stock architecture
        assert code == 0 and "--trust-remote-code" in caplog.text
    else:
        assert code == 2 and "--trust-remote-code" in err and "Traceback" not in err
        assert not (tmp_path / "r0").exists()
    assert not marker.exists()  # nothing of the checkpoint's code ran

    assert main(["eval", "--model", str(remote), "--suite", str(suite), "--out", str(tmp_path / "r1"), *FAST,
                 "--trust-remote-code"]) == 0
    assert marker.exists()  # now it did, as asked
    trusted = load_model(remote, device="cpu", trust_remote_code=True).model
    assert type(trusted).__name__ != "BertForSequenceClassification"

    _registries_clean()
    stock = load_model(tiny_pair[0], device="cpu").model
    assert type(stock) is BertForSequenceClassification
    after = _stock_eval(tiny_pair[0], suite, tmp_path / "stock-after")
    assert after == before
