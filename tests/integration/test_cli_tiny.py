"""The CLI end to end on tiny models: eval, gate, report, validate; exit codes; nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main


@pytest.fixture(scope="module")
def eval_run(tiny_pair, tiny_suites, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "eval"
    code = main(["eval", "--model", str(tiny_pair[0]), "--suite", *map(str, tiny_suites), "--out", str(out),
                 "--n-resamples", "200", "--quiet"])
    assert code == 0
    return out


def test_eval_writes_the_run_directory(eval_run):
    for name in ("manifest.json", "summary.json", "per_alpha.csv", "predictions.parquet", "report.md",
                 "report.html"):
        assert (eval_run / name).is_file(), name
    summary = json.loads((eval_run / "summary.json").read_text())
    assert [p["id"] for p in summary["points"]] == ["model"]
    res = summary["results"]["model"]
    assert set(res) == {"tiny-id", "tiny-shift", "tiny-typos"}
    acc = res["tiny-id"]["test"]["metrics"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["higher_is_better"] is True
    table = pd.read_csv(eval_run / "per_alpha.csv")
    assert {"point", "suite", "split", "metric", "value", "ci_low", "ci_high", "n"} <= set(table.columns)
    preds = pd.read_parquet(eval_run / "predictions.parquet")
    assert len(preds) == sum(v["n"] for s in res.values() for v in s.values())
    manifest = json.loads((eval_run / "manifest.json").read_text())
    assert manifest["models"]["model"]["fingerprint"] and "torch" in manifest["versions"]
    wall = manifest["command_wall_s"]  # the whole command, not only its measured stages
    assert wall["from"] == "the start of the command" and wall["seconds"] >= sum(manifest["timings_s"].values())
    assert f"{wall['seconds']:.1f} s from the start of the command" in (eval_run / "report.md").read_text()


def test_eval_prints_metric_table(tiny_pair, tiny_suites, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_pair[0]), "--suite", str(tiny_suites[0]), "--n-resamples", "200",
                 "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "95% interval" in out


def test_python_twin_matches_cli(tiny_pair, tiny_suites, eval_run):
    import harness

    res = harness.run_eval(tiny_pair[0], tiny_suites, n_resamples=200, progress=False)
    cli = json.loads((eval_run / "summary.json").read_text())["results"]["model"]
    assert res.summary.results["model"]["tiny-id"]["test"].metrics["accuracy"].value == \
        cli["tiny-id"]["test"]["metrics"]["accuracy"]["value"]
    df = res.to_pandas()
    assert {"suite", "split", "metric", "value"} <= set(df.columns) and len(df) > 0


@pytest.mark.parametrize("args, needle", [
    (["eval", "--model", "does/not/exist/x", "--suite", "{suite}"], "not found"),
    (["eval", "--model", "{model}", "--suite", "missing.yaml"], "not found"),
    (["eval", "--model", "{model}", "--suite", "{suite}", "--split", "nope"], "nope"),
    (["eval", "--model", "{model}"], ""),
    (["eval", "--model", "{model}", "--suite", "{suite}", "--batch-tokens", "0"], "--batch-tokens"),
    (["eval", "--model", "{model}", "--suite", "{suite}", "--n-resamples", "0"], "--n-resamples"),
    (["eval", "--bogus-flag"], ""),
])
def test_unusable_input_exits_2_and_writes_nothing(tiny_pair, tiny_suites, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    argv = [a.format(model=tiny_pair[0], suite=tiny_suites[0]) for a in args] + ["--out", str(out)]
    assert main(argv) == 2
    assert not out.exists() or not any(out.iterdir())
    assert needle in capsys.readouterr().err


def test_model_with_other_label_order_is_refused(tiny_suites, tmp_path, capsys):
    from conftest import make_tiny_bert

    d = make_tiny_bert(tmp_path / "swapped", seed=3, id2label={0: "positive", 1: "negative"})
    assert main(["eval", "--model", str(d), "--suite", str(tiny_suites[0]), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "different order" in err and "--label-map" in err
    assert main(["eval", "--model", str(d), "--suite", str(tiny_suites[0]), "--no-report", "--quiet",
                 "--label-map", "positive=positive,negative=negative"]) == 0


def test_report_and_gate_on_stored_run(eval_run, tmp_path, capsys):
    (eval_run / "report.html").unlink()
    assert main(["report", str(eval_run)]) == 0
    assert (eval_run / "report.html").is_file()
    policy = tmp_path / "floor.yaml"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n"
                      "  - {name: id_floor, kind: floor, metric: accuracy, suites: id, floor: 0.99, mode: point}\n")
    assert main(["gate", str(eval_run), "--policy", str(policy), "--junit", str(tmp_path / "j.xml")]) == 1
    assert (tmp_path / "j.xml").is_file() and (eval_run / "verdict.json").is_file()
    policy.write_text(policy.read_text().replace("floor: 0.99", "floor: 0.0"))
    assert main(["gate", str(eval_run), "--policy", str(policy)]) == 0
    assert main(["gate", str(tmp_path / "no-run"), "--policy", str(policy)]) == 2


def test_the_run_directorys_junit_file_never_keeps_an_earlier_verdict(eval_run, tmp_path):
    """CI trial (2026-12-01): ``harness gate RUN --junit ci/junit.xml`` failed, and RUN/junit.xml kept the earlier
    gate's pass, which a job collecting ``runs/*/junit.xml`` would report. The run's file is always rewritten."""
    policy = tmp_path / "floor.yaml"
    rule = "  - {name: id_floor, kind: floor, metric: accuracy, suites: id, floor: FLOOR, mode: point}\n"
    policy.write_text("kind: policy\nname: floor\ncandidate: adapted\nrules:\n" + rule.replace("FLOOR", "0.0"))
    assert main(["gate", str(eval_run), "--policy", str(policy)]) == 0
    assert 'failures="0"' in (eval_run / "junit.xml").read_text()
    policy.write_text(policy.read_text().replace("floor: 0.0", "floor: 0.99"))
    assert main(["gate", str(eval_run), "--policy", str(policy), "--junit", str(tmp_path / "ci" / "junit.xml")]) == 1
    for junit in (eval_run / "junit.xml", tmp_path / "ci" / "junit.xml"):
        assert 'failures="1"' in junit.read_text(), junit


def test_gating_an_eval_run_with_rules_against_base_exits_2_and_writes_nothing(eval_run, tmp_path, capsys):
    """CI trial (2026-12-01): a release policy (delta rules against base) on an eval run exited 1 with every rule
    failing "missing point", and replaced the run's verdict.json and junit.xml. The run cannot have a base point,
    so the policy is refused before judging, as a missing suite is."""
    policy = tmp_path / "vs-base.yaml"
    policy.write_text("kind: policy\nname: vs-base\ncandidate: adapted\nrules:\n"
                      "  - {name: id_gain, kind: delta, metric: accuracy, suites: id, min_delta: 0.0, mode: point}\n"
                      "  - {name: flips, kind: negative_flips, suites: id, max_rate: 0.5}\n")
    before = {f: (eval_run / f).read_bytes() if (eval_run / f).exists() else None
              for f in ("verdict.json", "junit.xml")}
    assert main(["gate", str(eval_run), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "rules 'id_gain', 'flips' compare with the run's base point, but an eval run has only ['model']" in err
    assert "harness sweep" in err and "reference: baseline" in err
    assert {f: (eval_run / f).read_bytes() if (eval_run / f).exists() else None for f in before} == before


def test_internal_errors_exit_3_and_say_bug(monkeypatch, tiny_suites, capsys):
    import harness.cli as cli

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "evaluate_model", boom)
    assert main(["eval", "--model", "x", "--suite", str(tiny_suites[0])]) == 3
    err = capsys.readouterr().err
    assert "a bug" in err and "Traceback" not in err
    assert main(["eval", "--model", "x", "--suite", str(tiny_suites[0]), "--debug"]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_validate_repository_suites():
    root = Path(__file__).resolve().parents[2]
    assert main(["validate", str(root / "suites"), "--quiet", "--no-data"]) == 0
    # the committed language-model data, checked against its suites (VADER suites fetch an archive: not here)
    assert main(["validate", str(root / "suites" / "lm"), "--quiet"]) == 0


def test_error_exit_code_comes_from_the_error_class(monkeypatch, tiny_suites, capsys):
    """cli.main returns the raised HarnessError's own exit_code (2 for every error the harness defines)."""
    import harness.cli as cli
    from harness.errors import HarnessError

    class Custom(HarnessError):
        exit_code = 4

    def raise_custom(*a, **k):
        raise Custom("custom failure")

    monkeypatch.setattr(cli, "evaluate_model", raise_custom)
    assert main(["eval", "--model", "x", "--suite", str(tiny_suites[0])]) == 4
    assert "custom failure" in capsys.readouterr().err


def test_sweep_run_file_keys_and_flags_override_them(tiny_pair, tiny_suites, tmp_path):
    """``-c run.yaml``: paths resolve against the file, its settings apply, flags win; all land in the manifest."""
    import yaml

    cfg = tmp_path / "cfg" / "run.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({"kind": "run", "base": str(tiny_pair[0]), "adapted": str(tiny_pair[1]),
                                   "suites": [str(s) for s in tiny_suites], "out": "runs/r1", "alphas": [0.0, 0.5, 1.0],
                                   "seed": 3, "n_resamples": 20, "report": False, "packed": "off"}))
    assert main(["sweep", "-c", str(cfg), "--seed", "5", "--quiet", "--no-store"]) == 0
    manifest = json.loads((cfg.parent / "runs" / "r1" / "manifest.json").read_text())
    s = manifest["settings"]
    assert (s["seed"], s["n_resamples"], s["alphas"], s["packed"], s["use_store"]) == (5, 20, [0.0, 0.5, 1.0], "off",
                                                                                        False)
    assert manifest["alphas"] == [0.0, 0.5, 1.0] and isinstance(s["threads"], int)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: run\ndtyp: bf16\n")
    assert main(["sweep", "-c", str(bad)]) == 2


def test_every_out_flag_has_a_help_text():
    from harness.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    seen = []
    for name, p in sub.choices.items():
        for action in p._actions:
            if "--out" in action.option_strings:
                seen.append(name)
                assert action.help and len(action.help) > 20, name
    assert {"eval", "sweep", "blend", "demo", "train"} <= set(seen)


def test_sweep_and_eval_without_out_say_nothing_was_written(tiny_pair, tiny_suites, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 *map(str, tiny_suites), "--alphas", "0,1", "--n-resamples", "20", "--no-store", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "chosen alpha" in out and "run directory: none written (no --out)" in out and "--out DIR" in out
    assert main(["eval", "--model", str(tiny_pair[0]), "--suite", str(tiny_suites[0]), "--n-resamples", "20",
                 "--no-store", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "run directory: none written (no --out)" in out and "the results store was not used (--no-store)" in out
    assert not any(tmp_path.iterdir())  # and indeed nothing was written


def test_sweep_without_out_says_it_wrote_the_results_store(tiny_pair, tiny_suites, tmp_path, capsys, monkeypatch):
    """No --out, store on (the default): the note names the store it wrote and how to turn it off, and --out's
    help says the same (a fresh user read 'nothing written' while the store grew)."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    assert main(["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite",
                 *map(str, tiny_suites), "--alphas", "0,1", "--n-resamples", "20", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("run directory: none written (no --out)"))
    assert lines[i + 1].startswith(f"caches under HARNESS_CACHE ({cache}): the results store "
                                   f"{cache / 'results.sqlite'} keeps this run's per-example scores")
    assert "--no-store turns it off" in lines[i + 1] and "tokenized splits and model file" in lines[i + 1]
    assert (cache / "results.sqlite").is_file() and [p.name for p in tmp_path.iterdir()] == ["cache"]
    from harness.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("sweep", "eval"):
        out_flag = next(a for a in sub.choices[command]._actions if "--out" in a.option_strings)
        assert "results store" in out_flag.help and "--no-store" in out_flag.help, command


def test_sweep_with_out_prints_where_the_report_is(tiny_pair, tiny_suites, tmp_path, capsys):
    """Issue 19 trial: `sweep --out DIR` printed only "run directory: DIR"; it now says where the report is, and
    with --no-report how to render it (the README says --out holds the report)."""
    args = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite", *map(str, tiny_suites),
            "--alphas", "0,1", "--n-resamples", "20", "--no-store", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index(f"run directory: {tmp_path / 'r'}")
    assert lines[i + 1] == (f"report: {tmp_path / 'r' / 'report.html'} (and report.md beside it; re-render with "
                            f"`harness report {tmp_path / 'r'}`)")
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()
    assert main([*args, "--out", str(tmp_path / "n"), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert f"report: not rendered (--no-report); render it with `harness report {tmp_path / 'n'}`" in out
    assert not (tmp_path / "n" / "report.html").exists()
