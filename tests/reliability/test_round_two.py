"""Issue 17 ("Reliability, round two"): every failure kind found with hostile fixtures, through the CLI.

Items 10-13 (JUnit XML, report at scale, gate semantics, warning noise) are covered by their owners' tests.
Every model here is tiny and built from a config (random weights, seconds); every check asserts the exit code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from _helpers import rewrite_weights
from conftest import WORDS, make_tiny_bert, synth_rows, tiny_bert_config, write_csv, write_tokenizer
from harness.cli import main

FAST = ["--no-report", "--n-resamples", "10", "--no-store"]
LABELS = {0: "negative", 1: "positive"}
SUITE = ("kind: suite\nname: {name}\nrole: {role}\n{extra}source: {{type: local, files: [{file}]}}\n"
         "classes: {classes}\nsplits:\n{splits}max_length: {max_length}\nmetrics: [accuracy]\n")
VAL_TEST = "  - {name: validation, role: validation, fraction: 0.5}\n  - {name: test, role: test, fraction: 0.5}\n"


def _suite(path: Path, file: str, *, name: str, role: str = "id", splits: str = VAL_TEST, max_length: int = 32,
           classes: str = "[negative, positive]") -> Path:
    extra = "shift_type: natural\n" if role == "shift" else ""
    path.write_text(SUITE.format(name=name, role=role, extra=extra, file=file, classes=classes, splits=splits,
                                 max_length=max_length))
    return path


def _lora(model, out: Path, seed: int, zero_b: bool = False, **cfg) -> Path:
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], **cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n and not zero_b:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(str(out))
    return out


def _gpt2_tokenizer(path: Path) -> None:
    """A word-level tokenizer with an EOS token and no pad token (as GPT-2's)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "[UNK]", *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(str(path))


@pytest.fixture(scope="module")
def m(tiny_pair, tmp_path_factory) -> dict[str, Path]:
    """Every model of these tests, by name."""
    from transformers import (BertForSequenceClassification, BertModel, GPT2Config, GPT2ForSequenceClassification,
                              GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM)

    root = tmp_path_factory.mktemp("round-two")
    out = {"base": tiny_pair[0]}
    torch.manual_seed(3)
    BertModel(tiny_bert_config()).save_pretrained(root / "bare")
    write_tokenizer(root / "bare")
    out["bare"] = root / "bare"
    seq = lambda: BertForSequenceClassification.from_pretrained(  # noqa: E731
        str(root / "bare"), num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    out["lora_nohead"] = _lora(seq(), root / "lora-nohead", 1)  # no task_type: the head is not saved
    out["lora_head"] = _lora(seq(), root / "lora-head", 2, task_type="SEQ_CLS", modules_to_save=["classifier"])
    out["lora_headless"] = root / "lora-headless"
    shutil.copytree(out["lora_head"], out["lora_headless"])
    f = out["lora_headless"] / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(str(f)).items() if "classifier" not in k}, str(f),
              metadata={"format": "pt"})
    out["lora_zero"] = _lora(BertForSequenceClassification.from_pretrained(str(tiny_pair[0])), root / "lora-zero", 3,
                             zero_b=True, task_type="SEQ_CLS")
    out["copy"] = Path(shutil.copytree(tiny_pair[0], root / "copy"))
    vocab = len(WORDS) + 2
    gcfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=2,
                      id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, eos_token_id=0, bos_token_id=0)
    lcfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, eos_token_id=0,
                       bos_token_id=0)
    for name, build in (("gpt2lm", lambda: GPT2LMHeadModel(gcfg)), ("llama", lambda: LlamaForCausalLM(lcfg)),
                        ("gpt2cls", lambda: GPT2ForSequenceClassification(gcfg))):
        torch.manual_seed(4)
        build().save_pretrained(root / name)
        _gpt2_tokenizer(root / name)
        out[name] = root / name
    # fp16: logits overflow (weights fit: |w| <= 60000 < 65504), and a weight that overflows only when cast
    out["overflow"] = rewrite_weights(Path(shutil.copytree(tiny_pair[0], root / "overflow")), lambda sd: {
        **sd, "classifier.weight": torch.full_like(sd["classifier.weight"], -30000.0),
        "classifier.bias": torch.tensor([60000.0, 60000.0])})
    out["cast"] = rewrite_weights(Path(shutil.copytree(tiny_pair[0], root / "cast")), lambda sd: {
        **sd, "classifier.weight": torch.full_like(sd["classifier.weight"], 1e5)})
    return out


@pytest.fixture(scope="module")
def s(tiny_suites, tmp_path_factory) -> dict[str, Path]:
    """Suites: ``id``/``shift`` (the tiny ones) and the hostile ones of these tests."""
    root = tmp_path_factory.mktemp("round-two-suites")
    rng_rows = synth_rows(40, 7)
    long_text = " ".join(WORDS) * 2  # about 80 words: longer than the tiny BERT's 64 positions
    write_csv(root / "long.csv", [(f"{long_text} {t}", y) for t, y in rng_rows])
    out = {"id": tiny_suites[0], "shift": tiny_suites[1],
           "long": _suite(root / "long.yaml", "long.csv", name="long", max_length=512)}
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ----------------------------------------------------------------------- 1: random heads never evaluated --

def test_1a_adapter_without_head_on_bare_encoder_is_refused(m, s, tmp_path, capsys):
    """Before: exit 0, the base's random head scored, two runs differ. Now exit 2 naming the tensors and why."""
    for head in ("shared", "adapted"):
        out = tmp_path / head
        assert main(["sweep", "--base", str(m["bare"]), "--adapted", str(m["lora_nohead"]), "--suite", str(s["id"]),
                     "--alphas", "0,1", "--select", "id-only", "--head", head, "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert "initialised at random" in err and "classifier.weight" in err and "does not carry one" in err
        assert not out.exists()
    assert main(["eval", "--model", str(m["bare"]), "--suite", str(s["id"]), "--out", str(tmp_path / "e"),
                 *FAST]) == 2
    assert "no trained classification head" in capsys.readouterr().err


def test_1a_bare_base_with_a_trained_adapter_head(m, s, tmp_path, capsys):
    """--head adapted is the valid use of a bare base: the adapter's head is scored, the base's random head never
    (no own-head base point); --head shared would blend the random head: refused, pointing to --head adapted."""
    out = tmp_path / "ok"
    assert main(["sweep", "--base", str(m["bare"]), "--adapted", str(m["lora_head"]), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--head", "adapted", "--out", str(out), *FAST]) == 0
    assert {p["label"] for p in _summary(out)["points"]} >= {"base backbone + adapted head"}
    assert "base model (its own head)" not in {p["label"] for p in _summary(out)["points"]}
    capsys.readouterr()
    assert main(["sweep", "--base", str(m["bare"]), "--adapted", str(m["lora_head"]), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--out", str(tmp_path / "shared"), *FAST]) == 2
    assert "--head adapted" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpt2lm", "llama"])
@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_1b_causal_lm_in_a_classification_suite_is_refused(m, s, tmp_path, capsys, name, quiet):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(m[name]), "--suite", str(s["id"]), "--out", str(out), *FAST, *quiet]) == 2
    err = capsys.readouterr().err
    assert "causal language model" in err and "sequence classifier" in err and "task: multiple_choice" in err
    assert "score.weight" in err and not out.exists()


def test_1c_adapter_missing_its_head_tensors_blames_the_adapter(m, s, tmp_path, capsys):
    assert main(["sweep", "--base", str(m["bare"]), "--adapted", str(m["lora_headless"]), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--head", "adapted", "--out", str(tmp_path / "r"),
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "adapter is broken" in err and "modules_to_save" in err and "classifier.weight" in err
    assert str(m["lora_headless"]) in err and "check that --base" not in err


# ------------------------------------------------------------------- 2, 3: position table and pad token --

def test_2_max_length_above_position_table_is_capped(m, s, tmp_path, caplog):
    """Before: exit 3 (tensor size error). Now: capped at 64 positions, every row counted as truncated, noted."""
    out = tmp_path / "run"
    assert main(["eval", "--model", str(m["base"]), "--suite", str(s["long"]), "--out", str(out), *FAST]) == 0
    assert "exceeds the model's 64 positions" in caplog.text
    summary = _summary(out)
    entries = summary["results"]["model"]["long"]
    assert sum(e["n_truncated"] for e in entries.values()) == sum(e["n"] for e in entries.values()) > 0
    assert any("max_length 512" in n for n in summary["notes"])


def test_3_no_pad_token_pads_with_eos(m, s, tmp_path, capsys):
    """Before: exit 3 (transformers: no padding token). Now: EOS pads (config.pad_token_id too, so last-token
    pooling finds the last real token): predictions do not depend on the batch size, i.e. on the padding."""
    runs = []
    for bt in ("16", "4096"):
        out = tmp_path / bt
        assert main(["eval", "--model", str(m["gpt2cls"]), "--suite", str(s["id"]), "--out", str(out),
                     "--batch-tokens", bt, *FAST]) == 0
        runs.append(pd.read_parquet(out / "predictions.parquet").sort_values(["split", "example_id"]))
        assert any("padding with the EOS token" in n for n in _summary(out)["notes"])
    a, b = (torch.tensor(list(r["logits"])) for r in runs)
    assert torch.allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------- 4: non-finite outputs --

def test_4_fp16_overflow_is_counted_and_noted_in_eval(m, s, tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(m["overflow"]), "--suite", str(s["id"]), "--dtype", "fp16", "--out",
                 str(out), *FAST]) == 0
    assert "non-finite logits" in caplog.text
    summary = _summary(out)
    for entry in summary["results"]["model"]["tiny-id"].values():
        assert entry["n_nonfinite"] == entry["n"] and entry["metrics"]["accuracy"]["value"] is None
    assert any("bf16 or fp32" in n for n in summary["notes"])


def test_4_sweep_never_selects_a_nan_alpha_and_never_crashes(m, s, tmp_path, capsys):
    """Before: exit 3 inside selection. Now the NaN point is infeasible with a note; all-NaN is exit 2."""
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["overflow"]), "--suite", str(s["id"]),
                 str(s["shift"]), "--alphas", "0,0.5,1", "--dtype", "fp16", "--out", str(out), *FAST]) == 0
    sel = _summary(out)["selection"]
    assert sel["feasible"]["adapted"] is False and sel["chosen_point"] != "adapted"
    assert any("never chosen" in n for n in _summary(out)["notes"])
    capsys.readouterr()
    assert main(["sweep", "--base", str(m["overflow"]), "--adapted", str(m["overflow"]), "--suite", str(s["id"]),
                 str(s["shift"]), "--alphas", "0,1", "--dtype", "fp16", "--out", str(tmp_path / "all"), *FAST]) == 2
    assert "every alpha has NaN" in capsys.readouterr().err


def test_4_weight_overflowing_only_in_the_cast_blames_the_cast(m, s, tmp_path, capsys):
    assert main(["eval", "--model", str(m["cast"]), "--suite", str(s["id"]), "--dtype", "fp16", "--out",
                 str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "overflow when cast to float16" in err and "not the checkpoint" in err and "--dtype bf16" in err
    assert main(["eval", "--model", str(m["cast"]), "--suite", str(s["id"]), "--out", str(tmp_path / "fp32"),
                 *FAST]) == 0  # the checkpoint itself is fine


# ------------------------------------------------------------------------ 5: adapted identical to base --

@pytest.mark.parametrize("adapted", ["copy", "lora_zero"])
def test_5_adapted_identical_to_base_is_noted(m, s, tmp_path, caplog, adapted):
    out = tmp_path / "run"
    report = [] if adapted == "copy" else ["--no-report"]
    args = ["sweep", "--base", str(m["base"]), "--adapted", str(m[adapted]), "--suite", str(s["id"]), "--alphas",
            "0,1", "--select", "id-only", "--out", str(out), "--n-resamples", "10", "--no-store", *report]
    assert main(args) == 0
    assert "identical to the base" in caplog.text
    assert any("identical to the base" in n for n in _summary(out)["notes"])
    if not report:
        assert "identical to the base" in (out / "report.md").read_text()


# -------------------------------------------------------------------------- 6: alpha rewrites are said --

def test_6_alpha_rewrites_are_noted_and_recorded(m, s, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                 "--alphas", "0.5,0.2,0.5,0.50000001", "--select", "id-only", "--out", str(out), *FAST]) == 0
    err = caplog.text
    notes = _summary(out)["notes"]
    for needle in ("0.5 is given twice", "0.50000001 is kept to 6 decimals: 0.5 (already in the list)",
                   "0 and 1 added", "sorted", "alphas evaluated: 0, 0.2, 0.5, 1"):
        assert any(needle in n for n in notes), needle
        assert needle in err
    assert sorted(p["alpha"] for p in _summary(out)["points"]) == [0.0, 0.2, 0.5, 1.0]
    assert "hidden by --quiet" not in capsys.readouterr().err
    # --quiet hides the notes' log lines (WARNING < ERROR); one stderr line still counts them
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                 "--alphas", "0.5,0.2,0.5,0.50000001", "--select", "id-only", "--out", str(tmp_path / "q"), *FAST,
                 "--quiet"]) == 0
    printed = capsys.readouterr()
    assert f"{len(notes)} notes hidden by --quiet (in summary.json's notes and the report" in printed.err
    assert "per point" not in printed.out and "chosen alpha: 0" in printed.out
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                 "--alphas", "", "--out", str(tmp_path / "empty"), *FAST]) == 2
    assert "list of alphas is empty" in capsys.readouterr().err
    for alphas in ("0,,1", "0,0.5,"):  # LM user trial: an empty item was dropped silently
        assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                     "--alphas", alphas, "--out", str(tmp_path / "gap"), *FAST]) == 2
        assert "the list of alphas has an empty item" in capsys.readouterr().err


def test_6_blend_refuses_an_alpha_it_would_round(m, tmp_path, capsys):
    out = tmp_path / "blend"
    assert main(["blend", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--alpha", "1e-7", "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "more decimals" in err and "the base itself" in err and not out.exists()
    assert main(["blend", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--alpha", "0.25", "--out",
                 str(out)]) == 0
    assert "alpha=0.25" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["harness_blend"]["alpha"] == 0.25


# ------------------------------------------------------------------ 7: one label rule for every format --

def test_7_integer_class_names_read_the_same_from_csv_and_jsonl(tmp_path, capsys):
    """Classes "1","2","3": before, CSV "1" was the class "1" and JSON 1 the index 1 (class "2")."""
    model = make_tiny_bert(tmp_path / "m3", seed=5, num_labels=3, id2label={0: "1", 1: "2", 2: "3"})
    rows = [{"text": f"good movie {w}", "label": i % 3 + 1} for i, w in enumerate(WORDS * 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = {}
    for ext in ("csv", "jsonl"):
        suite = _suite(tmp_path / f"{ext}.yaml", f"l.{ext}", name=f"l-{ext}", classes="['1', '2', '3']")
        out = tmp_path / ext
        assert main(["eval", "--model", str(model), "--suite", str(suite), "--out", str(out), *FAST]) == 0
        acc[ext] = {k: v["metrics"]["accuracy"]["value"]
                    for k, v in _summary(out)["results"]["model"][f"l-{ext}"].items()}
    assert acc["csv"] == acc["jsonl"]
    # 0-based integers with integer-like class names are ambiguous: exit 2 asking for a label_map
    (tmp_path / "z.jsonl").write_text("".join(json.dumps({**r, "label": r["label"] - 1}) + "\n" for r in rows))
    suite = _suite(tmp_path / "z.yaml", "z.jsonl", name="z", classes="['1', '2', '3']")
    assert main(["eval", "--model", str(model), "--suite", str(suite), "--out", str(tmp_path / "z"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "label_map" in err and "never as 0-based indices" in err


# ------------------------------------------------------------------------------------ 8: split overlap --

def test_8_overlap_between_splits_is_counted_and_noted(m, tmp_path, caplog):
    rows = synth_rows(60, 11)
    write_csv(tmp_path / "train.csv", [(f"train row {i} {t}", y) for i, (t, y) in enumerate(rows)])
    write_csv(tmp_path / "eval.csv", [(f"eval row {i} {t}", y) for i, (t, y) in enumerate(rows[:30])])
    # the shift file holds 10 train rows (other case and punctuation: the same normalised text) and 10 new rows
    shifted = [(f"TRAIN row {i}, {t}!", y) for i, (t, y) in enumerate(rows[:10])]
    write_csv(tmp_path / "shift.csv", shifted + [(f"shift row {i} {t}", y) for i, (t, y) in enumerate(rows[:10])])
    splits = ("  - {name: train, role: train, files: [train.csv]}\n"
              "  - {name: validation, role: validation, files: [eval.csv]}\n"
              "  - {name: test, role: test, files: [eval.csv]}\n")  # validation and test read the same file
    id_suite = _suite(tmp_path / "id.yaml", "train.csv", name="ov-id", splits=splits)
    shift = _suite(tmp_path / "shift.yaml", "shift.csv", name="ov-shift", role="shift",
                   splits="  - {name: test, role: test}\n")
    out = tmp_path / "run"
    assert main(["eval", "--model", str(m["base"]), "--suite", str(id_suite), str(shift), "--out", str(out),
                 *FAST]) == 0
    assert "overlap:" in caplog.text
    summary = _summary(out)
    by_pair = {(e["a"], e["b"]): e for e in summary["overlap"]}
    assert by_pair[("ov-id/validation", "ov-id/test")]["by_id"] == 30
    assert by_pair[("ov-id/validation", "ov-id/test")]["by_text"] == 30
    assert by_pair[("ov-id/train", "ov-shift/test")]["by_text"] == 10
    assert by_pair[("ov-id/train", "ov-shift/test")]["by_id"] is None  # ids of different files mean nothing
    assert by_pair[("ov-id/train", "ov-id/test")]["by_text"] == 0
    assert sum("overlap:" in n for n in summary["notes"]) == 2


# ------------------------------------------------------------------------------- 9: missing files named --

def test_9_missing_files_are_named(m, s, tmp_path, capsys):
    no_config = Path(shutil.copytree(m["base"], tmp_path / "no-config"))
    (no_config / "config.json").unlink()
    assert main(["eval", "--model", str(no_config), "--suite", str(s["id"]), "--out", str(tmp_path / "a"),
                 *FAST]) == 2
    assert "no config.json" in capsys.readouterr().err
    no_adapter_cfg = Path(shutil.copytree(m["lora_zero"], tmp_path / "no-adapter-config"))
    (no_adapter_cfg / "adapter_config.json").unlink()
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(no_adapter_cfg), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--out", str(tmp_path / "b"), *FAST]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err


def test_9_missing_baseline_folder_is_an_error_even_unused(m, s, tmp_path, capsys):
    missing = tmp_path / "no-such-baseline"
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--baseline", str(missing), "--out", str(out),
                 *FAST]) == 2
    assert "--baseline run directory does not exist" in capsys.readouterr().err and not out.exists()
    assert main(["sweep", "--base", str(m["base"]), "--adapted", str(m["copy"]), "--suite", str(s["id"]),
                 "--alphas", "0,1", "--select", "id-only", "--out", str(out), *FAST]) == 0
    policy = Path(__file__).resolve().parents[2] / "suites" / "policies" / "demo.yaml"
    assert main(["gate", str(out), "--policy", str(policy), "--baseline", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # CI trial: a run's summary.json given for the run folder was said not to exist
    assert main(["gate", str(out), "--policy", str(policy), "--baseline", str(out / "summary.json")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and f"pass the folder that holds it ({out})" in err


@pytest.mark.parametrize("policy", ["max-shift-within-id", "weighted", "id-only"])
@pytest.mark.parametrize("nan_first", [True, False])
def test_4_selection_never_picks_nan_under_any_policy(policy, nan_first):
    """The pure rule behind the sweep test: NaN anywhere (ID or shift, first alpha or not) is infeasible."""
    from harness.errors import MetricError
    from harness.sweep import SelectionPolicy, select_alpha

    nan = float("nan")
    id_score = {0.0: nan, 0.5: 0.6, 1.0: 0.7} if nan_first else {0.0: 0.6, 0.5: 0.7, 1.0: nan}
    shift = {0.0: 0.5, 0.5: 0.5, 1.0: nan} if nan_first else {0.0: nan, 0.5: 0.4, 1.0: 0.9}
    sel = select_alpha(id_score, shift, SelectionPolicy(name=policy), ["v"])
    bad = [a for a in id_score if id_score[a] != id_score[a] or (policy != "id-only" and shift[a] != shift[a])]
    assert all(not sel.feasible[a] for a in bad) and sel.chosen_alpha not in bad
    with pytest.raises(MetricError, match="every alpha has NaN"):
        select_alpha({0.0: nan, 1.0: nan}, {0.0: nan, 1.0: nan}, SelectionPolicy(name=policy), ["v"])
