"""Synthetic run directories for the gate tests: paired correctness masks, logits with a given argmax, suites
of clustered documents, a standard three-suite run, and policy/rule builders. Imported by test_gate*.py as
``_gate_runs``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from harness.gate import RunView
from harness.metrics import compute_metrics
from harness.records import Predictions, SplitRef, SplitRole, SuiteRole, Verdict
from harness.rundir import write_predictions, write_summary
from harness.spec.policy import GatePolicy
from harness.spec.schema import TASK_METRICS
from harness.summary import Summary

POINTS = {"base": ("base", 0.0), "adapted": ("adapted", 1.0), "alpha=0.5": ("blend", 0.5)}
ROLES = {"movies": "id", "tweets": "shift", "amazon": "shift"}


# --------------------------------------------------------------------------------------------------------------
# Synthetic runs
# --------------------------------------------------------------------------------------------------------------

def logits_for(labels: np.ndarray, correct: np.ndarray, rng: np.random.Generator, c: int = 2) -> np.ndarray:
    """float32 logits (n, c) whose argmax is the label exactly where ``correct``."""
    n = len(labels)
    logits = rng.normal(0.0, 0.5, size=(n, c))
    target = np.where(correct, labels, (labels + rng.integers(1, c, n)) % c)
    logits[np.arange(n), target] = logits.max(axis=1) + 0.05 + rng.exponential(1.5, n)
    return logits.astype(np.float32)


def paired_masks(rng: np.random.Generator, n: int, ref_acc: float, cand_acc: float,
                 discordance: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of a reference and a candidate: ``discordance`` is the share of examples on which they differ
    (``None``: independent errors)."""
    ref = rng.random(n) < ref_acc
    if discordance is None:
        return ref, rng.random(n) < cand_acc
    return ref, derived_mask(rng, ref, ref_acc, cand_acc, discordance)


def derived_mask(rng: np.random.Generator, ref: np.ndarray, ref_acc: float, cand_acc: float,
                 discordance: float) -> np.ndarray:
    """A candidate's correctness that differs from ``ref`` on a ``discordance`` share of examples."""
    delta = cand_acc - ref_acc
    lose, gain = (discordance - delta) / 2, (discordance + delta) / 2  # right->wrong, wrong->right shares
    u = rng.random(len(ref))
    return np.where(ref, u >= lose / ref_acc, u < gain / (1 - ref_acc))


def exact_masks(rng: np.random.Generator, n: int, k_ref: int, k_cand: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent correctness masks with exactly ``k_ref`` and ``k_cand`` correct examples."""
    ref, cand = np.zeros(n, bool), np.zeros(n, bool)
    ref[rng.permutation(n)[:k_ref]] = True
    cand[rng.permutation(n)[:k_cand]] = True
    return ref, cand


def suite_rows(name: str, n_docs: int, per_doc: int, rng: np.random.Generator, unique_sources: bool = False):
    n = n_docs * per_doc
    ids = np.array([f"{name}-{i}" for i in range(n)])
    src = ids.copy() if unique_sources else np.array([f"{name}-doc{i // per_doc}" for i in range(n)])
    labels = rng.integers(0, 2, n).astype(np.int64)
    return ids, src, labels


def build_run(path: Path, data: dict, *, chosen: str | None = "alpha=0.5", split: str = "test",
              suite_info: dict | None = None, edit: Callable[[dict], None] | None = None) -> RunView:
    """Write summary.json and predictions.parquet of a synthetic sweep and read them back.

    ``data``: suite -> point -> (example_ids, source_ids, labels, logits). Summary metrics are computed from the
    logits (as the sweep would). ``suite_info``: per-suite overrides of version / spec_hash / fingerprint.
    ``edit`` may change the summary dict before it is validated.
    """
    path.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    preds = []
    present = [p for p in POINTS if any(p in per for per in data.values())]
    for suite, per_point in data.items():
        for pid, (ids, src, labels, logits) in per_point.items():
            role, alpha = POINTS[pid]
            mv = compute_metrics(labels, logits, src, list(TASK_METRICS["classification"]), n_resamples=0)
            results.setdefault(pid, {}).setdefault(suite, {})[split] = {
                "n": len(labels), "metrics": {m: {"value": v.value, "ci_low": None, "ci_high": None,
                                                  "higher_is_better": v.higher_is_better} for m, v in mv.items()}}
            ref = SplitRef(suite, split, SplitRole.TEST, SuiteRole(ROLES[suite]))
            preds.append(Predictions(ref, pid, alpha, ids, src, labels, logits))
    suites = {}
    for suite, per_point in data.items():
        info = {"version": "1", "spec_hash": f"hash-{suite}", "fingerprint": f"fp-{suite}"}
        info.update((suite_info or {}).get(suite, {}))
        n = len(next(iter(per_point.values()))[0])
        suites[suite] = {"name": suite, "version": info["version"], "spec_hash": info["spec_hash"],
                         "role": ROLES[suite], "shift_type": "natural" if ROLES[suite] == "shift" else None,
                         "splits": {split: {"role": "test", "fingerprint": info["fingerprint"], "n": n}},
                         "metrics": list(TASK_METRICS["classification"])}
    summary = {"harness_version": "0.1.0", "command": "sweep",
               "points": [{"id": p, "role": POINTS[p][0], "alpha": POINTS[p][1], "is_chosen": p == chosen}
                          for p in present],
               "results": results, "bootstrap": {"n_resamples": 0, "seed": 0}, "suites": suites}
    if edit is not None:
        edit(summary)
    write_summary(path, Summary.model_validate(summary))
    write_predictions(path, preds)
    return RunView.from_dir(path)


def standard_data(seed: int = 0, n_docs: int = 400, per_doc: int = 2) -> dict:
    """ID: chosen 8 points better than base; shifts: chosen 2 points better than base, adapted 8 points worse."""
    rng = np.random.default_rng(seed)
    accs = {"movies": (0.78, 0.88, 0.86), "tweets": (0.80, 0.72, 0.82), "amazon": (0.76, 0.68, 0.78)}
    data = {}
    for suite, (a_base, a_adapted, a_chosen) in accs.items():
        ids, src, labels = suite_rows(suite, n_docs, per_doc, rng)
        base, adapted = paired_masks(rng, len(ids), a_base, a_adapted, 0.25)
        chosen = derived_mask(rng, base, a_base, a_chosen, 0.10 if suite == "movies" else 0.06)
        data[suite] = {p: (ids, src, labels, logits_for(labels, m, rng))
                       for p, m in (("base", base), ("adapted", adapted), ("alpha=0.5", chosen))}
    return data


def policy(*rules: dict, **kw) -> GatePolicy:
    # underpowered margins warn here, so the bootstrap's own behaviour stays testable at any n; the power tests
    # pass on_underpowered="fail" (the policy default)
    return GatePolicy.model_validate({"kind": "policy", "name": "test", "n_resamples": 1000,
                                      "on_underpowered": "warn", **kw,
                                      "rules": list(rules)})


def rule(name: str = "r", **kw) -> dict:
    base = {"name": name, "kind": "delta", "metric": "accuracy", "suites": "id", "max_drop": 0.02}
    base.update(kw)
    if "min_delta" in kw or kw.get("kind", "delta") != "delta":
        base.pop("max_drop")
    if kw.get("kind") in ("negative_flips", "class_recall_floor") and "metric" not in kw:
        base.pop("metric")
    return base


@pytest.fixture(scope="module")
def std(tmp_path_factory) -> RunView:
    return build_run(tmp_path_factory.mktemp("std"), standard_data())


def only(verdict: Verdict):
    assert len(verdict.outcomes) == 1, verdict.outcomes
    return verdict.outcomes[0]


