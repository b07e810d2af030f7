"""The ``harness`` command line: a thin layer that parses flags, builds records and calls :mod:`harness.pipeline`.

Exit codes (``../shared/CONTRACT.md``): 0 success (and every gate rule passed); 1 a gate ran and failed;
2 unusable input (bad flags, spec, file, model); 3 an internal error (a bug).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import traceback
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

from harness import __version__
from harness.api import sweep_with_settings
from harness.demo.run import run_demo
from harness.errors import HarnessError, SpecError, format_error
from harness.gate_outputs import verdict_to_markdown
from harness.numfmt import fmt_num
from harness.progress import log_through_bars, mark_command_start, process_started
from harness.pipeline import evaluate_model, run_gate
from harness.pipeline.blend import blend_checkpoint
from harness.pipeline.distributed import dist_env, rank_logging
from harness.rundir import OUT_RUN_HELP, per_alpha_frame, run_dir_line
from harness.settings import Settings, flag_of, quiet_library_bars, make_settings, settings_fields
from harness.spec.load import load_spec, suite_name_clashes, validate_paths
from harness.spec.run import PATH_FIELDS, SETTING_KEYS
from harness.train.command import train_model


__all__ = ["main", "build_parser"]

log = logging.getLogger("harness.cli")
EXIT_OK, EXIT_GATE_FAILED, EXIT_INPUT, EXIT_BUG = 0, 1, 2, 3


def _type_of(info) -> dict[str, Any]:
    """argparse keywords for a settings field's type: a switch, choices, int, float or text."""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if ann is bool:
        return {}
    if typing.get_origin(ann) is Literal:
        return {"choices": list(typing.get_args(ann))}
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:  # an optional choice
        return {"choices": list(typing.get_args(args[0]))}
    for t in (int, float):
        if ann is t or args == [t]:
            return {"type": t}
    return {}


def _add_settings(p: argparse.ArgumentParser, command: str) -> None:
    """One flag per :class:`harness.settings.Settings` field of ``command``; a flag left out is not in the
    namespace (``argparse.SUPPRESS``), so a run file or the default applies."""
    g = p.add_argument_group("settings (also run-file keys and Python API keywords; see the README)")
    for name, info in settings_fields(command).items():
        flag = flag_of(name)
        text = info.description + ("" if info.default is None or info.annotation is bool
                                   else f" (default: {info.default})")
        if flag.startswith("--no-"):
            text = f"turn off (on by default): {text}"
        if info.annotation is bool:
            g.add_argument(flag, dest=name, action="store_const", const=not flag.startswith("--no-"),
                           default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        else:
            g.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=text.replace("%", "%%"),
                           **_type_of(info))


def _common(p: argparse.ArgumentParser, command: str | None = None) -> None:
    if command is not None:
        _add_settings(p, command)
    g = p.add_argument_group("output")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    g.add_argument("--quiet", action="store_true",
                   help="print only errors, the closing lines (where the outputs are) and, for eval, sweep and blend, "
                        "one line counting the notes it hid")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="harness", description="Robustness harness for fine-tuned models: evaluate, "
                                "sweep WiSE-FT blends over alpha, gate releases, report.")
    p.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate suite, policy, training and run YAML files (loads no model)")
    v.add_argument("paths", nargs="+", help="files or folders")
    v.add_argument("--no-data", action="store_true",
                   help="check the specs only; by default every suite's data is also loaded and checked (files, "
                   "columns, template fields, labels inside classes, classes without examples)")
    _common(v)

    e = sub.add_parser("eval", help="score one model on suites")
    e.add_argument("--model", required=True,
                   help="checkpoint folder or hub id, or a PEFT adapter or ReFT folder (then --base)")
    e.add_argument("--base", default=None, help="with an adapter or ReFT folder as --model: the base model it "
                   "applies to (default: the base folder its adapter_config.json or reft_config.json records)")
    e.add_argument("--suite", nargs="+", required=True, dest="suites",
                   help="suite files or folders of them (kind: suite)")
    e.add_argument("--out", default=None, help=OUT_RUN_HELP)
    _common(e, "eval")

    s = sub.add_parser("sweep", help="evaluate base, adapted and blends; select alpha; optionally gate")
    s.add_argument("-c", "--config", default=None, help="run YAML (kind: run); flags override it")
    s.add_argument("--base", default=None, help="the model before fine-tuning (checkpoint folder or hub id)")
    s.add_argument("--adapted", default=None, help="full checkpoint, PEFT adapter folder or ReFT folder")
    s.add_argument("--suite", nargs="+", default=None, dest="suites",
                   help="suite files or folders of them (kind: suite); at least one ID suite with a validation split")
    s.add_argument("--gate", default=None, help="gate policy file (kind: policy)")
    s.add_argument("--baseline", default=None, help="baseline run directory for the gate")
    s.add_argument("--junit", default=None,
                   help="also write the JUnit XML here (junit.xml in the run folder is always written)")
    s.add_argument("--out", default=None, help=OUT_RUN_HELP + " (also `out:` in the -c run file)")
    s.add_argument("--report-examples", action="store_true",
                   help="show the largest negative flips with their dataset text in the local report.html")
    _common(s, "sweep")

    b = sub.add_parser("blend", help="write the blend at one alpha as a safetensors checkpoint")
    b.add_argument("--base", required=True)
    b.add_argument("--adapted", required=True)
    b.add_argument("--alpha", type=float, required=True, help="weight of the adapted model in [0, 1]")
    b.add_argument("--out", required=True, help="checkpoint folder to write (safetensors, config, tokenizer)")
    _common(b, "blend")  # blend scores nothing: no bootstrap, store, report or label settings

    g = sub.add_parser("gate", help="judge a stored run with a gate policy (loads no model)")
    g.add_argument("run_dir", nargs="?", default=None, help="run directory (optional with --plan --plan-n)")
    g.add_argument("--policy", required=True, help="gate policy file (kind: policy)")
    g.add_argument("--baseline", default=None, help="an earlier run directory, for rules whose reference is "
                   "baseline (an unused --baseline is noted, not judged)")
    g.add_argument("--junit", default=None,
                   help="also write the JUnit XML here (junit.xml in the run folder is always written)")
    # gate-stats: --plan prints the policy's false-fail rate and power instead of judging
    g.add_argument("--plan", action="store_true", help="print the policy's false-fail rate and power (for the run's "
                                                       "n and disagreement, or --plan-n) instead of judging")
    g.add_argument("--plan-n", type=int, default=None, help="--plan: test examples per suite")
    g.add_argument("--plan-disagreement", type=float, default=0.10, help="--plan: share of examples where an "
                                                                          "equal candidate and base disagree")
    g.add_argument("--plan-drop", type=float, default=0.02, help="--plan: the regression to detect (fraction)")
    _common(g)

    r = sub.add_parser("report", help="(re)render the report of a stored run (loads no model)")
    r.add_argument("run_dir")
    r.add_argument("--examples", action="store_true", help="show the largest negative flips with their dataset "
                   "text (read from the suite files in manifest.json) in report.html; never in a committed sample")
    _common(r)

    d = sub.add_parser("demo", help="end-to-end demo on a real model and real data: sweep, gate, report "
                       "(--task sentiment: MiniLM on VADER domains; --task lm: SmolLM2 on ARC and BoolQ)")
    d.add_argument("--task", choices=["sentiment", "lm"], default="sentiment",
                   help="sentiment (default): MiniLM sentence classifier; lm: SmolLM2-135M-Instruct language model")
    d.add_argument("--adaptation", choices=["full", "lora", "reft"], default=None,
                   help="fine-tuning of the adapted model (default: full for sentiment, lora for lm; reft: "
                        "representation fine-tuning, lm only)")
    d.add_argument("--profile", choices=["quick", "full"], default="quick")
    d.add_argument("--out", default=None, help="run directory to write (default reports/demo in the current "
                   "folder; --task lm: reports/lm-demo)")
    d.add_argument("--strict", action="store_true", help="exit 1 when the demo's gate fails")
    d.add_argument("--models-only", action="store_true",
                   help="only build (or find in the cache) the demo's base and adapted models and print their "
                        "folders, for `harness sweep --base ... --adapted ...` on your own suites; no sweep")
    d.add_argument("--refresh-sample", action="store_true",
                   help="also refresh the committed sample report in reports/sample/ (--task lm: reports/sample-lm/; "
                   "figures and tables only)")
    _common(d, "demo")

    t = sub.add_parser("train", help="train on a suite's train split: linear probe, LP-FT, full or LoRA fine-tune "
                       "(classification suites) or LoRA / full fine-tune of a causal LM (multiple-choice suites); "
                       "writes a checkpoint or adapter folder with training.json")
    t.add_argument("-c", "--config", required=True, help="training YAML (kind: training): the hyperparameters")
    t.add_argument("--suite", required=True, help="the ID suite: trains on its train split; its validation split "
                   "chooses the probe's C and is scored after training")
    t.add_argument("--base", required=True, help="the model to start from: a sentence-transformers folder or a "
                   "classifier checkpoint (classification), a causal-LM folder (multiple choice)")
    t.add_argument("--out", required=True, help="folder to create (lpft writes OUT/base and OUT/adapted)")
    _common(t, "train")
    return p


def _settings(a: argparse.Namespace, command: str, cfg: dict[str, Any] | None = None) -> Settings:
    """The run's settings: flags given, then run-file keys, then defaults (progress unless --quiet)."""
    fields = settings_fields(command)
    values = {**(cfg or {}), **{k: v for k, v in vars(a).items() if k in fields}}
    if "progress" in fields:  # bars on a terminal, one INFO line per step otherwise (harness.progress); --quiet: none
        values.setdefault("progress", not a.quiet)
    return make_settings(values, command=command)


def _print_table(summary, quiet: bool) -> None:
    if quiet:
        return
    df = per_alpha_frame(summary)
    df = df[df["kind"] == "weights"].drop(columns=["kind"])
    if df.empty:
        return
    df["95% interval"] = [f"[{fmt_num(lo)}, {fmt_num(hi)}]" if lo is not None and hi is not None else "n/a"
                          for lo, hi in zip(df["ci_low"], df["ci_high"])]
    df["value"] = [fmt_num(v, 4, missing="nan") for v in df["value"]]
    cols = ["point", "suite", "split", "metric", "value", "95% interval", "n"]
    print(df[cols].to_string(index=False))


def _print_hidden_notes(notes: list[str], quiet: bool, kept: str) -> None:
    """Under ``--quiet`` the notes (truncations, capped rows, overflowed outputs...) are logged as warnings and
    hidden; one line on stderr still counts them, so none goes unnoticed; ``kept`` says where they are saved."""
    if quiet and notes:
        print(f"{len(notes)} note{'s' if len(notes) > 1 else ''} hidden by --quiet (in {kept}; rerun without "
              "--quiet to see them)", file=sys.stderr)


def _print_curve(summary, quiet: bool, own: dict[str, str] | None = None, outside: list[str] = ()) -> None:
    """Sweep table: one row per point, each suite's selection metric (``own``: suite -> metric) on its splits
    (test splits last); ``outside`` names the suites left out of the selection."""
    if quiet:
        return
    metric = summary.selection.metric if summary.selection else "accuracy"
    own = own or {}
    df = per_alpha_frame(summary)
    df = df[df["kind"] == "weights"]
    mixed = len(set(own.values())) > 1
    if mixed:  # each suite on its own metric, named in its column
        df = df[[own.get(su, metric) == m for su, m in zip(df["suite"], df["metric"])]]
        df = df.assign(column=df["suite"] + "/" + df["split"] + " " + df["metric"])
    else:
        df = df[df["metric"] == metric].assign(column=lambda d: d["suite"] + "/" + d["split"])
    if df.empty:
        return
    table = df.pivot_table(index="point", columns="column", values="value", sort=False).round(4)
    order = {p.id: (p.alpha if p.alpha is not None else -1.0, p.role != "base") for p in summary.points}
    table = table.loc[sorted(table.index, key=lambda i: order.get(i, (2.0, True)))]
    chosen = summary.chosen.id if summary.chosen else None
    table.index = [f"{i} *" if i == chosen else i for i in table.index]
    print(f"{'each suite selecting on its own metric' if mixed else metric} per point (* = chosen):")
    print(table.to_string())
    if outside:
        print(f"not selected on (in_selection: false): {', '.join(outside)}")


def _cmd_validate(a) -> int:
    valid, problems = validate_paths(a.paths)  # one message per file that is not a valid spec (or is missing)
    n_invalid = len(problems)
    policy_problems = _check_policy_suites(valid, {Path(p) for p in a.paths if Path(p).is_file()})
    clashes = suite_name_clashes((spec.name, path) for path, spec in valid if spec.kind == "suite")
    n_valid = 0
    for path, spec in valid:
        clash = [f"{path}: {clashes[spec.name]}"] if spec.kind == "suite" and spec.name in clashes else []
        data_problems = (_check_data(path, spec, a.quiet, failed=bool(clash))
                         if spec.kind == "suite" and not a.no_data else [])
        own = data_problems + clash + policy_problems.get(path, [])  # a sweep refuses a clash: said for both files
        if not a.quiet and not own and (spec.kind != "suite" or a.no_data):  # a checked suite prints its own lines
            print(f"ok    {path}  (kind: {spec.kind})")
        n_valid += not own
        n_invalid += bool(own)
        problems += own
    for p in problems:
        print(f"FAIL  {p}", file=sys.stderr)
    checked = not a.no_data and any(spec.kind == "suite" for _, spec in valid)
    print(f"{n_valid} valid, {n_invalid} invalid" + (" (data checked)" if checked else ""))
    return EXIT_OK if not problems else EXIT_INPUT


def _check_policy_suites(valid, files: set[Path]) -> dict[Path, list[str]]:
    """Each policy's problems (:func:`harness.gate.policy_problems`, against the suites given with it), by path;
    its warnings are printed. A rule over a role (``suites: id``/``shift``) of a policy file given by name judges
    the suite files given by name (``files``, as ``sweep --gate POLICY --suite SUITES`` judges them) of that role
    too, not only those the policy declares: its metric must be one they compute (files found in a folder, as in
    ``harness validate suites/``, need not be one run's)."""
    from harness.gate import policy_problems

    suites = {spec.name: (spec.role.value, list(spec.metrics)) for _, spec in valid if spec.kind == "suite"}
    given = {spec.name for path, spec in valid if spec.kind == "suite" and path in files}
    out: dict[Path, list[str]] = {}
    for path, spec in valid:
        if spec.kind != "policy":
            continue
        # POLICY SUITES... as sweep --gate: a role rule judges the suite files of its role named with it
        problems, warnings = policy_problems(spec, suites, run_suites=given if path in files else None)
        for line in warnings:
            print(f"WARN  {path}: {line}", file=sys.stderr)
        if problems:
            out[path] = [f"{path}: {line}" for line in problems]
    return out


def _check_data(path: Path, suite, quiet: bool, *, failed: bool = False) -> list[str]:
    """Load a valid suite's splits (no model) and print one line per split; returns the problems found.
    ``failed``: the suite already has a problem (a name another suite has), so its heading is not ``ok``."""
    from harness.data.check import TRAIN_NEEDED_BY, check_suite_data, missing_class_notes

    try:
        checks = check_suite_data(suite, Path(path).resolve())
    except HarnessError as e:
        return [f"{path}: data: {e}"]
    if not quiet:
        print(f"{'FAIL' if failed else 'ok  '}  {path}  (kind: suite{'; data read, see FAIL below' if failed else ''})")
    for c in checks:
        if not quiet:
            print(f"      data  {c.line()}")
        if c.unread:  # a missing train file (only `harness train` needs it): a warning, not a failure
            print(f"WARN  {path}: split {c.split} (train) not read; {TRAIN_NEEDED_BY}:"
                  + "".join(f"\n      {ln}" for ln in c.unread.splitlines()), file=sys.stderr)
    read = {c.split: c.missing for c in checks if not c.unread}
    for note in missing_class_notes(suite.name, read, len(suite.classes or ())):
        print(f"WARN  {note}", file=sys.stderr)
    total = sum(sp.fraction for sp in suite.splits if sp.fraction is not None)
    if any(sp.fraction is not None for sp in suite.splits) and total < 1.0 - 1e-9:  # allowed: said, not refused
        print(f"WARN  {path}: the split fractions sum to {total:g}, so about {1.0 - total:.0%} of the documents are "
              f"in no split (never scored); make them sum to 1 if that is not intended", file=sys.stderr)
    return []


def _cmd_eval(a) -> int:
    opts = _settings(a, "eval")
    res = evaluate_model(a.model, a.suites, out=a.out, options=opts, argv=sys.argv, base=a.base)
    _print_table(res.summary, a.quiet)
    _print_hidden_notes(res.summary.notes, a.quiet, "summary.json's notes and the report")
    print(run_dir_line(res.run_dir, use_store=opts.use_store, model_kind=res.model_kind, report=opts.report))
    return EXIT_OK


def _sweep_config(a) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, settings) of the ``-c`` run file: models, suites, gate and outputs (resolved against the file's
    folder), and the settings keys the file sets."""
    if not a.config:
        return {}, {}
    cfg = load_spec(a.config, kind="run").model_dump(exclude_unset=True)
    root = Path(a.config).resolve().parent
    paths = {k: [str(root / p) for p in cfg[k]] if isinstance(cfg[k], list) else str(root / cfg[k])
             for k in PATH_FIELDS if cfg.get(k) is not None}
    return paths, {k: cfg[k] for k in SETTING_KEYS if k in cfg}


def _moved_selection(summary) -> list[str]:
    """The validation splits whose scores the selection policy used: under ``id-only`` (and ``weighted`` at ID
    weight 1) the shift suites' validation splits are scored but move nothing, so they are not named (trial)."""
    sel = summary.selection
    id_only = sel.policy == "id-only" or (sel.policy == "weighted" and (sel.params or {}).get("weight") == 1.0)

    def is_shift(key: str) -> bool:
        info = summary.suites.get(key.split("/", 1)[0])
        return info is not None and info.role == "shift"
    return [key for key in sel.selected_on if not (id_only and is_shift(key))]


def _cmd_sweep(a) -> int:
    paths, cfg = _sweep_config(a)
    paths.update({k: getattr(a, k) for k in PATH_FIELDS if getattr(a, k, None) is not None})
    for need in ("base", "adapted", "suites"):
        if not paths.get(need):
            raise SpecError(format_error(f"sweep needs --{need.rstrip('s')}", where="command line / run config",
                                         fix=f"pass --{need.rstrip('s')} or set {need} in the -c run file"))
    opts = _settings(a, "sweep", cfg)
    res = sweep_with_settings(paths["base"], paths["adapted"], paths["suites"], opts, gate=paths.get("gate"),
                              baseline=paths.get("baseline"), junit=paths.get("junit"), out=paths.get("out"),
                              argv=sys.argv)
    _print_curve(res.summary, a.quiet, res.selection_metrics, res.outside_selection)
    _print_hidden_notes(res.summary.notes, a.quiet, "summary.json's notes and the report")
    sel = res.summary.selection
    print(f"chosen alpha: {sel.chosen_alpha:g} ({sel.policy}, selected on {', '.join(_moved_selection(res.summary))})")
    print(run_dir_line(res.run_dir, run_file=True, use_store=opts.use_store, model_kind=res.model_kind,
                       report=opts.report))
    if a.report_examples and res.run_dir and not getattr(a, "no_report", False):
        from harness.api import run_report

        run_report(res.run_dir, include_examples=True, progress=not a.quiet)
    if res.verdict is not None:
        from harness.gate_outputs import failed_rule_lines

        lines = failed_rule_lines(res.verdict)  # failures, and passes that carry a warning
        if lines:
            print("\n".join(lines))
    return _verdict_exit(res.verdict)


def _verdict_exit(verdict) -> int:
    if verdict is None:
        return EXIT_OK
    print(f"gate: {'PASS' if verdict.passed else 'FAIL'} ({sum(o.passed for o in verdict.outcomes)}/"
          f"{len(verdict.outcomes)} rule checks passed, policy {verdict.policy})")
    return EXIT_OK if verdict.passed else EXIT_GATE_FAILED


def _cmd_blend(a) -> int:
    opts = _settings(a, "blend")
    outcome = blend_checkpoint(a.base, a.adapted, a.alpha, a.out, head=opts.head, options=opts)
    _print_hidden_notes(outcome.notes, a.quiet, "the blend's config.json under harness_blend.notes")
    print(f"blend at alpha={a.alpha:g} written to {outcome.path}")
    return EXIT_OK


def _cmd_gate(a) -> int:
    if a.plan:  # gate-stats: power analysis of the policy (harness.metrics.power)
        from harness.metrics.power import format_plan, plan_command

        print(format_plan(plan_command(a.policy, a.run_dir, n=a.plan_n, disagreement=a.plan_disagreement,
                                       drop=a.plan_drop)))
        return EXIT_OK
    if a.run_dir is None:
        from harness.errors import SpecError, format_error

        raise SpecError(format_error("harness gate needs a run directory", where="harness gate",
                                     fix="harness gate RUN_DIR --policy FILE (or --plan --plan-n N to size a policy)"))

    verdict = run_gate(a.run_dir, a.policy, baseline=a.baseline, junit=a.junit)
    if not a.quiet:
        print(verdict_to_markdown(verdict))
        if (Path(a.run_dir) / "report.html").is_file():  # rendered before this verdict existed
            print(f"the run's report shows the verdict it was rendered with; `harness report {a.run_dir}` shows "
                  "this one")
    return _verdict_exit(verdict)


def _cmd_report(a) -> int:
    from harness.api import run_report as report

    paths = report(a.run_dir, include_examples=a.examples, progress=not a.quiet)
    print(f"report: {getattr(paths, 'html', paths)}")
    return EXIT_OK


def _cmd_demo(a) -> int:
    if a.models_only and (a.refresh_sample or a.strict):
        flag = "--refresh-sample" if a.refresh_sample else "--strict"
        raise SpecError(format_error(f"--models-only runs no sweep, so {flag} has nothing to act on",
                                     where="harness demo", fix=f"drop {flag}, or drop --models-only"))
    if a.models_only and a.out:
        print(f"note: --out {a.out} is not used with --models-only (no run is written)", file=sys.stderr)
    if a.task == "lm":
        from harness.demo.lm_run import run_lm_demo

        res = run_lm_demo(adaptation=a.adaptation or "lora", profile=a.profile, out=a.out,
                          options=_settings(a, "demo"), refresh_sample=a.refresh_sample, quiet=a.quiet,
                          models_only=a.models_only)
    else:
        res = run_demo(adaptation=a.adaptation or "full", profile=a.profile, out=a.out, options=_settings(a, "demo"),
                       refresh_sample=a.refresh_sample, quiet=a.quiet, models_only=a.models_only)
    if res is None:  # --models-only: the folders were printed
        return EXIT_OK
    if res.verdict is not None and not res.verdict.passed and a.strict:
        return EXIT_GATE_FAILED
    return EXIT_OK


def training_line(folder, record: dict[str, Any]) -> str:
    """One line per folder ``harness train`` wrote, from its training record: a linear probe says its C (chosen
    on validation; it has no epochs), a fine-tune its epochs."""
    val = ", ".join(f"{k} {v:.4f}" for k, v in record.get("validation", {}).items())
    if record["method"] == "probe":
        c = (record.get("probe") or {}).get("C")
        how = f"linear probe, C={c:g} chosen on validation" if isinstance(c, (int, float)) else "linear probe"
    else:
        how = f"{record['epochs']} epochs"
    return (f"{record['method']}: {folder}  ({record['n_train_examples']} training examples, {how}, "
            f"validation {val}, {record['wall_seconds']:.0f} s)")


def _cmd_train(a) -> int:
    opts = _settings(a, "train")
    if not a.quiet:
        logging.getLogger("harness.train").setLevel(logging.INFO)
    res = train_model(a.config, a.suite, a.base, a.out, settings=opts)
    if not a.quiet:
        for folder, record in res.records.items():
            print(training_line(folder, record))
    if res.base_dir is None:
        print(f"trained {res.method}: {res.model_dir} (a base: fine-tune from it with --method full or lora "
              f"--base {res.model_dir})")
    else:
        print(f"trained {res.method}: {res.model_dir}; sweep it with: harness sweep --base {res.base_dir} "
              f"--adapted {res.model_dir} --suite {a.suite} [shift suites]")
    return EXIT_OK


COMMANDS = {"validate": _cmd_validate, "eval": _cmd_eval, "sweep": _cmd_sweep, "blend": _cmd_blend,
            "gate": _cmd_gate, "report": _cmd_report, "demo": _cmd_demo, "train": _cmd_train}


def _command_started() -> float | None:
    """When the command began: the process's start when the process is the ``harness`` command (console script or
    ``python -m harness``, start-up and imports included), else ``None`` (now: main() called from Python)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and (script.name == "harness" or script.parts[-2:] == ("harness", "__main__.py")):
        return process_started()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    mark_command_start(_command_started())  # a run's wall time counts from here (manifest's command_wall_s)
    quiet_library_bars()
    parser = build_parser()
    try:
        a = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # argparse: bad flags are unusable input (2); --help/--version are 0
        return int(e.code or 0)
    try:
        ids = dist_env()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    rank = None if ids is None else ids[0]
    logging.basicConfig(level=logging.ERROR if a.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if rank is not None:  # one of several processes (torchrun / accelerate launch): only rank 0 prints results
        rank_logging(rank, a.debug)
    long_running = a.command in ("eval", "sweep", "blend", "demo", "train")
    if long_running and not a.quiet and not sys.stderr.isatty() and not rank:  # no bars off a terminal: a line per step
        logging.getLogger("harness").setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext(), \
                log_through_bars(not rank and not a.quiet):
            return COMMANDS[a.command](a)
    except HarnessError as e:
        if a.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so
        if a.debug:
            traceback.print_exc()
        print(f"internal error (a bug in harness {__version__}): {type(e).__name__}: {e}\n"
              "  rerun with --debug for the traceback and report it with the command line and the traceback",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
