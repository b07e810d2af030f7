"""harness.demo.lm_train and the causal_lm training spec: a tiny llama built from a config and a byte-level tokenizer
(no hub), a few training steps, adapter / checkpoint reload, loss on the answer tokens only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.demo import lm_train
from harness.demo.lm_train import (RECORD, adapted_lm_dir, answer_loss, arc_pairs, collate, encode_pairs,
                                   train_causal_lm)
from harness.errors import DataError, ModelError, SpecError
from harness.spec.load import load_spec
from harness.spec.training import LmSettings, TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    {"id": "q1", "question": "What colour is the sky?", "choices": {"text": ["green", "blue"], "label": ["A", "B"]},
     "answerKey": "B"},
    {"id": "q2", "question": "What do bees make?", "choices": {"text": ["honey", "milk", "iron"],
                                                              "label": ["1", "2", "3"]}, "answerKey": "1"},
    {"id": "q3", "question": "Which is hot?", "choices": {"text": ["ice", "fire"], "label": ["A", "B"]},
     "answerKey": "B"},
    {"id": "q4", "question": "What is wet?", "choices": {"text": ["water", "sand"], "label": ["A", "B"]},
     "answerKey": "A"},
]


def make_byte_tokenizer(path: Path):
    """A byte-level BPE tokenizer without merges: one token per byte, plus <pad> and <eos> (258 tokens)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(sorted(alphabet) + ["<pad>", "<eos>"])}
    tok = Tokenizer(BPE(vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.save_pretrained(str(path))
    return fast


def make_tiny_llama(path: Path, seed: int = 0) -> Path:
    """A 2-layer llama (hidden 32, 4 query / 2 key-value heads) with random weights and the byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_byte_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    (tmp_path / "arc").mkdir()
    (tmp_path / "arc" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS * 4))
    return tmp_path


def lm_settings(**overrides) -> TrainingSettings:
    opt = {"epochs": 4, "learning_rate": 1e-2, "batch_size": 4, "warmup_ratio": 0.0, "weight_decay": 0.0}
    base = {"task": "causal_lm", "seed": 0, "max_length": 64, "full": dict(opt),
            "lora": dict(opt, r=4, lora_alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]),
            "lm": {"train_file": "arc/train.jsonl"}}
    base.update(overrides)
    return TrainingSettings.model_validate(base)


def test_arc_pairs_use_the_gold_label_position_and_the_lm_eval_format():
    pairs = arc_pairs(ROWS, LmSettings())
    assert pairs[0] == ("Question: What colour is the sky?\nAnswer:", " blue")
    assert pairs[1][1] == " honey"  # answerKey "1" is a label, not a letter offset
    with pytest.raises(DataError, match="ARC format"):
        arc_pairs([{"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "C"}],
                  LmSettings())


def test_encode_pairs_labels_only_the_answer(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    (ids, labels), = encode_pairs(tok, [("Question: sky?\nAnswer:", " blue")], 64)[0]
    answer = [t for t in labels if t != -100]
    assert tok.decode(answer) == " blue"
    assert labels[:len(ids) - len(answer)] == [-100] * (len(ids) - len(answer))
    assert ids[len(ids) - len(answer):] == answer
    # trailing whitespace of the prompt moves to the answer (lm-eval's _encode_pair)
    (_, labels2), = encode_pairs(tok, [("Question: sky?\nAnswer: ", "blue")], 64)[0]
    assert tok.decode([t for t in labels2 if t != -100]) == " blue"
    # too long: prompt tokens go from the left, the answer stays whole; an answer that cannot fit is dropped
    encoded, n_trunc = encode_pairs(tok, [("x" * 50 + "\nAnswer:", " blue"), ("q", " " + "y" * 40)], 16)
    assert n_trunc == 2 and len(encoded) == 1
    ids3, labels3 = encoded[0]
    assert len(ids3) == 16 and tok.decode([t for t in labels3 if t != -100]) == " blue"


def test_collate_left_pads_with_ignored_labels():
    batch = collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_loss_is_the_answer_token_cross_entropy_of_each_unpadded_pair(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    encoded, _ = encode_pairs(tok, arc_pairs(ROWS, LmSettings()), 64)
    loss, n = answer_loss(model, collate(encoded, tok.pad_token_id))
    answer_nll = []
    for ids, labels in encoded:  # each pair alone, unpadded, every position's logits
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        answer_nll += [-torch.log_softmax(logits[pos - 1], -1)[labels[pos]] for pos in range(1, len(ids))
                       if labels[pos] != -100]
    assert n == len(answer_nll) == sum(len(tok(" " + a, add_special_tokens=False)["input_ids"])
                                       for a in ["blue", "honey", "fire", "water"])
    torch.testing.assert_close(loss, torch.stack(answer_nll).mean(), rtol=1e-4, atol=1e-4)


def test_lora_training_lowers_the_loss_and_saves_a_peft_adapter(tiny_llama, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    record = train_causal_lm(tiny_llama, out, lm_settings(), adaptation="lora", data_dir=data_dir, progress=False)
    assert record["epoch_loss"][-1] < record["epoch_loss"][0]
    assert record["n_pairs"] == 16 and record["adaptation"] == "lora"
    assert {"adapter_config.json", "adapter_model.safetensors", RECORD} <= {p.name for p in out.iterdir()}
    assert json.loads((out / RECORD).read_text())["train_sha256"] == record["train_sha256"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    x = torch.tensor([[5, 6, 7, 8]])
    before = base(x).logits
    adapted = PeftModel.from_pretrained(base, out)
    assert not torch.allclose(adapted(x).logits, before)
    assert all(".lora_" in n for n, _ in adapted.named_parameters() if "lora" in n)


def test_lora_last_layers_adapts_only_the_top_blocks(tiny_llama, data_dir, tmp_path):
    from safetensors.torch import load_file

    settings = lm_settings(lora={"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "r": 2, "lora_alpha": 4,
                                 "target_modules": ["q_proj"], "last_layers": 1})
    train_causal_lm(tiny_llama, tmp_path / "top", settings, adaptation="lora", data_dir=data_dir, progress=False)
    names = load_file(tmp_path / "top" / "adapter_model.safetensors")
    assert names and all(".layers.1." in n for n in names)
    with pytest.raises(ValueError, match="last_layers applies only"):
        TrainingSettings.model_validate({"full": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2},
                                         "lora": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2, "r": 2,
                                                  "lora_alpha": 4, "target_modules": ["q"], "last_layers": 1}})


def test_full_training_saves_a_checkpoint_that_reloads(tiny_llama, data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    record = train_causal_lm(tiny_llama, out, lm_settings(), adaptation="full", data_dir=data_dir, progress=False)
    assert record["epoch_loss"][-1] < record["epoch_loss"][0]
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    x = torch.tensor([[5, 6, 7, 8]])
    tuned = AutoModelForCausalLM.from_pretrained(out)(x).logits
    assert not torch.allclose(tuned, AutoModelForCausalLM.from_pretrained(tiny_llama)(x).logits)
    with pytest.raises(Exception, match="exists already"):
        train_causal_lm(tiny_llama, out, lm_settings(), adaptation="full", data_dir=data_dir, progress=False)


def test_training_is_seeded(tiny_llama, data_dir, tmp_path):
    settings = lm_settings(full={"epochs": 1, "learning_rate": 1e-3, "batch_size": 4, "max_train_examples": 8})
    a = train_causal_lm(tiny_llama, tmp_path / "a", settings, adaptation="full", data_dir=data_dir, progress=False)
    b = train_causal_lm(tiny_llama, tmp_path / "b", settings, adaptation="full", data_dir=data_dir, progress=False)
    assert a["epoch_loss"] == b["epoch_loss"] and a["n_pairs"] == 8


def test_adapted_lm_dir_builds_once_then_reuses(tiny_llama, data_dir, monkeypatch):
    settings = lm_settings(lora={"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "r": 2, "lora_alpha": 4,
                                 "target_modules": ["q_proj"]})
    first = adapted_lm_dir(tiny_llama, settings, adaptation="lora", data_dir=data_dir, progress=False)
    assert (first / RECORD).is_file() and first.name.startswith("lora-")

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(lm_train, "train_causal_lm", boom)
    assert adapted_lm_dir(tiny_llama, settings, adaptation="lora", data_dir=data_dir) == first
    other = settings.model_copy(update={"seed": 1})
    with pytest.raises(AssertionError, match="retrained"):
        adapted_lm_dir(tiny_llama, other, adaptation="lora", data_dir=data_dir)


def test_wrong_task_or_adaptation_is_refused(tiny_llama, data_dir, tmp_path):
    classifier = TrainingSettings.model_validate({"full": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2},
                                                  "lora": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2,
                                                           "r": 2, "lora_alpha": 4, "target_modules": ["q"]}})
    with pytest.raises(ValueError, match="causal_lm"):
        train_causal_lm(tiny_llama, tmp_path / "x", classifier, data_dir=data_dir)
    with pytest.raises(ValueError, match="adaptation"):
        train_causal_lm(tiny_llama, tmp_path / "x", lm_settings(), adaptation="dora", data_dir=data_dir)
    with pytest.raises(ModelError, match="reft"):
        train_causal_lm(tiny_llama, tmp_path / "x", lm_settings(), adaptation="reft", data_dir=data_dir)


REFT = {"layers": [0, 1], "positions": "l1", "rank": 2, "epochs": 4, "learning_rate": 2e-2, "batch_size": 4}


def test_reft_training_saves_a_harness_reft_folder_that_loads_on_its_base(tiny_llama, data_dir, tmp_path):
    from harness.models.adapters import load_adapted
    from harness.models.causal_load import load_causal_lm
    from harness.models.reft_io import reft_format

    out = tmp_path / "reft"
    record = train_causal_lm(tiny_llama, out, lm_settings(reft=REFT), adaptation="reft", data_dir=data_dir,
                             progress=False)
    assert record["adaptation"] == "reft" and record["n_pairs"] == 16
    assert record["epoch_loss"][-1] < record["epoch_loss"][0]
    assert record["trainable_parameters"] == 2 * (2 * 2 * 32 + 2)  # R, W (rank x hidden) and b per layer
    assert reft_format(out) == "harness" and (out / RECORD).is_file()
    base = load_causal_lm(tiny_llama, device="cpu")
    adapted = load_adapted(base, out)
    assert adapted.kind == "reft" and adapted.reft.describe().startswith("LoReFT rank 2")
    assert adapted.info["orthogonality_deviation"] < 1e-4  # R was kept orthonormal by the trainer
    cached = adapted_lm_dir(tiny_llama, lm_settings(reft=REFT), adaptation="reft", data_dir=data_dir,
                            progress=False)
    assert cached.name.startswith("reft-") and reft_format(cached) == "harness"


def test_reft_settings_are_checked():
    with pytest.raises(ValueError, match="positions"):
        lm_settings(reft={**REFT, "positions": "last"})
    with pytest.raises(ValueError, match="distinct"):
        lm_settings(reft={**REFT, "layers": [1, 1]})
    with pytest.raises(ValueError, match="reft"):
        TrainingSettings.model_validate({"full": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2},
                                         "lora": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2, "r": 2,
                                                  "lora_alpha": 4, "target_modules": ["q"]}, "reft": REFT})


# --- the training spec -------------------------------------------------------------------------------------------


def test_lm_demo_training_file_validates_with_its_profiles():
    spec = load_spec(ROOT / "suites" / "training-lm-demo.yaml")
    for profile in (None, "quick", "full"):
        settings = spec.resolve(profile)
        assert settings.task == "causal_lm" and settings.lm.train_file == "arc_easy/train.jsonl"
        assert settings.lm.prompt == "Question: {question}\nAnswer:" and settings.lm.target_delimiter == " "
        assert settings.reft is not None and settings.reft.kind == "loreft"
    assert (lm_train.LM_DATA_DIR / spec.lm.train_file).is_file()


@pytest.mark.parametrize("overrides, message", [
    ({"lm": None}, "needs an `lm:` section"),
    ({"probe": {"max_iter": 50}}, "do not apply to task causal_lm"),
    ({"task": "classifier"}, "applies only to task causal_lm"),
    ({"lm": {"prompt": "Q: {q}"}}, "placeholder"),
    ({"lm": {"train_file": "../etc/passwd"}}, "train_file"),
])
def test_causal_lm_settings_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        lm_settings(**overrides)


def test_typo_inside_a_profile_of_an_lm_training_file_is_reported(tmp_path):
    text = (ROOT / "suites" / "training-lm-demo.yaml").read_text().replace(
        "  quick:\n", "  quick:\n    lm:\n      promt: x\n", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"profiles\.quick\.lm\.promt"):
        load_spec(path)
