"""Language-model suites end to end on tiny causal LMs built from configs (CPU, offline): multiple choice
(ARC-like and yes/no), generation with a stop sequence and numeric match, perplexity; eval and sweep write
run directories whose records, metrics and selection come from the task seam; bad input exits 2."""

from __future__ import annotations

import html
import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.rundir import predictions_for, read_predictions, read_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from _causal import byte_bpe, tiny_causal  # noqa: E402

FAST = ["--n-resamples", "20", "--no-report", "--no-progress"]
WORDS = "water light plants energy rock steam ice sun leaf animals grow mass".split()


def _save_model(path: Path, seed: int, base: Path | None = None, noise: float = 0.0) -> Path:
    import torch

    tok = byte_bpe("llama")
    model = tiny_causal("llama", tok, seed=seed, n_positions=128)
    if base is not None:
        from transformers import AutoModelForCausalLM

        sd = AutoModelForCausalLM.from_pretrained(base).state_dict()
        g = torch.Generator().manual_seed(seed)
        model.load_state_dict({k: v + noise * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                               for k, v in sd.items()})
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-lm")
    base = _save_model(root / "base", seed=3)
    return base, _save_model(root / "adapted", seed=4, base=base, noise=0.05)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def lm_suites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm-suites")
    rng = random.Random(0)
    arc = []
    for i in range(40):
        n = rng.choice([3, 4, 5])
        labels = list("ABCDE")[:n] if i % 7 else [str(j + 1) for j in range(n)]  # some rows keyed "1".."n"
        arc.append({"id": f"q{i}", "question": " ".join(rng.sample(WORDS, 4)) + "?",
                    "choices": {"text": rng.sample(WORDS, n), "label": labels}, "answerKey": rng.choice(labels)})
    _jsonl(root / "arc.jsonl", arc)
    _jsonl(root / "boolq.jsonl", [{"question": " ".join(rng.sample(WORDS, 3)), "passage": " ".join(rng.sample(WORDS, 8)),
                                   "answer": bool(i % 2)} for i in range(30)])
    _jsonl(root / "gsm.jsonl", [{"question": f"{a} plus {b}?", "answer": f"{a}+{b}\n#### {a + b:,}"}
                                for a, b in ((rng.randint(1, 999), rng.randint(1, 999)) for _ in range(12))])
    _jsonl(root / "text.jsonl", [{"doc": i, "passage": " ".join(rng.choices(WORDS, k=rng.randint(20, 60)))}
                                 for i in range(10)])
    splits = ("splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
              "  - {name: test, role: test, fraction: 0.5}\n")
    (root / "arc.yaml").write_text(
        "kind: suite\nname: tiny-arc\nrole: id\nsource: {type: local, files: [arc.jsonl]}\nid_column: id\n"
        "task:\n  kind: multiple_choice\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
        "  choices: {field: choices.text}\n  gold: {label: answerKey, labels: choices.label}\n"
        "metrics: [acc, acc_norm]\n" + splits)
    (root / "boolq.yaml").write_text(
        "kind: suite\nname: tiny-boolq\nrole: shift\nshift_type: natural\nsource: {type: local, files: [boolq.jsonl]}\n"
        "task:\n  kind: multiple_choice\n  prompt: {template: \"{{passage}}\\nQuestion: {{question}}?\\nAnswer:\"}\n"
        "  choices: {fixed: [\"no\", \"yes\"]}\n  gold: {index: answer}\nmetrics: [acc, acc_norm]\n" + splits)
    (root / "gsm.yaml").write_text(
        "kind: suite\nname: tiny-gsm\nrole: shift\nshift_type: natural\nsource: {type: local, files: [gsm.jsonl]}\n"
        "task:\n  kind: generation\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
        "  gold: {text: answer}\n  stop: [\"\\n\\n\", \"Question:\"]\n  max_new_tokens: 6\n"
        "metrics: [exact_match, numeric_match, contains, f1]\n" + splits)
    (root / "ppl.yaml").write_text(
        "kind: suite\nname: tiny-ppl\nrole: shift\nshift_type: natural\nsource: {type: local, files: [text.jsonl]}\n"
        "in_selection: false\n"  # bits_per_byte beside the accuracy-like shift suites: evaluated, not selected on
        "id_column: doc\ntask: {kind: perplexity, text: passage, max_length: 32}\n" + splits)
    return {"arc": root / "arc.yaml", "boolq": root / "boolq.yaml", "gsm": root / "gsm.yaml", "ppl": root / "ppl.yaml"}


def test_an_lm_eval_without_out_claims_no_tokenized_split_cache(lm_pair, lm_suites, tmp_path, capsys,
                                                                 monkeypatch):
    """Language-model tasks tokenize their prompts each run: the cache note says only what was cached."""
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(lm_suites["arc"]), *FAST]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("caches under HARNESS_CACHE"))
    assert line.endswith("; model file fingerprints are cached there too") and "tokenized" not in line


def test_eval_scores_every_lm_task(lm_pair, lm_suites, tmp_path):
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(lm_pair[0]), "--suite", *map(str, lm_suites.values()), "--out", str(out),
               *FAST])
    assert rc == 0
    s = read_summary(out)
    # the budget the language model's scorer batched with on this CPU, not the classifier default (trial)
    assert json.loads((out / "manifest.json").read_text())["batch_tokens"] == 512
    res = s.results["model"]
    assert set(res["tiny-arc"]["test"].metrics) == {"acc", "acc_norm"}
    assert set(res["tiny-gsm"]["validation"].metrics) == {"exact_match", "numeric_match", "contains", "f1"}
    assert set(res["tiny-ppl"]["test"].metrics) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    bpb = res["tiny-ppl"]["test"].metrics["bits_per_byte"]
    assert bpb.value > 0 and not bpb.higher_is_better and bpb.ci_low <= bpb.value <= bpb.ci_high
    frame = read_predictions(out)
    _, _, labels, outputs = predictions_for(frame, "model", "tiny-arc", "test")
    k = outputs["loglik"].shape[1]
    assert k == 5 and np.all((outputs["choice_len"] > 0).sum(axis=1) >= 3) and (labels < k).all()
    acc = np.mean(np.nanargmax(np.where(outputs["choice_len"] > 0, outputs["loglik"], -np.inf), axis=1) == labels)
    assert res["tiny-arc"]["test"].metrics["acc"].value == pytest.approx(acc)
    ids, _, _, gen = predictions_for(frame, "model", "tiny-gsm", "test")
    assert gen["output"].dtype.kind == "U" and set(gen["exact_match"]) <= {0.0, 1.0}
    # the gold text each output was scored against, beside it (CI trial: a user could not see what missed)
    assert len(ids) and all(re.fullmatch(r"\d+\+\d+\n#### [\d,]+", r) for r in gen["reference"])
    assert (gen["exact_match"] == (gen["answer"] == gen["reference"])).all()  # no normalize options: equality


def test_sweep_of_a_causal_lm_selects_on_each_suites_metric(lm_pair, lm_suites, tmp_path, capsys):
    out = tmp_path / "sweep"
    # a bits_per_byte shift suite beside an acc_norm one would outweigh it in the shift score: refused up front
    # (exit 2, nothing written) unless it is left out of the selection
    args = ["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), "--alphas", "0,0.5,1", *FAST]
    selecting = tmp_path / "ppl-selecting.yaml"
    selecting.write_text(lm_suites["ppl"].read_text().replace("in_selection: false\n", "")
                         .replace("files: [text.jsonl]", f"files: [{lm_suites['ppl'].parent / 'text.jsonl'}]"))
    assert main([*args, "--suite", str(lm_suites["arc"]), str(lm_suites["boolq"]), str(selecting),
                 "--out", str(out)]) == 2
    assert "average metrics of different scales" in capsys.readouterr().err and not out.exists()
    rc = main([*args, "--suite", str(lm_suites["arc"]), str(lm_suites["boolq"]), str(lm_suites["ppl"]),
               "--out", str(out)])
    assert rc == 0
    s = read_summary(out)
    assert [p.id for p in s.points] == ["base", "alpha=0.5", "adapted"]
    assert s.selection.metric == "acc_norm"  # every suite selected on acc_norm; tiny-ppl is only evaluated
    assert set(s.selection.selected_on) == {"tiny-arc/validation", "tiny-boolq/validation"}
    assert "bits_per_byte" in s.results["adapted"]["tiny-ppl"]["test"].metrics
    assert not s.ensemble  # no class distributions to mix
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_kind"] == "causal_lm" and manifest["outside_selection"] == ["tiny-ppl"]
    assert "not selected on (in_selection: false): tiny-ppl" in capsys.readouterr().out
    # without --out (no run directory) the console table still shows each suite on its own metric
    gen = main([*args, "--no-store", "--suite", str(lm_suites["arc"]), str(lm_suites["gsm"]), str(lm_suites["ppl"])])
    printed = capsys.readouterr().out
    assert gen == 0 and "tiny-gsm/validation exact_match" in printed and "tiny-arc/validation acc_norm" in printed
    assert "not selected on (in_selection: false): tiny-ppl" in printed
    base = read_summary(out).results["base"]["tiny-arc"]["test"].metrics["acc"].value
    adapted = read_summary(out).results["adapted"]["tiny-arc"]["test"].metrics["acc"].value
    assert 0 <= base <= 1 and 0 <= adapted <= 1
    assert main(["report", str(out)]) == 0  # the report renders language-model runs (no class-logit views)
    text = (out / "report.md").read_text()
    assert "tiny-arc" in text and "acc_norm" in text


def test_a_classifier_suite_and_an_lm_suite_cannot_share_a_run(lm_pair, lm_suites, tmp_path):
    cls = tmp_path / "cls.yaml"
    (tmp_path / "c.csv").write_text("text,label\na,x\nb,y\n")
    cls.write_text("kind: suite\nname: c\nrole: shift\nshift_type: natural\nsource: {type: local, files: [c.csv]}\n"
                   "classes: [x, y]\nsplits: [{name: test, role: test}]\n")
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(lm_suites["arc"]), str(cls), *FAST]) == 2


@pytest.mark.parametrize("edit, where", [
    (("{{question}}", "{{questoin}}"), "questoin"),                       # template names a missing column
    (("gold: {label: answerKey", "gold: {label: answerKy"), "answerKy"),  # gold field missing
    (("choices: {field: choices.text}", "choices: {field: choices.nope}"), "choices.nope"),
])
def test_bad_lm_suites_exit_2_naming_the_field(lm_pair, lm_suites, tmp_path, capsys, edit, where):
    bad = tmp_path / "arc.yaml"
    bad.write_text(lm_suites["arc"].read_text().replace(*edit))
    (tmp_path / "arc.jsonl").write_text((lm_suites["arc"].parent / "arc.jsonl").read_text())
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(bad), *FAST]) == 2
    assert where in capsys.readouterr().err


def test_gold_not_among_the_choices_and_generation_without_max_new_tokens_exit_2(lm_pair, lm_suites, tmp_path, capsys):
    rows = [json.loads(line) for line in (lm_suites["arc"].parent / "arc.jsonl").read_text().splitlines()]
    rows[0]["answerKey"] = "Z"
    _jsonl(tmp_path / "arc.jsonl", rows)
    (tmp_path / "arc.yaml").write_text(lm_suites["arc"].read_text())
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(tmp_path / "arc.yaml"), *FAST]) == 2
    assert "gold label is not in the label list" in capsys.readouterr().err
    gen = tmp_path / "gsm.yaml"
    gen.write_text(lm_suites["gsm"].read_text().replace("  max_new_tokens: 6\n", ""))
    assert main(["validate", str(gen)]) == 2
    assert "task.generation.max_new_tokens: Field required" in capsys.readouterr().err


def test_report_examples_show_generation_outputs_escaped_in_the_html_only(lm_pair, lm_suites, tmp_path):
    """``harness report --examples`` reads prompts and references back from the suite file (manifest.json) and
    shows them with the outputs stored in predictions.parquet, escaped, in report.html only."""
    rows = [json.loads(line) for line in (lm_suites["gsm"].parent / "gsm.jsonl").read_text().splitlines()]
    for r in rows:
        r["question"] = r["question"].replace("plus", "<script>alert(1)</script> plus")
    _jsonl(tmp_path / "gsm.jsonl", rows)
    (tmp_path / "gsm.yaml").write_text(lm_suites["gsm"].read_text())
    out = tmp_path / "run"
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(tmp_path / "gsm.yaml"), "--out", str(out),
                 *FAST]) == 0
    assert main(["report", str(out)]) == 0
    assert "Generation examples" not in (out / "report.html").read_text()
    assert main(["report", str(out), "--examples"]) == 0
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    section = page[page.index("Generation examples</h2>"):]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; plus" in section and "\nAnswer:</td>" in section
    assert "#### " in section  # the reference answer
    _, _, _, gen = predictions_for(read_predictions(out), "model", "tiny-gsm", "test")
    assert any(html.escape(str(o)) in section for o in gen["output"] if o.strip())
    assert "<script" not in page.lower() and "alert(1)" not in md and "Generation examples" not in md
    assert "### Generation (greedy decoding)" in md and "| numeric_match | higher |" in md


# ------------------------------------------------------------------------- bad input, issue 14 (exit 2) --

def _bad_arc(lm_suites, tmp_path: Path, edit_row=None, edit_yaml=None) -> Path:
    rows = [json.loads(line) for line in (lm_suites["arc"].parent / "arc.jsonl").read_text().splitlines()]
    if edit_row is not None:
        edit_row(rows[3])
    _jsonl(tmp_path / "arc.jsonl", rows)
    text = lm_suites["arc"].read_text()
    (tmp_path / "arc.yaml").write_text(text.replace(*edit_yaml) if edit_yaml else text)
    return tmp_path / "arc.yaml"


BAD_ARC = {  # case -> (row edit, yaml edit, the field path and words the message must hold)
    "template names a missing column": (None, ("{{question}}", "{{questoin}}"), ["task.prompt.template", "questoin"]),
    "gold not among the choices": (lambda r: r.update(answerKey="Z"), None, ["task.gold.label", "Z"]),
    "empty choices": (lambda r: r.update(choices={"text": [], "label": []}), None, ["task.choices", "non-empty"]),
}


@pytest.mark.parametrize("command", ["validate", "eval"])
@pytest.mark.parametrize("case", list(BAD_ARC))
def test_bad_multiple_choice_data_exits_2_with_the_field_path(lm_pair, lm_suites, tmp_path, capsys, case, command):
    """``harness validate`` reads a local suite's rows (no model) and finds what ``eval`` would fail on."""
    edit_row, edit_yaml, needles = BAD_ARC[case]
    suite = _bad_arc(lm_suites, tmp_path, edit_row, edit_yaml)
    argv = (["validate", str(suite)] if command == "validate" else
            ["eval", "--model", str(lm_pair[0]), "--suite", str(suite), "--out", str(tmp_path / "run"), *FAST])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    if edit_row is not None:  # the row is named, by validate and eval alike
        assert "suite 'tiny-arc', split '" in err and "row 'q3' (row " in err and "fix: " in err, err
    assert not (tmp_path / "run").exists()


BAD_ROWS = {  # case -> (suite, row edit, the error's first words, the spec field and data column it names)
    "gold index out of range": ("boolq", lambda r: r.update(answer=2), "the gold index is not a position among "
                                "the choices", "where: task.gold.index = 'answer'"),
    "empty choices list": ("arc", lambda r: r.update(choices={"text": [], "label": []}), "a row's choices must be "
                           "a non-empty list", "where: task.choices.field = 'choices.text'"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_named_alike_by_validate_eval_and_sweep(lm_pair, lm_suites, tmp_path, capsys, case):
    """Issue 19 (fresh-user trial): a gold answer out of range or an empty choices list. ``eval`` and ``sweep`` exit
    2 with a message naming the suite, split, row id and position, the spec field and its column, and a fix;
    ``harness validate`` prints the same message for the same row, before any model is loaded."""
    name, edit, what, where = BAD_ROWS[case]
    rows = [json.loads(line) for line in (lm_suites[name].parent / f"{name}.jsonl").read_text().splitlines()]
    edit(rows[5])
    _jsonl(tmp_path / f"{name}.jsonl", rows)
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(lm_suites[name].read_text())
    runs = {"validate": ["validate", str(suite)],
            "eval": ["eval", "--model", str(lm_pair[0]), "--suite", str(suite), "--out", str(tmp_path / "e"), *FAST],
            "sweep": ["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), "--suite", str(suite),
                      # a sweep needs an ID suite (role: id) and, under its default policy, a shift suite
                      str(lm_suites["arc"] if name != "arc" else lm_suites["boolq"]),
                      "--alphas", "0,1", "--out", str(tmp_path / "s"), *FAST]}
    messages = {}
    for command, argv in runs.items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        start = err.index(f"suite 'tiny-{name}', split '")
        messages[command] = err[start:].split("\n\n")[0].strip().splitlines()[:5]
    msg = messages["validate"]
    row_id = rows[5].get("id")
    assert f"cannot be scored: {what}" in msg[0] and "(row " in msg[0] and " of the split, from 0)" in msg[0]
    if row_id is not None:
        assert f"row {row_id!r} (row " in msg[0]
    assert f"  {where}" in msg and any(line.startswith("  fix: ") and "correct or remove that row" in line for line in msg)
    assert messages["eval"] == msg and messages["sweep"] == msg, messages


def test_validate_reads_good_local_data_and_can_skip_it(lm_suites, capsys):
    assert main(["validate", *map(str, lm_suites.values())]) == 0
    assert "4 valid, 0 invalid" in capsys.readouterr().out
    assert main(["validate", "--no-data", str(lm_suites["arc"])]) == 0


def test_generation_without_max_new_tokens_exits_2_through_eval(lm_pair, lm_suites, tmp_path, capsys):
    (tmp_path / "gsm.jsonl").write_text((lm_suites["gsm"].parent / "gsm.jsonl").read_text())
    gen = tmp_path / "gsm.yaml"
    gen.write_text(lm_suites["gsm"].read_text().replace("  max_new_tokens: 6\n", ""))
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(gen), *FAST]) == 2
    assert "task.generation.max_new_tokens: Field required" in capsys.readouterr().err


def test_perplexity_window_longer_than_the_models_positions_exits_2(lm_pair, lm_suites, tmp_path, capsys):
    (tmp_path / "text.jsonl").write_text((lm_suites["ppl"].parent / "text.jsonl").read_text())
    ppl = tmp_path / "ppl.yaml"
    ppl.write_text(lm_suites["ppl"].read_text().replace("max_length: 32", "max_length: 4096"))
    out = tmp_path / "run"
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", str(ppl), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "suite 'tiny-ppl': task.max_length" in err and "at most 128" in err and "4096" in err
    assert not out.exists()


def test_models_that_do_not_fit_a_language_model_suite_exit_2(lm_pair, lm_suites, tmp_path, capsys):
    """Issue 14 item 6: a sequence classifier in a language-model suite, and a causal LM whose weights would be
    partly random, are refused naming what fits; neither is ever scored."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig.from_pretrained(lm_pair[0])
    clf = tmp_path / "clf"
    LlamaForSequenceClassification(cfg).save_pretrained(clf)
    AutoTokenizer.from_pretrained(lm_pair[0]).save_pretrained(clf)
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in lm_pair[0].iterdir():
        (partial / f.name).write_bytes(f.read_bytes())
    state = load_file(str(partial / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("layers.0.mlp.up_proj.weight")))
    save_file(state, str(partial / "model.safetensors"), metadata={"format": "pt"})
    for model, needles in ((clf, ["not a causal language model", "ForCausalLM"]),
                           (partial, ["initialise", "up_proj"])):
        out = tmp_path / f"run-{model.name}"
        assert main(["eval", "--model", str(model), "--suite", str(lm_suites["arc"]), "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err
        assert not out.exists()
    assert main(["sweep", "--base", str(lm_pair[0]), "--adapted", str(clf), "--suite", str(lm_suites["arc"]),
                 "--alphas", "0,1", "--out", str(tmp_path / "sweep"), *FAST]) == 2
    assert not (tmp_path / "sweep").exists()


LM_POLICY = """kind: policy
name: tiny-lm
candidate: chosen
n_resamples: 200
min_clusters: 2
on_underpowered: warn
suites: {id: [tiny-arc], shift: [tiny-gsm, tiny-ppl]}
rules:
  - {name: id_acc_norm, kind: delta, metric: acc_norm, suites: id, reference: base, max_drop: 1.0, mode: point}
  - {name: gsm_exact, kind: delta, metric: exact_match, suites: [tiny-gsm], reference: base, max_drop: 1.0,
     mode: point}
  - {name: ppl_bpb, kind: delta, metric: bits_per_byte, suites: [tiny-ppl], reference: base, max_drop: 100.0,
     mode: point}
  - {name: id_flips, kind: negative_flips, suites: id, reference: base, max_rate: 1.0, mode: point}
"""


def test_gate_and_store_resume_work_on_language_model_records(lm_pair, lm_suites, tmp_path):
    """Downstream stages unchanged in meaning (issue 14 item 7): a gate judges the per-example LM records with
    each metric's direction (bits_per_byte: lower is better), and a rerun takes every split from the results store
    (text outputs included), with identical predictions and verdict."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(LM_POLICY)
    runs = []
    for name in ("first", "again"):
        out = tmp_path / name
        assert main(["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), "--suite",
                     str(lm_suites["arc"]), str(lm_suites["gsm"]), str(lm_suites["ppl"]), "--alphas", "0,1",
                     "--gate", str(policy), "--out", str(out), *FAST]) == 0
        runs.append(out)
    verdicts = [json.loads((r / "verdict.json").read_text()) for r in runs]
    judged = [[(o["rule"], o["value"], o["passed"]) for o in v["outcomes"]] for v in verdicts]
    assert verdicts[0]["passed"] and judged[0] == judged[1]
    bpb = next(o for o in verdicts[0]["outcomes"] if o["rule"] == "ppl_bpb")
    s = read_summary(runs[0])
    chosen = s.selection.chosen_point
    base_v = s.results["base"]["tiny-ppl"]["test"].metrics["bits_per_byte"].value
    cand_v = s.results[chosen]["tiny-ppl"]["test"].metrics["bits_per_byte"].value
    assert bpb["value"] == pytest.approx(base_v - cand_v)  # an improvement (lower bpb) counts as a gain
    assert any(o["rule"] == "id_flips" and o["n"] for o in verdicts[0]["outcomes"])
    manifests = [json.loads((r / "manifest.json").read_text()) for r in runs]
    assert manifests[0]["store_computed_splits"] > 0 and manifests[1]["store_computed_splits"] == 0
    frames = [read_predictions(r).sort_values(["point", "suite", "split", "example_id"]).reset_index(drop=True)
              for r in runs]
    assert frames[0]["output"].dropna().tolist() == frames[1]["output"].dropna().tolist()
    assert len(frames[0]["output"].dropna()) > 0
    np.testing.assert_array_equal(frames[0]["doc_loglik"].to_numpy(float), frames[1]["doc_loglik"].to_numpy(float))


def test_language_model_store_keys_name_the_settings_that_can_change_outputs():
    """The generation cache and its tuning (the static cache's compiled loop rounds differently from generate in
    bf16, and greedy text follows the first flipped near tie) and compiled layers are part of a language model's
    store key, so a run with another setting computes its records instead of taking them from the store."""
    from types import SimpleNamespace

    from harness.predict import LMRunner

    scorer = SimpleNamespace(max_length=64, generation_cache=None, generation_tuned=False)
    base = LMRunner(scorer).store_extra()
    assert base == {"runner": "lm", "max_length": 64, "compiled": False, "generation_cache": None,
                    "generation_tuned": False}
    assert LMRunner(scorer, compiled=True).store_extra() != base
    assert LMRunner(SimpleNamespace(max_length=64, generation_cache="static", generation_tuned=False)).store_extra() \
        != base
    assert LMRunner(SimpleNamespace(max_length=64, generation_cache="static", generation_tuned=True)).store_extra() \
        != LMRunner(SimpleNamespace(max_length=64, generation_cache="static", generation_tuned=False)).store_extra()


def test_options_a_language_model_run_cannot_use_exit_2_before_any_model(lm_pair, lm_suites, tmp_path, capsys,
                                                                         monkeypatch):
    """--label-map names a classifier's labels (a language-model run ignored it silently), and a --select-metric
    the selecting suites do not compute was refused only after every alpha was scored (trial): both exit 2 before
    a model is loaded, naming what the suites compute."""
    import harness.pipeline.evaluate as evaluate_mod

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(evaluate_mod, "_load_scored", no_model)
    monkeypatch.setattr("harness.pipeline.sweep._run", no_model)
    arc = str(lm_suites["arc"])
    sweep = ["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), *FAST]
    assert main([*sweep, "--suite", arc, "--label-map", "LABEL_0=a", "--select", "id-only"]) == 2
    assert "--label-map applies to classification suites only" in capsys.readouterr().err
    assert main(["eval", "--model", str(lm_pair[0]), "--suite", arc, "--label-map", "LABEL_0=a", *FAST]) == 2
    assert "--label-map applies to classification suites only" in capsys.readouterr().err
    assert main([*sweep, "--suite", arc, "--select", "id-only", "--select-metric", "exact_match"]) == 2
    err = capsys.readouterr().err
    assert "--select-metric exact_match is not among the metrics of tiny-arc" in err and "acc_norm" in err
    # id-only too: the shift suites are scored on --select-metric for the shift score and the Pareto front (review:
    # exempting them left this to a refusal after every alpha)
    assert main([*sweep, "--suite", arc, str(lm_suites["gsm"]), "--select", "id-only", "--select-metric",
                 "acc_norm"]) == 2
    assert "--select-metric acc_norm is not among the metrics of tiny-gsm" in capsys.readouterr().err
    # a gate whose rules judge test splits on a run that scores only validation splits (was: exit 1 after scoring)
    policy = tmp_path / "policy.yaml"
    policy.write_text(LM_POLICY)
    suites = [str(lm_suites[k]) for k in ("arc", "gsm", "ppl")]
    assert main([*sweep, "--suite", *suites, "--split", "validation", "--gate", str(policy), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "rule 'id_acc_norm' judges split 'test', but --split validation scores only the 'validation' splits" in err
    assert "drop --split" in err
    assert not (tmp_path / "run").exists()


def test_id_only_says_it_selected_on_the_id_validation_splits_only(lm_pair, lm_suites, capsys):
    """Under --select id-only the shift suites' validation splits are scored but move nothing: the console's
    "selected on" names the ID ones only (trial: it listed the shift split too); the default policy names both."""
    base = ["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), "--suite", str(lm_suites["arc"]),
            str(lm_suites["boolq"]), "--alphas", "0,1", *FAST]
    assert main([*base, "--select", "id-only"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("chosen alpha:"))
    assert "selected on tiny-arc/validation)" in line and "tiny-boolq" not in line
    assert main(base) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("chosen alpha:"))
    assert "tiny-arc/validation" in line and "tiny-boolq/validation" in line


def test_two_suite_files_with_one_name_exit_2_naming_both(lm_pair, lm_suites, tmp_path, capsys):
    """Trial: the sweep's message ended at "give every suite a unique name:"; it now names the files and the
    name. The same file given twice is refused as such."""
    twin = tmp_path / "twin.yaml"
    twin.write_text(Path(lm_suites["boolq"]).read_text().replace("name: tiny-boolq", "name: tiny-arc"))
    (tmp_path / "boolq.jsonl").write_text((Path(lm_suites["boolq"]).parent / "boolq.jsonl").read_text())
    sweep = ["sweep", "--base", str(lm_pair[0]), "--adapted", str(lm_pair[1]), "--select", "id-only", *FAST]
    assert main([*sweep, "--suite", str(lm_suites["arc"]), str(twin)]) == 2
    err = capsys.readouterr().err
    assert "2 suites share the name 'tiny-arc'" in err and str(twin) in err and "name: tiny-arc-2" in err
    assert main([*sweep, "--suite", str(lm_suites["arc"]), str(lm_suites["arc"])]) == 2
    assert "a suite is given twice" in capsys.readouterr().err
