"""Data-parallel sweeps under torchrun on CPU (gloo): 2 processes on one machine, and two torchrun groups joined
by c10d rendezvous on 127.0.0.1 as two "hosts", give the summary (results, selection, verdict) and predictions
of one process; a rerun after a killed rank reuses the results store's finished units.

Every child runs with ``OMP_NUM_THREADS=1`` and its own ``HARNESS_CACHE`` (a shared store would let a run read
the other's records and make the comparison empty); the tiny llama is built from a config."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.rundir import predictions_for, read_predictions, read_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lm_tiny import _save_model  # noqa: E402

pytestmark = pytest.mark.dist
REPO = Path(__file__).resolve().parents[2]
FAST = ["--n-resamples", "20", "--no-report", "--no-progress"]
WORDS = "water light plants energy rock steam ice sun leaf animals grow mass".split()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-lm")
    base = _save_model(root / "base", seed=3)
    return base, _save_model(root / "adapted", seed=4, base=base, noise=0.05)


@pytest.fixture(scope="module")
def suites(tmp_path_factory) -> list[Path]:
    """An ARC-like multiple-choice ID suite (3 to 5 choices), a generation shift and a perplexity shift, with
    odd split sizes (the ranks' shares differ by one)."""
    import random

    root = tmp_path_factory.mktemp("dist-suites")
    rng = random.Random(0)
    rows = []
    for i in range(23):
        n = rng.choice([3, 4, 5])
        labels = list("ABCDE")[:n]
        rows.append({"id": f"q{i}", "question": " ".join(rng.sample(WORDS, 4)) + "?",
                     "choices": {"text": rng.sample(WORDS, n), "label": labels}, "answerKey": rng.choice(labels)})
    (root / "arc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "gen.jsonl").write_text("".join(json.dumps({"question": " ".join(rng.sample(WORDS, 3)),
                                                        "answer": rng.choice(WORDS)}) + "\n" for _ in range(9)))
    (root / "text.jsonl").write_text("".join(json.dumps({"doc": i, "passage": " ".join(rng.choices(WORDS, k=20))})
                                             + "\n" for i in range(7)))
    splits = ("splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
              "  - {name: test, role: test, fraction: 0.5}\n")
    (root / "arc.yaml").write_text(
        "kind: suite\nname: d-arc\nrole: id\nsource: {type: local, files: [arc.jsonl]}\nid_column: id\n"
        "task:\n  kind: multiple_choice\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
        "  choices: {field: choices.text}\n  gold: {label: answerKey, labels: choices.label}\n"
        "metrics: [acc, acc_norm]\n" + splits)
    (root / "gen.yaml").write_text(
        "kind: suite\nname: d-gen\nrole: shift\nshift_type: natural\nsource: {type: local, files: [gen.jsonl]}\n"
        "task:\n  kind: generation\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
        "  gold: {text: answer}\n  stop: [\"\\n\"]\n  max_new_tokens: 4\nmetrics: [exact_match, f1]\n" + splits)
    (root / "ppl.yaml").write_text(
        "kind: suite\nname: d-ppl\nrole: shift\nshift_type: natural\nsource: {type: local, files: [text.jsonl]}\n"
        "in_selection: false\n"  # bits_per_byte beside exact_match: evaluated and gated, not selected on
        "id_column: doc\ntask: {kind: perplexity, text: passage, max_length: 16}\n" + splits)
    (root / "policy.yaml").write_text(
        "kind: policy\nschema_version: 1\nname: d-policy\ncandidate: chosen\nn_resamples: 200\nseed: 0\nmin_clusters: 5\n"
        "on_underpowered: warn\nsuites: {id: [d-arc], shift: [d-gen]}\nrules:\n"
        "  - {name: id_gain, kind: delta, metric: acc_norm, suites: id, reference: base, min_delta: 0.0, mode: point}\n"
        "  - {name: shift_drop, kind: delta, metric: f1, suites: [d-gen], reference: base, max_drop: 0.5, mode: point}\n")
    return [root / "arc.yaml", root / "gen.yaml", root / "ppl.yaml", root / "policy.yaml"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HARNESS_CACHE=str(cache), PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return env


def _sweep_args(pair, suites, out: Path, alphas: str = "0,0.3,0.7,1") -> list[str]:
    return ["sweep", "--base", str(pair[0]), "--adapted", str(pair[1]), "--suite", *map(str, suites[:3]),
            "--alphas", alphas, "--gate", str(suites[3]), "--out", str(out), "--device", "cpu", *FAST]


def _torchrun(args: list[str], extra: list[str], cache: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, "-m", "harness", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, rc: int, timeout: float = 240) -> str:
    """The output of a torchrun that exits with ``rc`` (the exit code of one process)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == rc, out[-4000:]
    return out


def _single(args: list[str], cache: Path) -> int:
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(cache)
    try:
        return main(args)
    finally:
        os.environ["HARNESS_CACHE"] = old or ""


@pytest.fixture(scope="module")
def single(pair, suites, tmp_path_factory):
    """The reference: one process, its own store; (run directory, exit code: 1, the tiny blends fail the gate)."""
    root = tmp_path_factory.mktemp("single")
    rc = _single(_sweep_args(pair, suites, root / "run"), root / "cache")
    assert rc == 1
    return root / "run", rc


def _same_run(run: Path, ref: Path) -> None:
    """Same points, selection and verdict; the same results: bit for bit on the multiple-choice suite (its metrics
    read argmax choices), to float rounding elsewhere (rolling windows and generation batch across rows); the same
    predictions to float rounding (a rank's batches hold other rows than one process's)."""
    a, b = read_summary(run), read_summary(ref)
    sa, sb = a.selection.model_dump(), b.selection.model_dump()
    objective = sa.pop("objective"), sb.pop("objective")  # mean metrics over the suites that select
    assert sa == sb
    assert objective[0] == pytest.approx(objective[1], rel=1e-6)
    assert [p.model_dump() for p in a.points] == [p.model_dump() for p in b.points]
    assert a.results["base"]["d-arc"] == b.results["base"]["d-arc"]
    assert set(a.results) == set(b.results)
    for pid, suites in b.results.items():
        for suite, splits in suites.items():
            for split, e in splits.items():
                got = a.results[pid][suite][split]
                assert (got.n, got.n_dropped, got.n_nonfinite) == (e.n, e.n_dropped, e.n_nonfinite)
                exact = suite == "d-arc"
                for name, m in e.metrics.items():
                    g = got.metrics[name]
                    for field in ("value", "ci_low", "ci_high"):
                        x, y = getattr(g, field), getattr(m, field)
                        assert x == y if exact else x == pytest.approx(y, rel=1e-6), (pid, suite, split, name)
    va, vb = (json.loads((r / "verdict.json").read_text()) for r in (run, ref))
    assert va["passed"] == vb["passed"] and [o["passed"] for o in va["outcomes"]] == [o["passed"] for o in vb["outcomes"]]
    fa, fb = read_predictions(run), read_predictions(ref)
    assert len(fa) == len(fb) > 0
    for pid, suites in b.results.items():
        for suite, splits in suites.items():
            for split in splits:
                got, want = predictions_for(fa, pid, suite, split), predictions_for(fb, pid, suite, split)
                for x, y in zip(got[:3], want[:3]):  # example ids, source ids, labels
                    assert list(x) == list(y)
                assert set(got[3]) == set(want[3])
                for col, y in want[3].items():
                    x = got[3][col]
                    if y.dtype.kind == "f":
                        # per-example scores agree to float rounding: a rank's batches hold other questions than
                        # the single process's (choices share their context's row), so fp32 sums differ in the
                        # last bits; the metrics, selection and verdict above are compared exactly
                        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True,
                                                   err_msg=f"{pid} {suite}/{split} {col}")
                    else:
                        assert list(x) == list(y), (pid, suite, split, col)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_two_processes_match_one(pair, suites, single, tmp_path):
    ref, rc = single
    out = tmp_path / "run"
    log = _finish(_torchrun(_sweep_args(pair, suites, out), ["--nproc-per-node", "2", "--master-port",
                                                              str(_free_port())], tmp_path / "cache"), rc)
    _same_run(out, ref)
    m = _manifest(out)
    assert m["distributed"]["world_size"] == 2 and m["distributed"]["backend"] == "gloo"
    assert m["store_computed_splits"] == 4 * 6  # every unit computed: the comparison is not a store read
    assert set(m["memory"]) == {"rank 0", "rank 1"} and m["memory"]["rank 1"]["cpu"]["weights_gib"] > 0
    assert log.count("chosen alpha:") == 1 and log.count("gate: FAIL") == 1  # only rank 0 prints


def test_two_hosts_by_rendezvous_match_one(pair, suites, single, tmp_path):
    ref, rc = single
    out = tmp_path / "run"
    port = _free_port()
    procs = [_torchrun(_sweep_args(pair, suites, out),
                       ["--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "harness-test"],
                       tmp_path / f"cache{rank}") for rank in (0, 1)]
    logs = [_finish(p, rc) for p in procs]
    _same_run(out, ref)
    assert _manifest(out)["distributed"]["world_size"] == 2
    assert sum(log.count("chosen alpha:") for log in logs) == 1


def test_a_classifier_sweep_under_two_processes_is_bit_identical(tiny_pair, tiny_suites, tmp_path):
    """Classifier rows are dealt as whole batches of the one-process plan: every logit and metric is equal."""
    args = ["sweep", "--base", str(tiny_pair[0]), "--adapted", str(tiny_pair[1]), "--suite", *map(str, tiny_suites),
            "--alphas", "0,0.5,1", "--device", "cpu", "--batch-tokens", "256", *FAST]
    rc = _single([*args, "--out", str(tmp_path / "one")], tmp_path / "cache1")
    _finish(_torchrun([*args, "--out", str(tmp_path / "two")], ["--nproc-per-node", "2", "--master-port",
                                                                 str(_free_port())], tmp_path / "cache2"), rc)
    a, b = read_summary(tmp_path / "two"), read_summary(tmp_path / "one")
    assert a.results == b.results and a.ensemble == b.ensemble and a.selection == b.selection
    fa, fb = read_predictions(tmp_path / "two"), read_predictions(tmp_path / "one")
    for pid, suites in b.results.items():
        for suite, splits in suites.items():
            for split in splits:
                x, y = predictions_for(fa, pid, suite, split)[3], predictions_for(fb, pid, suite, split)[3]
                np.testing.assert_array_equal(x["logits"], y["logits"])


def test_eval_under_two_processes_matches_one(pair, suites, tmp_path):
    args = ["eval", "--model", str(pair[1]), "--suite", *map(str, suites[:3]), "--device", "cpu", *FAST]
    assert _single([*args, "--out", str(tmp_path / "one")], tmp_path / "cache1") == 0
    log = _finish(_torchrun([*args, "--out", str(tmp_path / "two")], ["--nproc-per-node", "2", "--master-port",
                                                                       str(_free_port())], tmp_path / "cache2"), 0)
    a, b = read_summary(tmp_path / "two"), read_summary(tmp_path / "one")
    assert a.results["model"]["d-arc"] == b.results["model"]["d-arc"]
    assert a.results["model"]["d-gen"] == b.results["model"]["d-gen"]  # discrete per-example matches
    assert _manifest(tmp_path / "two")["distributed"]["world_size"] == 2
    assert log.count("run directory:") == 1


def _store_rows(cache: Path) -> int:
    db = cache / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(str(db), timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
    except sqlite3.OperationalError:  # created but no table yet, or locked
        return 0


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc), in start order."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append((int(fields[19]), int(stat.parent.name)))
    return [p for _, p in sorted(out)]


def test_rerun_after_a_killed_rank_reuses_the_store(pair, suites, tmp_path):
    cache, alphas, units = tmp_path / "cache", "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", 11 * 6
    proc = _torchrun(_sweep_args(pair, suites, tmp_path / "killed", alphas),
                     ["--nproc-per-node", "2", "--master-port", str(_free_port())], cache)
    deadline = time.monotonic() + 200
    while _store_rows(cache) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert proc.poll() is None and len(workers) == 2, "the sweep ended before a rank could be killed"
    os.kill(workers[1], signal.SIGKILL)  # one of the two ranks
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    done = _store_rows(cache)
    assert 6 <= done < units, done
    out = tmp_path / "rerun"
    ref = tmp_path / "single"
    rc = _single(_sweep_args(pair, suites, ref, alphas), tmp_path / "single-cache")
    _finish(_torchrun(_sweep_args(pair, suites, out, alphas), ["--nproc-per-node", "2", "--master-port",
                                                                str(_free_port())], cache), rc)
    assert _manifest(out)["store_computed_splits"] == units - done  # finished units read, the rest computed
    assert _store_rows(cache) == units
    _same_run(out, ref)
