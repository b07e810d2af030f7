"""Model loading: safetensors only by default, pickle refused (and never executed), corrupt headers refused,
label safety, fingerprints, device selection."""

from __future__ import annotations

import json
import logging
import shutil
import struct

import pytest

from harness.errors import ModelError
from harness.models.load import align_labels, check_safetensors, fingerprint_files, load_model, pick_device


def test_loads_tiny_model(tiny_pair):
    live = load_model(tiny_pair[0], device="cpu")
    assert live.id2label == {0: "negative", 1: "positive"} and not live.model.training
    assert len(live.fingerprint) == 64


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope")


def test_pickle_only_checkpoint_is_refused_and_never_executed(tiny_pair, tmp_path):
    import torch

    d = tmp_path / "pickled"
    shutil.copytree(tiny_pair[0], d)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, d / "pytorch_model.bin")
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_model(d)
    assert not marker.exists()
    # even with --allow-pickle the payload does not run: weights_only=True refuses it
    with pytest.raises(ModelError):
        load_model(d, allow_pickle=True)
    assert not marker.exists()


def _copy_with_weights(src, dst, data: bytes):
    shutil.copytree(src, dst)
    (dst / "model.safetensors").write_bytes(data)
    return dst


def test_truncated_safetensors_is_refused(tiny_pair, tmp_path):
    raw = (tiny_pair[0] / "model.safetensors").read_bytes()
    d = _copy_with_weights(tiny_pair[0], tmp_path / "trunc", raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="truncated|corrupt"):
        load_model(d)


@pytest.mark.parametrize("header", [struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 5) + b"nojso",
                                    b"\x01\x02"])
def test_corrupt_or_oversized_header_is_refused(tmp_path, header):
    f = tmp_path / "model.safetensors"
    f.write_bytes(header)
    with pytest.raises(ModelError, match="corrupt safetensors"):
        check_safetensors(f)


def test_offsets_past_end_are_refused(tmp_path):
    h = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 8)
    with pytest.raises(ModelError, match="truncated"):
        check_safetensors(f)


def test_generic_labels_map_by_position_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cols = align_labels({0: "LABEL_0", 1: "LABEL_1"}, ["negative", "positive"])
    assert cols.tolist() == [0, 1] and "by position" in caplog.text


def test_real_labels_in_another_order_are_an_error_with_the_fix():
    with pytest.raises(ModelError) as e:
        align_labels({0: "positive", 1: "negative"}, ["negative", "positive"])
    msg = str(e.value)
    assert "['positive', 'negative']" in msg and "--label-map" in msg


def test_label_map_maps_explicitly():
    cols = align_labels({0: "POS", 1: "NEG"}, ["negative", "positive"], {"POS": "positive", "NEG": "negative"})
    assert cols.tolist() == [1, 0]


def test_wrong_number_of_labels():
    with pytest.raises(ModelError, match="number of labels"):
        align_labels({0: "a", 1: "b", 2: "c"}, ["negative", "positive"])


def test_fingerprint_memo_and_sensitivity(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    fp1 = fingerprint_files([a])
    assert fingerprint_files([a]) == fp1
    a.write_bytes(b"y" * 100)
    assert fingerprint_files([a]) != fp1


def test_a_models_fingerprint_covers_its_generation_config(tmp_path):
    """Two folders of the same weights and config whose generation_config.json differ (repetition_penalty: generate
    applies it) are different models to the results store; the tokenizer files are left to the split's key."""
    from harness.models.load import model_fingerprint

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text('{"model_type": "llama"}')
    plain = model_fingerprint(folder)
    (folder / "generation_config.json").write_text('{"repetition_penalty": 1.3}')
    with_config = model_fingerprint(folder)
    (folder / "generation_config.json").write_text('{"repetition_penalty": 1.0}')
    other = model_fingerprint(folder)
    assert len({plain, with_config, other}) == 3
    (folder / "tokenizer.json").write_text("{}")
    assert model_fingerprint(folder) == other


def test_device_selection():
    assert pick_device("cpu").type == "cpu"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA"):
            pick_device("cuda")
