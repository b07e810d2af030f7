"""Issue 7, part 3: known failure classes from the field, reproduced on tiny models through the real entry points.

Already covered elsewhere and only referenced here:

* adapter tensors that match no module / adapter files lacking tensors:
  tests/unit/test_adapters.py::test_adapter_tensor_matching_no_module_is_an_error,
  tests/unit/test_adapters.py::test_adapter_missing_tensors_is_an_error;
* rsLoRA scaling and LoRA bias terms, alpha = 1 equal to the adapter-applied PEFT model:
  tests/unit/test_adapters.py::test_alpha_one_equals_the_peft_model_and_alpha_zero_the_base (lora with
  bias="lora_only", bias="all", rslora, dora), ::test_lora_blend_scales_the_update_by_alpha,
  ::test_head_and_biases_are_interpolated_as_weights;
* wrapper prefix in state dicts given to interpolate: tests/unit/test_blend.py::test_wrapper_prefix_gets_a_hint;
* resized vocabulary in interpolate: tests/unit/test_blend.py::test_resized_vocabulary_is_explained;
* CSV literal "NA"/"null" and on_missing_text at the loader: tests/unit/test_data_sources.py (test_csv_literal_na_
  and_null_are_text, test_missing_text_*), label mapping: ::test_string_labels_through_label_map,
  ::test_int_labels_and_int_label_map_keys, ::test_bad_labels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from _helpers import copy_model, leftovers, make_lora_adapter, rewrite_weights
from conftest import synth_rows
from harness.cli import main
from harness.errors import ModelError
from harness.models.load import load_model

FAST = ["--no-report", "--quiet", "--n-resamples", "10", "--no-store"]
WRAPPERS = ["module.", "base_model.model.", "_orig_mod."]


_rewrite = rewrite_weights


@pytest.fixture(scope="module")
def ckpts(tiny_pair, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("failure-classes")
    out: dict[str, Path] = {}
    for prefix in WRAPPERS:
        d = copy_model(tiny_pair[1], root / f"wrapped-{prefix.strip('.').replace('.', '-')}")
        out[prefix] = _rewrite(d, lambda sd, p=prefix: {p + k: v for k, v in sd.items()})
    out["no_layer"] = _rewrite(copy_model(tiny_pair[1], root / "no-layer"),
                               lambda sd: {k: v for k, v in sd.items() if ".layer.1." not in k})
    out["no_head"] = _rewrite(copy_model(tiny_pair[1], root / "no-head"),
                              lambda sd: {k: v for k, v in sd.items() if not k.startswith("classifier.")})
    out["extra"] = _rewrite(copy_model(tiny_pair[1], root / "extra"),
                            lambda sd: {**sd, "cls.predictions.bias": torch.zeros(3)})
    return out


# ------------------------------------------------------------------------------------ wrapper prefixes --

@pytest.mark.parametrize("prefix", WRAPPERS)
def test_wrapped_full_checkpoint_is_refused_as_model_and_as_adapted(ckpts, tiny_pair, tiny_suites, tmp_path, capsys,
                                                                    prefix):
    """transformers 5 loads such a checkpoint with every tensor "unexpected", the model randomly initialised, and
    only a log line; the harness must refuse it, naming the prefix."""
    out = tmp_path / "run"
    assert main(["eval", "--model", str(ckpts[prefix]), "--suite", str(tiny_suites[0]), "--out", str(out),
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert f"wrapper prefix {prefix!r}" in err and "fix:" in err
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(ckpts[prefix]), "--suite",
                 str(tiny_suites[0]), "--alphas", "0,1", "--select", "id-only", "--out", str(out), *FAST]) == 2
    assert f"wrapper prefix {prefix!r}" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


def test_checkpoint_missing_backbone_tensors_is_refused(ckpts):
    with pytest.raises(ModelError, match=r"(?s)does not hold the model's weights.*layer\.1\."):
        load_model(ckpts["no_layer"], device="cpu")


def test_missing_head_only_warns_and_extra_tensors_are_ignored(ckpts, tiny_pair, caplog):
    """A bare encoder (no classifier) is a valid base for --head adapted: warned, not refused. Extra tensors
    (e.g. a pretraining head) are ignored with a warning, and the real weights are the ones loaded."""
    with caplog.at_level(logging.WARNING, logger="harness.models.load"):
        load_model(ckpts["no_head"], device="cpu")
    assert "no classification head" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness.models.load"):
        lm = load_model(ckpts["extra"], device="cpu")
    assert "cls.predictions.bias" in caplog.text
    want = load_file(str(tiny_pair[1] / "model.safetensors"))
    got = lm.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_adapter_with_wrapper_prefixed_keys_is_refused(tiny_pair, tiny_suites, tmp_path, capsys):
    """The adapter side of the same failure class: every tensor of the adapter file under an extra prefix."""
    adapter = make_lora_adapter(tiny_pair[0], tmp_path / "lora")
    f = adapter / "adapter_model.safetensors"
    save_file({"module." + k: v for k, v in load_file(str(f)).items()}, str(f), metadata={"format": "pt"})
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(adapter), "--suite", str(tiny_suites[0]),
                 "--alphas", "0,1", "--select", "id-only", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    # peft itself fails on the modules_to_save head (a KeyError naming the unprefixed key); otherwise the strict
    # check in harness.models.adapters reports the unmatched tensors: either way a loud exit 2, nothing written
    assert "Traceback" not in err and ("match no module" in err or "cannot apply the adapter" in err), err
    assert not out.exists()


# ---------------------------------------------------------------------------------- resized vocabulary --

def _resized(src: Path, dst: Path, *, new_tokens: int = 0, rows: int | None = None) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(src))
    tok = AutoTokenizer.from_pretrained(str(src))
    if new_tokens:
        tok.add_tokens([f"newword{i}" for i in range(new_tokens)])
    model.resize_token_embeddings(rows or len(tok))
    model.save_pretrained(str(dst))
    tok.save_pretrained(str(dst))
    return dst


@pytest.mark.parametrize("new_tokens", [0, 3], ids=["padded_rows_same_tokenizer", "added_tokens"])
def test_vocabulary_resized_adapted_model_names_both_sizes(tiny_pair, tiny_suites, tmp_path, capsys, new_tokens):
    base_rows = load_file(str(tiny_pair[0] / "model.safetensors"))["bert.embeddings.word_embeddings.weight"].shape[0]
    rows = base_rows + 6 if not new_tokens else None
    adapted = _resized(tiny_pair[1], tmp_path / "resized", new_tokens=new_tokens, rows=rows)
    out = tmp_path / "run"
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(adapted), "--suite", str(tiny_suites[0]),
                 "--alphas", "0,0.5,1", "--select", "id-only", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    if new_tokens:
        from transformers import AutoTokenizer

        n_base = len(AutoTokenizer.from_pretrained(str(tiny_pair[0])))
        assert "different tokenizers" in err and f"{n_base} tokens" in err and f"{n_base + 3} tokens" in err
    else:
        assert f"base {base_rows} rows, adapted {base_rows + 6}" in err
        # `harness blend` (issue 15) blends the shared rows and keeps the added rows of a fine-tune whose tokenizer
        # extends the base's, and says so
        assert main(["blend", "--base", str(tiny_pair[0]), "--adapted", str(adapted), "--alpha", "0.5",
                     "--out", str(tmp_path / "blend"), "--quiet"]) == 0
        notes = json.loads((tmp_path / "blend" / "config.json").read_text())["harness_blend"]["notes"]
        assert f"base {base_rows} rows, fine-tune {base_rows + 6}" in notes[0]
        n = len(notes)
        assert f"{n} note{'s' if n > 1 else ''} hidden by --quiet (in the blend's config.json" in capsys.readouterr().err
        written = load_file(str(tmp_path / "blend" / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
        assert written.shape[0] == base_rows + 6
    assert not out.exists()


def test_tokenizer_larger_than_the_embedding_table_is_refused(tiny_pair, tiny_suites, tmp_path, capsys):
    """Tokens were added to the tokenizer but the embeddings were not resized: the new ids would index past the
    embedding table (an IndexError deep in the forward pass); refused at load time with both sizes."""
    from transformers import AutoTokenizer

    d = copy_model(tiny_pair[0], tmp_path / "grown-tokenizer")
    tok = AutoTokenizer.from_pretrained(str(d))
    rows = load_file(str(d / "model.safetensors"))["bert.embeddings.word_embeddings.weight"].shape[0]
    tok.add_tokens([f"newword{i}" for i in range(rows - len(tok) + 5)])
    tok.save_pretrained(str(d))
    assert main(["eval", "--model", str(d), "--suite", str(tiny_suites[0]), *FAST]) == 2
    err = capsys.readouterr().err
    assert "more tokens than the model has embedding rows" in err and f"at most {rows} tokens" in err


# ------------------------------------------------------------------------------------ string/int labels --

def _label_suite(folder: Path, name: str, labels: list, label_map: dict | None) -> Path:
    rows = synth_rows(60, 11)
    pd.DataFrame({"text": [t for t, _ in rows], "label": labels}).to_csv(folder / f"{name}.csv", index=False)
    lm = f"label_map: {json.dumps(label_map)}\n" if label_map else ""
    (folder / f"{name}.yaml").write_text(
        f"kind: suite\nname: {name}\nrole: id\nsource: {{type: local, files: [{name}.csv]}}\n"
        f"classes: [negative, positive]\n{lm}splits:\n  - {{name: test, role: test}}\nmax_length: 32\n"
        "metrics: [accuracy, nll]\n")
    return folder / f"{name}.yaml"


def test_string_and_int_labels_give_the_same_evaluation(tiny_pair, tmp_path):
    gold = [y for _, y in synth_rows(60, 11)]
    variants = {
        "ints": ([int(y) for y in gold], None),
        "names": (["positive" if y else "negative" for y in gold], None),
        "posneg": (["pos" if y else "neg" for y in gold], {"pos": "positive", "neg": "negative"}),
        "intmap": ([str(1 - y) for y in gold], {1: "negative", 0: "positive"}),  # inverted codes, mapped back
    }
    summaries, labels = {}, {}
    for name, (col, lmap) in variants.items():
        suite = _label_suite(tmp_path, name, col, lmap)
        out = tmp_path / f"run-{name}"
        assert main(["eval", "--model", str(tiny_pair[0]), "--suite", str(suite), "--out", str(out), *FAST]) == 0
        s = json.loads((out / "summary.json").read_text())
        summaries[name] = s["results"]["model"][name]["test"]["metrics"]
        labels[name] = pd.read_parquet(out / "predictions.parquet")["label"].tolist()
    assert labels["ints"] == gold
    for name in variants:
        assert labels[name] == gold, name
        assert summaries[name] == summaries["ints"], name


# ------------------------------------------------------------------------------- "NA", "null", "" in CSV --

NA_TEXTS = ["null", "NA", "N/A", "nan", "None", "#N/A", "NULL", "-"]


@pytest.fixture(scope="module")
def na_suite_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("na")
    rows = synth_rows(20, 3)
    texts = [t for t, _ in rows] + NA_TEXTS + ["", "   "]
    labels = [y for _, y in rows] + [i % 2 for i in range(len(NA_TEXTS) + 2)]
    # written by hand: the empty cells must be really empty, not quoted
    lines = ["id,text,label"] + [f"r{i},{t},{y}" for i, (t, y) in enumerate(zip(texts, labels))]
    (root / "na.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("policy", ["error", "drop", "keep"])
def test_csv_na_like_cells_are_text_and_empty_cells_follow_on_missing_text(tiny_pair, na_suite_dir, tmp_path,
                                                                           capsys, policy):
    suite = tmp_path / "na.yaml"
    suite.write_text(
        f"kind: suite\nname: na\nrole: id\nid_column: id\nsource: {{type: local, files: [{na_suite_dir / 'na.csv'}], "
        f"on_missing_text: {policy}}}\nclasses: [negative, positive]\nsplits:\n  - {{name: test, role: test}}\n"
        "max_length: 32\nmetrics: [accuracy]\n")
    out = tmp_path / "run"
    code = main(["eval", "--model", str(tiny_pair[0]), "--suite", str(suite), "--out", str(out), *FAST])
    n_text = 20 + len(NA_TEXTS)
    if policy == "error":
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert "r28" in err and "r29" in err  # the empty and the blank cell, by id
        assert not out.exists()
        return
    assert code == 0
    entry = json.loads((out / "summary.json").read_text())["results"]["model"]["na"]["test"]
    preds = pd.read_parquet(out / "predictions.parquet")
    ids = set(preds["example_id"])
    assert {f"r{20 + i}" for i in range(len(NA_TEXTS))} <= ids  # "null", "NA", ... were scored as text
    if policy == "drop":
        assert entry["n"] == n_text and entry["n_dropped"] == 2 and not {"r28", "r29"} & ids
    else:
        assert entry["n"] == n_text + 2 and entry["n_dropped"] == 0 and {"r28", "r29"} <= ids
