"""The ``harness`` command line: a thin layer that parses flags, builds records and calls :mod:`harness.pipeline`.

Exit codes (``../shared/CONTRACT.md``): 0 success (and every gate rule passed); 1 a gate ran and failed;
2 unusable input (bad flags, spec, file, model); 3 an internal error (a bug).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from harness import __version__

__all__ = ["main", "build_parser"]

log = logging.getLogger("harness.cli")
EXIT_OK, EXIT_GATE_FAILED, EXIT_INPUT, EXIT_BUG = 0, 1, 2, 3
BUG_URL = "https://github.com/ (open an issue on the harness repository)"


def _common(p: argparse.ArgumentParser, *, model_flags: bool = True, scoring_flags: bool = True) -> None:
    g = p.add_argument_group("common")
    if model_flags:
        g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        g.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="weights dtype (fp32)")
        g.add_argument("--allow-pickle", action="store_true",
                       help="allow pickle-only checkpoints (loaded with torch.load(weights_only=True); safetensors "
                            "always win)")
        g.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code to run")
    if model_flags and scoring_flags:
        g.add_argument("--batch-tokens", type=int, default=None,
                       help="token budget per batch: rows x padded length (default 1024 on CPU, 32768 on GPU)")
        g.add_argument("--compile", action="store_true", default=None,
                       help="compile each encoder layer with torch.compile (pays off on long GPU runs: a warm-up of "
                            "about 10 s, then about 6%% faster on an H200)")
        g.add_argument("--label-map", default=None,
                       help="model label to suite class, e.g. LABEL_0=negative,LABEL_1=positive")
        g.add_argument("--n-resamples", type=int, default=None, help="bootstrap resamples (1000)")
        g.add_argument("--seed", type=int, default=None, help="bootstrap seed (0)")
        g.add_argument("--no-store", action="store_true", help="do not read or write the results store")
        g.add_argument("--no-report", action="store_true", help="do not render the report")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    g.add_argument("--quiet", action="store_true", help="print only errors and the final line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="harness", description="Robustness harness for fine-tuned models: evaluate, "
                                "sweep WiSE-FT blends over alpha, gate releases, report.")
    p.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate suite, policy, training and run YAML files (loads no model)")
    v.add_argument("paths", nargs="+", help="files or folders")
    _common(v, model_flags=False)

    e = sub.add_parser("eval", help="score one model on suites")
    e.add_argument("--model", required=True)
    e.add_argument("--suite", nargs="+", required=True, dest="suites")
    e.add_argument("--split", default=None, help="evaluate only this split name")
    e.add_argument("--out", default=None, help="run directory to write")
    _common(e)

    s = sub.add_parser("sweep", help="evaluate base, adapted and blends; select alpha; optionally gate")
    s.add_argument("-c", "--config", default=None, help="run YAML (kind: run); flags override it")
    s.add_argument("--base", default=None)
    s.add_argument("--adapted", default=None, help="full checkpoint or PEFT adapter folder")
    s.add_argument("--suite", nargs="+", default=None, dest="suites")
    s.add_argument("--alphas", default=None, help="comma list (e.g. 0,0.25,0.5,1) or 'adaptive'; default 0..1 by 0.1")
    s.add_argument("--select", default=None, help="max-shift-within-id (default), weighted, id-only")
    s.add_argument("--select-metric", default=None, help="metric used to select alpha (accuracy)")
    s.add_argument("--tolerance", type=float, default=None, help="ID tolerance for max-shift-within-id (0.01)")
    s.add_argument("--weight", type=float, default=None, help="ID weight w for 'weighted' (0.5)")
    s.add_argument("--head", choices=["shared", "adapted"], default=None)
    s.add_argument("--gate", default=None, help="gate policy file (kind: policy)")
    s.add_argument("--baseline", default=None, help="baseline run directory for the gate")
    s.add_argument("--junit", default=None, help="write JUnit XML here (default RUN_DIR/junit.xml)")
    s.add_argument("--out", default=None)
    _common(s)

    b = sub.add_parser("blend", help="write the blend at one alpha as a safetensors checkpoint")
    b.add_argument("--base", required=True)
    b.add_argument("--adapted", required=True)
    b.add_argument("--alpha", type=float, required=True, help="weight of the adapted model in [0, 1]")
    b.add_argument("--head", choices=["shared", "adapted"], default="shared")
    b.add_argument("--out", required=True)
    _common(b, scoring_flags=False)  # blend scores nothing: no bootstrap, store, report or label flags

    g = sub.add_parser("gate", help="judge a stored run with a gate policy (loads no model)")
    g.add_argument("run_dir", nargs="?", default=None, help="run directory (optional with --plan --plan-n)")
    g.add_argument("--policy", required=True)
    g.add_argument("--baseline", default=None)
    g.add_argument("--junit", default=None)
    # gate-stats: --plan prints the policy's false-fail rate and power instead of judging
    g.add_argument("--plan", action="store_true", help="print the policy's false-fail rate and power (for the run's "
                                                       "n and disagreement, or --plan-n) instead of judging")
    g.add_argument("--plan-n", type=int, default=None, help="--plan: test examples per suite")
    g.add_argument("--plan-disagreement", type=float, default=0.10, help="--plan: share of examples where an "
                                                                          "equal candidate and base disagree")
    g.add_argument("--plan-drop", type=float, default=0.02, help="--plan: the regression to detect (fraction)")
    _common(g, model_flags=False)

    r = sub.add_parser("report", help="(re)render the report of a stored run (loads no model)")
    r.add_argument("run_dir")
    _common(r, model_flags=False)

    d = sub.add_parser("demo", help="end-to-end demo: real MiniLM, real VADER domains, sweep, gate, report")
    d.add_argument("--adaptation", choices=["full", "lora"], default="full")
    d.add_argument("--profile", choices=["quick", "full"], default="quick")
    d.add_argument("--out", default=None, help="run directory (default reports/demo)")
    d.add_argument("--strict", action="store_true", help="exit 1 when the demo's gate fails")
    d.add_argument("--refresh-sample", action="store_true",
                   help="also refresh the committed sample report in reports/sample/ (figures and tables only)")
    _common(d)
    return p


def _label_map(text: str | None) -> dict[str, str] | None:
    from harness.errors import SpecError, format_error

    if not text:
        return None
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise SpecError(format_error("bad --label-map entry", where="--label-map",
                                         expected="MODEL_LABEL=CLASS,...", got=part))
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _options(a: argparse.Namespace, cfg: dict[str, Any] | None = None):
    from harness.pipeline import RunOptions

    cfg = cfg or {}

    def pick(name: str, default: Any) -> Any:
        v = getattr(a, name, None)
        return v if v is not None else cfg.get(name) if cfg.get(name) is not None else default

    return RunOptions(device=pick("device", None), dtype=pick("dtype", "fp32"),
                      batch_tokens=pick("batch_tokens", None), compile=bool(pick("compile", False)),
                      allow_pickle=a.allow_pickle,
                      trust_remote_code=a.trust_remote_code,
                      label_map=_label_map(getattr(a, "label_map", None)) or cfg.get("label_map"),
                      split=getattr(a, "split", None), n_resamples=pick("n_resamples", 1000), seed=pick("seed", 0),
                      use_store=not getattr(a, "no_store", False), progress=not a.quiet and sys.stderr.isatty(),
                      report=not getattr(a, "no_report", False))


def _print_table(summary, quiet: bool) -> None:
    if quiet:
        return
    from harness.rundir import per_alpha_frame

    df = per_alpha_frame(summary)
    df = df[df["kind"] == "weights"].drop(columns=["kind"])
    if df.empty:
        return
    df["95% interval"] = [f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "n/a"
                          for lo, hi in zip(df["ci_low"], df["ci_high"])]
    df["value"] = [f"{v:.4f}" if v is not None else "nan" for v in df["value"]]
    cols = ["point", "suite", "split", "metric", "value", "95% interval", "n"]
    print(df[cols].to_string(index=False))


def _print_curve(summary, quiet: bool) -> None:
    """Sweep table: one row per point, the selection metric on every suite/split (test splits last)."""
    if quiet:
        return
    from harness.rundir import per_alpha_frame

    metric = summary.selection.metric if summary.selection else "accuracy"
    df = per_alpha_frame(summary)
    df = df[(df["kind"] == "weights") & (df["metric"] == metric)]
    if df.empty:
        return
    df = df.assign(column=df["suite"] + "/" + df["split"])
    table = df.pivot_table(index="point", columns="column", values="value", sort=False).round(4)
    order = {p.id: (p.alpha if p.alpha is not None else -1.0, p.role != "base") for p in summary.points}
    table = table.loc[sorted(table.index, key=lambda i: order.get(i, (2.0, True)))]
    chosen = summary.chosen.id if summary.chosen else None
    table.index = [f"{i} *" if i == chosen else i for i in table.index]
    print(f"{metric} per point (* = chosen):")
    print(table.to_string())


def _cmd_validate(a) -> int:
    from harness.spec.load import validate_paths

    valid, problems = validate_paths(a.paths)
    for path, spec in valid:
        if not a.quiet:
            print(f"ok    {path}  (kind: {spec.kind})")
    for p in problems:
        print(f"FAIL  {p}", file=sys.stderr)
    print(f"{len(valid)} valid, {len(problems)} invalid")
    return EXIT_OK if not problems else EXIT_INPUT


def _cmd_eval(a) -> int:
    from harness.pipeline import evaluate_model

    res = evaluate_model(a.model, a.suites, out=a.out, options=_options(a), argv=sys.argv)
    _print_table(res.summary, a.quiet)
    if res.run_dir:
        print(f"run directory: {res.run_dir}")
    return EXIT_OK


def _sweep_config(a) -> dict[str, Any]:
    if not a.config:
        return {}
    from harness.spec.load import load_spec
    from harness.spec.run import PATH_FIELDS

    cfg = load_spec(a.config, kind="run").model_dump(exclude_none=True)
    root = Path(a.config).resolve().parent
    for k in PATH_FIELDS:
        if k in cfg:
            cfg[k] = [str(root / p) for p in cfg[k]] if isinstance(cfg[k], list) else str(root / cfg[k])
    return cfg


def _cmd_sweep(a) -> int:
    from harness.errors import SpecError, format_error
    from harness.pipeline import sweep_models

    cfg = _sweep_config(a)

    def pick(name: str, default: Any = None) -> Any:
        v = getattr(a, name, None)
        return v if v is not None else cfg.get(name, default)

    for need in ("base", "adapted", "suites"):
        if not pick(need):
            raise SpecError(format_error(f"sweep needs --{need.rstrip('s')}", where="command line / run config",
                                         fix=f"pass --{need.rstrip('s')} or set {need} in the -c run file"))
    res = sweep_models(pick("base"), pick("adapted"), pick("suites"), alphas=pick("alphas"),
                       select=pick("select", "max-shift-within-id"), select_metric=pick("select_metric", "accuracy"),
                       tolerance=pick("tolerance", 0.01), weight=pick("weight", 0.5), head=pick("head", "shared"),
                       gate=pick("gate"), baseline=pick("baseline"), junit=pick("junit"), out=pick("out"),
                       options=_options(a, cfg), argv=sys.argv)
    _print_curve(res.summary, a.quiet)
    sel = res.summary.selection
    print(f"chosen alpha: {sel.chosen_alpha:g} ({sel.policy}, selected on {', '.join(sel.selected_on)})")
    if res.run_dir:
        print(f"run directory: {res.run_dir}")
    return _verdict_exit(res.verdict)


def _verdict_exit(verdict) -> int:
    if verdict is None:
        return EXIT_OK
    print(f"gate: {'PASS' if verdict.passed else 'FAIL'} ({sum(o.passed for o in verdict.outcomes)}/"
          f"{len(verdict.outcomes)} rule checks passed, policy {verdict.policy})")
    return EXIT_OK if verdict.passed else EXIT_GATE_FAILED


def _cmd_blend(a) -> int:
    from harness.pipeline import write_blend

    out = write_blend(a.base, a.adapted, a.alpha, a.out, head=a.head, options=_options(a))
    print(f"blend at alpha={a.alpha:g} written to {out}")
    return EXIT_OK


def _cmd_gate(a) -> int:
    from harness.pipeline import run_gate

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
        from harness.gate_outputs import verdict_to_markdown

        print(verdict_to_markdown(verdict))
    return _verdict_exit(verdict)


def _cmd_report(a) -> int:
    from harness.report import render_report

    paths = render_report(a.run_dir, include_examples=False)
    print(f"report: {getattr(paths, 'html', paths)}")
    return EXIT_OK


def _cmd_demo(a) -> int:
    from harness.demo.run import run_demo

    res = run_demo(adaptation=a.adaptation, profile=a.profile, out=a.out, options=_options(a),
                   refresh_sample=a.refresh_sample, quiet=a.quiet)
    if res.verdict is not None and not res.verdict.passed and a.strict:
        return EXIT_GATE_FAILED
    return EXIT_OK


COMMANDS = {"validate": _cmd_validate, "eval": _cmd_eval, "sweep": _cmd_sweep, "blend": _cmd_blend,
            "gate": _cmd_gate, "report": _cmd_report, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    from harness.errors import HarnessError

    parser = build_parser()
    try:
        a = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # argparse: bad flags are unusable input (2); --help/--version are 0
        return int(e.code or 0)
    logging.basicConfig(level=logging.ERROR if a.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[a.command](a)
    except HarnessError as e:
        if a.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
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
