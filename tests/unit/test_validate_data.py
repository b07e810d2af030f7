"""``harness validate`` checks the data too (issue 19, item 3): files, columns, template fields, labels inside
``classes``, classes without examples; ``--no-data`` keeps the spec-only check. And a run notes a split that lacks
some classes (item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.data.check import check_suite_data, missing_classes
from harness.data.sources import load_splits
from harness.spec.load import load_suite

SUITE = ("kind: suite\nname: {name}\nrole: id\nsource: {{type: local, files: [{file}]}}\n"
         "classes: [a, b, c, d]\n{extra}splits:\n  - {{name: validation, role: validation, fraction: 0.5}}\n"
         "  - {{name: test, role: test, fraction: 0.5}}\nmetrics: [accuracy, macro_f1]\n")


def _csv(path, labels, text_col="text"):
    rows = [f"{text_col},label"] + [f"sentence number {i},{lab}" for i, lab in enumerate(labels)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _suite(tmp_path, file="data.csv", extra="", name="four"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(SUITE.format(name=name, file=file, extra=extra))
    return p


def _validate(capsys, *args):
    rc = main(["validate", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_good_suite_prints_each_split(tmp_path, capsys):
    _csv(tmp_path / "data.csv", ["a", "b", "c", "d"] * 20)
    rc, out, err = _validate(capsys, _suite(tmp_path))
    assert rc == 0, err
    assert "data  four/validation (validation):" in out and "data  four/test (test):" in out
    assert "1 valid, 0 invalid (data checked)" in out


def test_missing_file_fails_and_no_data_skips_the_check(tmp_path, capsys):
    suite = _suite(tmp_path, file="absent.csv")
    rc, out, err = _validate(capsys, suite)
    assert rc == 2
    assert "absent.csv" in err and "0 valid, 1 invalid" in out
    rc, out, err = _validate(capsys, "--no-data", suite)
    assert rc == 0 and "1 valid, 0 invalid" in out and "data checked" not in out


def test_wrong_column_names_the_column(tmp_path, capsys):
    _csv(tmp_path / "data.csv", ["a", "b"] * 20, text_col="sentence")
    rc, _, err = _validate(capsys, _suite(tmp_path))
    assert rc == 2
    assert "text" in err and "sentence" in err  # the column asked for and the columns there


def test_labels_outside_classes_are_counted(tmp_path, capsys):
    _csv(tmp_path / "data.csv", ["a", "b", "zebra", "zebra", "yak"] * 8)
    rc, _, err = _validate(capsys, _suite(tmp_path))
    assert rc == 2
    assert "zebra" in err and "FAIL" in err


def test_class_without_examples_warns_but_passes(tmp_path, capsys):
    _csv(tmp_path / "data.csv", ["a", "b", "c"] * 20)
    rc, out, err = _validate(capsys, _suite(tmp_path))
    assert rc == 0
    assert "classes without examples: d" in out
    assert "WARN" in err and "1 of 4 classes have no example (d)" in err and "macro_f1" in err


def test_a_class_no_split_has_warns_once_naming_the_splits(tmp_path, capsys):
    """A misspelt extra ``classes`` entry (``dd``): one warning for the suite, not one per split."""
    _csv(tmp_path / "data.csv", ["a", "b", "c"] * 20)
    suite = _suite(tmp_path, name="typo")
    suite.write_text(suite.read_text().replace("classes: [a, b, c, d]", "classes: [a, b, c, dd]"))
    rc, out, err = _validate(capsys, suite)
    assert rc == 0, err
    warns = [ln for ln in err.splitlines() if ln.startswith("WARN")]
    assert warns == ["WARN  suite typo, splits validation, test: 1 of 4 classes have no example (dd); none of the "
                     "splits checked (validation, test) has dd: if a classes entry is misspelt, correct it to the "
                     "data's label; macro-averaged metrics (macro_f1) score each as 0, so compare accuracy or add "
                     "examples of those classes"]


def test_the_misspelt_class_hint_comes_once_when_splits_lack_different_classes():
    """validation lacks (c, dd), test lacks (dd): two notes, the hint about dd in the first only."""
    from harness.data.check import missing_class_notes

    notes = missing_class_notes("s", {"validation": ("c", "dd"), "test": ("dd",)}, 4)
    assert len(notes) == 2 and sum("misspelt" in n for n in notes) == 1
    assert "none of the splits checked (validation, test) has dd:" in notes[0] and " c:" not in notes[0]
    assert notes[1].startswith("split s/test: 1 of 4 classes have no example (dd); macro-averaged")
    # one split checked: nothing to compare, no hint
    assert "misspelt" not in missing_class_notes("s", {"test": ("dd",)}, 4)[0]


def test_a_misspelt_class_fails_once_naming_the_splits(tmp_path, capsys):
    """A misspelt ``classes`` entry (``bb`` for the data's ``b``) puts labels outside the classes in every split:
    one problem naming the splits and their counts, not one repeated message per split."""
    _csv(tmp_path / "data.csv", ["a", "b", "c", "d"] * 20)
    suite = _suite(tmp_path, name="typo")
    suite.write_text(suite.read_text().replace("classes: [a, b, c, d]", "classes: [a, bb, c, d]"))
    rc, _, err = _validate(capsys, suite)
    assert rc == 2
    assert err.count("have a label outside the classes") == 1, err
    assert "data problems" not in err
    head = next(ln for ln in err.splitlines() if "outside the classes" in ln)
    assert "20 row(s) of splits 'validation' (" in head and "), 'test' (" in head
    assert err.count("a classes entry may be misspelled (the data has 'b', the classes 'bb', which no row carries)") == 1


def test_missing_classes_per_split(tmp_path):
    _csv(tmp_path / "data.csv", ["a", "b", "c"] * 20)
    suite_path = _suite(tmp_path)
    splits = load_splits(load_suite(suite_path), suite_path=suite_path)
    assert all(missing_classes(sd) == ("d",) for sd in splits.values())
    checks = check_suite_data(load_suite(suite_path), suite_path)
    assert [c.split for c in checks] == ["validation", "test"] and sum(c.n for c in checks) == 60


LM_SUITE = ("kind: suite\nname: lm-tiny\nrole: id\nsource: {type: local, files: [q.jsonl]}\n"
            "task:\n  kind: multiple_choice\n  prompt: {template: \"Q: {{%s}}\\nA:\"}\n"
            "  choices: {field: options}\n  gold: {index: answer}\nmetrics: [acc]\n"
            "splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
            "  - {name: test, role: test, fraction: 0.5}\n")


@pytest.mark.parametrize("field,ok", [("question", True), ("questoin", False)])
def test_lm_template_fields_checked_against_the_data(tmp_path, capsys, field, ok):
    rows = [{"question": f"q{i}?", "options": ["x", "y"], "answer": i % 2} for i in range(20)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = tmp_path / "lm.yaml"
    suite.write_text(LM_SUITE % field)
    rc, out, err = _validate(capsys, suite)
    if ok:
        assert rc == 0, err
        assert "lm-tiny/validation" in out
    else:
        assert rc == 2
        assert "questoin" in err and "task.prompt.template" in err


def test_a_run_notes_a_split_without_some_classes(tiny_pair, tmp_path):
    """The tiny classifier has two classes; a suite whose data has only positives gets a run note."""
    from harness.pipeline import evaluate_model

    _csv(tmp_path / "data.csv", ["positive"] * 40)
    p = tmp_path / "pos.yaml"
    p.write_text("kind: suite\nname: pos\nrole: id\nsource: {type: local, files: [data.csv]}\n"
                 "classes: [negative, positive]\nsplits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
                 "  - {name: test, role: test, fraction: 0.5}\nmax_length: 16\nmetrics: [accuracy, macro_f1]\n")
    res = evaluate_model(tiny_pair[0], [p], out=None)
    notes = [n for n in res.summary.notes if "have no example" in n]
    # once for the suite, naming its splits (it was one note per split, repeating the same text)
    assert len(notes) == 1, notes
    assert notes[0].startswith("suite pos, splits validation, test: 1 of 2 classes have no example (negative); "
                               "none of the splits checked (validation, test) has negative: if a classes entry "
                               "is misspelt")


def test_a_run_notes_a_length_other_than_the_training_length(tiny_pair, tiny_suites, tmp_path):
    """A model folder whose training record says max_length 48, scored at the suite's 32: a note per suite."""
    import shutil

    from harness.pipeline import evaluate_model

    model = tmp_path / "model"
    shutil.copytree(tiny_pair[1], model)
    (model / "training.json").write_text(json.dumps({"settings": {"max_length": 48}}))
    res = evaluate_model(model, [tiny_suites[0]], out=None)
    notes = [n for n in res.summary.notes if "trained at max_length 48" in n]
    assert len(notes) == 1 and "evaluated at max_length 32" in notes[0]
    (model / "training.json").write_text(json.dumps({"settings": {"max_length": 32}}))
    assert not [n for n in evaluate_model(model, [tiny_suites[0]], out=None).summary.notes if "trained at" in n]


def test_validate_reports_every_data_problem_of_a_file_in_one_run(tmp_path, capsys):
    """An empty label and an empty text in one CSV: both in one run, each with its own message (issue 19 trial)."""
    rows = ["text,label"] + [f"sentence number {i},{'abcd'[i % 4]}" for i in range(40)] + ["lonely,", ",a"]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    rc, out, err = _validate(capsys, _suite(tmp_path))
    text = out + err
    assert rc == 2
    assert "have an empty label" in text and "have empty or null text" in text


TRAIN_MISSING = ("kind: suite\nname: notrain\nrole: id\nsource: {type: local, files: [data.csv]}\n"
                 "classes: [negative, positive]\nsplits:\n  - {name: train, role: train, files: [absent-train.csv]}\n"
                 "  - {name: validation, role: validation, fraction: 0.5}\n"
                 "  - {name: test, role: test, fraction: 0.5}\nmax_length: 16\nmetrics: [accuracy]\n")


def test_a_missing_train_file_warns_and_says_what_needs_it(tmp_path, capsys):
    _csv(tmp_path / "data.csv", ["negative", "positive"] * 20)
    (tmp_path / "notrain.yaml").write_text(TRAIN_MISSING)
    rc, out, err = _validate(capsys, tmp_path / "notrain.yaml")
    assert rc == 0, err
    assert "data  notrain/train (train): not read" in out and "notrain/test (test): 20 rows" in out
    warn = err.split("WARN  ", 1)[1]
    assert "split train (train) not read; `harness train`" in warn and "few-shot prompt" in warn
    assert "eval and sweep score the validation and test splits without it" in warn and "absent-train.csv" in warn
    assert "overlap_unchecked" in warn and "max_overlap gate rule fails" in warn


def _train_suite(tmp_path, train_col, rest_col="text"):
    """The trial's ID suite: train, validation and test files; the train file's text column is ``train_col``."""
    _csv(tmp_path / "train.csv", ["negative", "positive"] * 10, text_col=train_col)
    for name in ("val", "test"):
        _csv(tmp_path / f"{name}.csv", ["negative", "positive"] * 10, text_col=rest_col)
    text = TRAIN_MISSING.replace("[absent-train.csv]", "[train.csv]")
    text = text.replace("fraction: 0.5}\n  - {name: test", "files: [val.csv]}\n  - {name: test")
    (tmp_path / "notrain.yaml").write_text(text.replace("fraction: 0.5}", "files: [test.csv]}"))
    return tmp_path / "notrain.yaml"


def test_a_wrong_column_in_the_train_split_alone_fails(tmp_path, capsys):
    """A train file that exists but lacks the text column is an error (``harness train`` would fail on it), not
    the warning of a missing train file (issue 19 trial: ``text: sentence`` passed validate for the train split)."""
    rc, out, err = _validate(capsys, _train_suite(tmp_path, train_col="sentence"))
    assert rc == 2, out + err
    assert "FAIL" in err and "train.csv" in err and "'text' not found" in err and "not read" not in err + out
    assert "0 valid, 1 invalid" in out


def test_a_wrong_column_in_every_split_names_the_train_file_too(tmp_path, capsys):
    suite = _train_suite(tmp_path, train_col="text")
    suite.write_text(suite.read_text().replace("classes:", "text: sentence\nclasses:"))
    rc, _, err = _validate(capsys, suite)
    assert rc == 2
    assert "3 data problems" in err and all(f"{n}.csv" in err for n in ("train", "val", "test"))


def test_a_suite_whose_train_file_is_missing_still_evaluates(tiny_pair, tmp_path):
    from harness.pipeline import evaluate_model

    _csv(tmp_path / "data.csv", ["negative", "positive"] * 20)
    (tmp_path / "notrain.yaml").write_text(TRAIN_MISSING)
    res = evaluate_model(tiny_pair[0], [tmp_path / "notrain.yaml"], out=tmp_path / "run")
    assert set(res.summary.suites["notrain"].splits) == {"validation", "test"}
    note = next(n for n in res.summary.notes if "train split notrain/train was not read" in n)
    assert "max_overlap gate rule fails" in note and "data file not found" in note
    assert res.summary.overlap and not any(e.a.endswith("/train") for e in res.summary.overlap)
    # the pairs it would have given are recorded as unchecked, with the problem, never as pairs without overlap
    unchecked = {(u.a, u.b) for u in res.summary.overlap_unchecked}
    assert unchecked == {("notrain/train", "notrain/validation"), ("notrain/train", "notrain/test")}
    assert all("absent-train.csv" in u.reason for u in res.summary.overlap_unchecked)


def test_the_overlap_gate_fails_on_a_run_whose_train_split_was_not_read(tiny_pair, tmp_path, capsys):
    """CONTRACT: a rule that cannot be judged for missing data fails (exit 1), never a pass without data."""
    from harness.pipeline import evaluate_model

    _csv(tmp_path / "data.csv", ["negative", "positive"] * 20)
    (tmp_path / "notrain.yaml").write_text(TRAIN_MISSING)
    evaluate_model(tiny_pair[0], [tmp_path / "notrain.yaml"], out=tmp_path / "run")
    policy = tmp_path / "overlap.yaml"
    policy.write_text("kind: policy\nname: overlap\ncandidate: adapted\nmin_clusters: 1\nrules:\n"
                      "  - {name: clean, kind: max_overlap, suites: [notrain], split: test, max_rate: 0.5, "
                      "mode: point}\n")
    capsys.readouterr()
    assert main(["gate", str(tmp_path / "run"), "--policy", str(policy)]) == 1
    verdict = json.loads((tmp_path / "run" / "verdict.json").read_text())
    reason = verdict["outcomes"][0]["reason"]
    assert "notrain/test with notrain/train was not checked" in reason and "absent-train.csv" in reason
    assert "rerun eval or sweep" in reason


def test_a_file_holding_every_split_is_read_once(tmp_path, monkeypatch):
    """eval reads an ID suite's train split with its validation and test splits: one file, one read."""
    import harness.data.readers as readers
    from harness.pipeline.common import RunOptions, load_suites, prepare_splits

    reads = []
    real = readers._read_local
    monkeypatch.setattr(readers, "_read_local", lambda *a: reads.append(a[1]) or real(*a))
    _csv(tmp_path / "data.csv", ["negative", "positive"] * 30)
    text = TRAIN_MISSING.replace("{name: train, role: train, files: [absent-train.csv]}",
                                 "{name: train, role: train, fraction: 0.4}")
    (tmp_path / "s.yaml").write_text(text.replace("fraction: 0.5", "fraction: 0.3"))
    loaded = prepare_splits(load_suites([tmp_path / "s.yaml"]), RunOptions())
    assert [sd.ref.split for sd in loaded.train] == ["train"] and len(loaded.splits) == 2
    assert reads == [["data.csv"]] and not loaded.unread_train


def test_a_few_shot_train_split_is_the_one_read_for_the_overlap_check(tmp_path, monkeypatch):
    import harness.data.readers as readers
    from harness.pipeline.common import RunOptions, load_suites, prepare_splits

    reads = []
    real = readers._read_local
    monkeypatch.setattr(readers, "_read_local", lambda *a: reads.append(a[1]) or real(*a))
    rows = [{"question": f"q{i}?", "options": ["x", "y"], "answer": i % 2} for i in range(30)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = (LM_SUITE % "question").replace("fraction: 0.5", "fraction: 0.3")
    text = text.replace('prompt: {template: "Q: {{question}}\\nA:"}',
                        'prompt:\n    template: "Q: {{question}}\\nA:"\n    fewshot: {k: 1, split: train}')
    text = text.replace("splits:\n", "splits:\n  - {name: train, role: train, fraction: 0.4}\n")
    (tmp_path / "lm.yaml").write_text(text)
    loaded = prepare_splits(load_suites([tmp_path / "lm.yaml"]), RunOptions())
    assert loaded.fewshot["lm-tiny"] is loaded.train[0] and reads == [["q.jsonl"]]


def test_a_few_shot_prompt_needs_its_train_split(tmp_path, capsys):
    rows = [{"question": f"q{i}?", "options": ["x", "y"], "answer": i % 2} for i in range(20)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = tmp_path / "lm.yaml"
    text = (LM_SUITE % "question").replace("  choices:", "    fewshot: {k: 1, split: train}\n  choices:")
    text = text.replace("splits:\n", "splits:\n  - {name: train, role: train, files: [absent.jsonl]}\n")
    suite.write_text(text.replace('prompt: {template: "Q: {{question}}\\nA:"}',
                                  'prompt:\n    template: "Q: {{question}}\\nA:"'))
    rc, _, err = _validate(capsys, suite)
    assert rc == 2 and "FAIL" in err and "absent.jsonl" in err, err


def test_a_policy_given_with_suites_is_checked_against_their_names(tmp_path, capsys):
    """A misspelt suite in a policy validated together with the suites: a failure naming the closest suite (exit
    2; trial 4: a warning let CI pass and the gate then failed with "missing suite"); a name close to none of the
    suites stays a warning (a policy may be meant for other suites too); alone, a policy gets no such check."""
    _csv(tmp_path / "data.csv", ["a", "b", "c", "d"] * 20)
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: policy\nname: p\nsuites: {id: [fuor]}\nrules:\n"
                      "  - {name: r, kind: delta, metric: accuracy, suites: id, max_drop: 0.02}\n")
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 2 and "1 invalid" in out
    assert "FAIL" in err and "names suite 'fuor'" in err and "closest suite given is 'four'" in err
    policy.write_text(policy.read_text().replace("fuor", "elsewhere"))
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 0 and "2 valid, 0 invalid" in out and "WARN" in err and "names suite 'elsewhere'" in err
    rc, out, err = _validate(capsys, "--no-data", policy)
    assert rc == 0 and "WARN" not in err


def test_the_demo_policy_with_two_of_its_four_suites_warns_without_failing(capsys):
    """New-user trial (2026-12-01): ``validate suites/policies/demo.yaml`` with the movies and tweets suites exited 2,
    calling vader-amazon a typo of vader-movies and vader-nyt one of vader-tweets (difflib's ratio counted the
    shared ``vader-`` prefix); they are other suites, so each is a warning."""
    root = Path(__file__).resolve().parents[2] / "suites"
    rc, out, err = _validate(capsys, "--no-data", root / "policies" / "demo.yaml", root / "vader-movies.yaml",
                             root / "vader-tweets.yaml")
    assert rc == 0 and "FAIL" not in err and "typo?" not in err, err
    assert "WARN" in err and "names suite 'vader-amazon'" in err and "names suite 'vader-nyt'" in err


def test_a_policy_that_cannot_pass_is_refused_by_validate(tmp_path, capsys):
    """LM user trial: ``max_drop: 15`` (meant as 15 points) passed validate and only the gate said "thresholds are
    fractions"; a rule on a metric the declared suite does not compute passed validate and the gate failed with
    "missing metric". Both are now validate failures (exit 2), and the summary counts files, not problems."""
    _csv(tmp_path / "data.csv", ["a", "b", "c", "d"] * 20)
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: policy\nname: p\nrules:\n"
                      "  - {name: r, kind: delta, metric: accuracy, suites: id, max_drop: 15}\n")
    rc, out, err = _validate(capsys, "--no-data", policy)
    assert rc == 2 and "0 valid, 1 invalid" in out and "ok " not in out
    assert "rule 'r': a change of 15 is larger than the range of accuracy" in err and "(0.02, not 2)" in err, err
    policy.write_text("kind: policy\nname: p\nsuites: {id: [four]}\nrules:\n"
                      "  - {name: r, kind: delta, metric: acc_norm, suites: id, max_drop: 0.02}\n"
                      "  - {name: f, kind: floor, metric: macro_f1, suites: [four], floor: 0.5}\n")
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 2 and "1 valid, 1 invalid" in out, out
    assert "rule 'r' gates on metric 'acc_norm', which suite four does not compute (four: accuracy, macro_f1)" in err
    # CI trial: "add it to the suite's metrics list" was the fix even where the suite's task cannot compute it
    assert "use a metric the classification task computes (accuracy, balanced_accuracy, ece, macro_f1, nll)" in err
    assert "add it to the suite's metrics list" not in err
    assert "rule 'f'" not in err  # macro_f1 is computed
    policy.write_text(policy.read_text().replace("acc_norm", "f1"))  # generation's token f1
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 2 and "use a metric the classification task computes" in err, err
    policy.write_text(policy.read_text().replace("metric: f1", "metric: nll"))  # computable, not listed: add it
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 2 and "or add it to the suite's metrics list" in err, err
    policy.write_text(policy.read_text().replace("nll", "accuracy"))
    rc, out, err = _validate(capsys, "--no-data", policy, _suite(tmp_path))
    assert rc == 0 and "2 valid, 0 invalid" in out, err


MC_FIELDS = ("kind: suite\nname: mc4\nrole: id\nsource: {type: local, files: [%s]}\nid_column: qid\n"
             "task:\n  kind: multiple_choice\n  prompt: {template: \"Q: {{question}}\\nA:\"}\n"
             "  choices: {fields: [a, b, c, e]}\n  gold: {index: answr}\nmetrics: [acc]\n"
             "splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
             "  - {name: test, role: test, fraction: 0.5}\n")


def test_a_missing_column_is_named_by_its_place_with_a_hint(tmp_path, capsys):
    """New-user trial (2026-12-01): 'expected: task.choices (4)' did not say which field; now each choices field
    is named by its place, and a near column name is suggested."""
    (tmp_path / "mc.csv").write_text("qid,question,a,b,c,d,answer\n" + "".join(f"q{i},w{i},x,y,z,v,0\n"
                                                                             for i in range(20)))
    (tmp_path / "mc.yaml").write_text(MC_FIELDS % "mc.csv")
    rc, _, err = _validate(capsys, tmp_path / "mc.yaml")
    assert rc == 2
    assert "task.choices.fields[3]: 'e'" in err and "task.gold.index: 'answr'" in err, err
    assert "(did you mean 'answer'?)" in err and "(4)" not in err


@pytest.mark.parametrize("name,text,said", [("empty.csv", "", "the data file is empty"),
                                            ("empty.jsonl", "\n", "the data file is empty"),
                                            ("header.csv", "qid,question,a,b,c,e,answr\n", "header and no rows")])
def test_an_empty_data_file_says_so(tmp_path, capsys, name, text, said):
    """An empty CSV said 'EmptyDataError: No columns to parse', an empty JSONL 'columns [] not found', a header-only
    CSV pointed at the built-in VADER source's neutral_band (new-user trial, 2026-12-01)."""
    (tmp_path / name).write_text(text)
    (tmp_path / "mc.yaml").write_text(MC_FIELDS % name)
    rc, _, err = _validate(capsys, tmp_path / "mc.yaml")
    assert rc == 2 and said in err and "neutral_band" not in err, err


def test_split_fractions_below_one_are_said_not_refused(tmp_path, capsys):
    """Session 33's note: fractions of 0.4 + 0.4 leave a fifth of the documents in no split, which validate did
    not say. Allowed (a subsample), so a warning, exit 0."""
    _csv(tmp_path / "data.csv", ["a", "b", "c", "d"] * 20)
    path = _suite(tmp_path)
    path.write_text(path.read_text().replace("fraction: 0.5", "fraction: 0.4"))
    rc, out, err = _validate(capsys, path)
    assert rc == 0 and "the split fractions sum to 0.8, so about 20% of the documents are in no split" in err
    path.write_text(path.read_text().replace("fraction: 0.4", "fraction: 0.5"))
    rc, out, err = _validate(capsys, path)
    assert rc == 0 and "in no split" not in err


TASK_SUITE = ("kind: suite\nname: {name}\nrole: {role}\n{shift}source: {{type: local, files: [{file}]}}\n"
              "task:\n{task}metrics: [{metrics}]\n"
              "splits:\n  - {{name: validation, role: validation, fraction: 0.5}}\n"
              "  - {{name: test, role: test, fraction: 0.5}}\n")
MC_TASK = ("  kind: multiple_choice\n  prompt: {template: \"Q: {{question}}\\nA:\"}\n"
           "  choices: {field: choices.text}\n  gold: {label: answerKey, labels: choices.label}\n")
BOOL_TASK = ("  kind: multiple_choice\n  prompt: {template: \"{{passage}}\\nQ: {{question}}?\\nA:\"}\n"
             "  choices: {fixed: [\"no\", \"yes\"]}\n  gold: {text: answer}\n")
GEN_TASK = ("  kind: generation\n  prompt: {template: \"Q: {{question}}\\nA:\"}\n  gold: {text: answer}\n"
            "  max_new_tokens: 8\n")


def _lm_suite(folder: Path, name: str, task: str, rows: list[dict], *, role: str = "id",
              metrics: str = "acc, acc_norm") -> Path:
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / f"{name}.yaml"
    path.write_text(TASK_SUITE.format(name=name, role=role, file=f"{name}.jsonl", task=task, metrics=metrics,
                                    shift="shift_type: natural\n" if role == "shift" else ""))
    return path


def _arc_rows(n=20, key="answerKey"):
    return [{"question": f"q{i}?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, key: "AB"[i % 2]}
            for i in range(n)]


def test_a_boolean_gold_column_under_gold_text_points_to_gold_index(tmp_path, capsys):
    """New-user trial: BoolQ (``answer`` is a JSON boolean) with ``gold: {text: answer}`` and choices
    ``["no", "yes"]`` said 'correct or remove that row in the data file' though every row fails alike."""
    rows = [{"passage": f"p{i}", "question": f"q{i}", "answer": i % 2 == 0} for i in range(20)]
    path = _lm_suite(tmp_path, "bq", BOOL_TASK, rows, role="shift", metrics="acc")
    rc, _, err = _validate(capsys, path)
    assert rc == 2 and "the gold text is not one of the row's choices" in err, err
    assert "fix: the column 'answer' holds booleans" in err and "use gold: {index: answer}" in err, err
    assert "correct or remove that row" not in err
    path.write_text(path.read_text().replace("gold: {text: answer}", "gold: {index: answer}"))
    rc, _, err = _validate(capsys, path)
    assert rc == 0, err


def test_a_wrong_gold_column_is_named_by_its_key_path(tmp_path, capsys):
    """New-user trial: ``gold: {label: answer_key}`` (the data has ``answerKey``) said "set task.gold field
    'answer_key' ..."; the fix names the key to change, task.gold.label."""
    path = _lm_suite(tmp_path, "arc", MC_TASK.replace("label: answerKey", "label: answer_key"), _arc_rows())
    rc, _, err = _validate(capsys, path)
    assert rc == 2 and "expected: task.gold.label: 'answer_key'" in err, err
    assert "set task.gold.label to a column of the data file (did you mean 'answerKey'?)" in err
    assert "task.gold field" not in err


def test_two_suites_with_one_name_fail_validate_naming_both_files(tmp_path, capsys):
    """New-user trial: ``harness validate a.yaml b.yaml`` (one suite name in both) said ``ok`` twice, and only the
    sweep refused them, with nothing after 'give every suite a unique name:'."""
    a = _lm_suite(tmp_path, "a", MC_TASK, _arc_rows())
    b = tmp_path / "b.yaml"
    b.write_text(a.read_text())  # the same name: a
    rc, out, err = _validate(capsys, a, b)
    assert rc == 2 and "0 valid, 2 invalid" in out and "ok " not in out, out
    assert err.count("2 suites share the name 'a'") == 2, err
    assert f"where: name: a in {a} and {b}" in err and f"e.g. name: a-2 in {b}" in err
    rc, out, err = _validate(capsys, "--no-data", tmp_path)  # found in a folder: the same
    assert rc == 2 and "2 suites share the name 'a'" in err
    b.write_text(a.read_text().replace("name: a\n", "name: b\n"))
    rc, out, err = _validate(capsys, a, b)
    assert rc == 0 and "2 valid, 0 invalid" in out, err


def test_a_role_rule_judges_the_suite_files_given_as_the_sweep_does(tmp_path, capsys):
    """New-user trial: ``validate POLICY SUITES...`` passed a ``suites: shift`` rule on acc_norm with a generation
    shift suite, and ``sweep --gate`` then refused it; validate now expands the role over the suite files given.
    Over suites of different tasks (no metric in common) the fix says to list the suites, one rule per task."""
    arc = _lm_suite(tmp_path, "arc", MC_TASK, _arc_rows())
    mc_shift = _lm_suite(tmp_path, "arc-shift", MC_TASK, _arc_rows(), role="shift")
    gen = _lm_suite(tmp_path, "gen", GEN_TASK, [{"question": f"q{i}", "answer": str(i)} for i in range(20)],
                    role="shift", metrics="exact_match")
    policy = tmp_path / "policy.yaml"
    policy.write_text("kind: policy\nname: p\nrules:\n"
                      "  - {name: id_gain, kind: delta, metric: acc_norm, suites: id, min_delta: 0.0}\n"
                      "  - {name: shift_drop, kind: delta, metric: acc_norm, suites: shift, max_drop: 0.02}\n")
    rc, out, err = _validate(capsys, "--no-data", policy, arc, mc_shift, gen)
    assert rc == 2 and "3 valid, 1 invalid" in out, err
    assert "rule 'shift_drop' gates on metric 'acc_norm', which suite gen does not compute" in err, err
    assert ("its suites are of different tasks, which share no metric: list the suites explicitly, one rule per "
            "task (suites: [arc-shift] with metric: acc_norm (multiple_choice); suites: [gen] with metric: "
            "exact_match (generation))") in err
    assert "id_gain" not in err
    rc, out, err = _validate(capsys, "--no-data", policy, arc, gen)  # one task in the role: use its metric
    assert rc == 2 and "use a metric the generation task computes" in err and "one rule per task" not in err, err
    rc, out, err = _validate(capsys, "--no-data", policy, arc, mc_shift)
    assert rc == 0, err
    # the sweep's check (harness.gate.policy_problems, run=True) says the same
    from harness.gate import policy_problems
    from harness.spec.load import load_spec
    found, _ = policy_problems(load_spec(policy), {"arc": ("id", ["acc", "acc_norm"]),
                                                   "arc-shift": ("shift", ["acc", "acc_norm"]),
                                                   "gen": ("shift", ["exact_match"])}, run=True)
    assert any("one rule per task (suites: [arc-shift]" in line for line in found), found


def test_suites_found_in_a_folder_are_not_taken_as_one_run(tmp_path, capsys):
    """``harness validate suites/`` checks a folder of suites for several runs: a role rule there judges only the
    suites its policy declares, not every suite of the role (the shipped demo policy beside the LM suites)."""
    (tmp_path / "s").mkdir()
    _lm_suite(tmp_path / "s", "gen", GEN_TASK, [{"question": f"q{i}", "answer": str(i)} for i in range(20)],
              role="shift", metrics="exact_match")
    (tmp_path / "s" / "policy.yaml").write_text(
        "kind: policy\nname: p\nrules:\n  - {name: shift_drop, kind: delta, metric: acc_norm, suites: shift, "
        "max_drop: 0.02}\n")
    rc, out, err = _validate(capsys, "--no-data", tmp_path / "s")
    assert rc == 0 and "2 valid, 0 invalid" in out, err
    # a policy found in a folder, with a suite file named too: not taken as POLICY SUITES... (one run's)
    rc, out, err = _validate(capsys, "--no-data", tmp_path / "s", tmp_path / "s" / "gen.yaml")
    assert rc == 0, err
