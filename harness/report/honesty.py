"""Report sections on how far the numbers can be trusted: the stability of the alpha choice under resampling,
what the chosen blend's test intervals are conditional on, how often gates have used the test splits, and the
calibration error beside its debiased estimate.

Each builder takes a :class:`harness.report.document.Context` and returns a :class:`Section`, or ``None`` when the
run has nothing to show (no selection; no predictions).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from harness.metrics.calibration import calibration_errors
from harness.report.document import Context, Heading, Para, Section, TableBlock
from harness.report.tables import fmt_alpha, fmt_value, report_pairs

__all__ = ["selection_honesty", "calibration_estimators"]

logger = logging.getLogger(__name__)

CONDITIONAL = ("The chosen blend's test intervals are conditional on the choice made on the validation splits: "
               "alpha was picked among {k} evaluated alphas on validation data only, and the test intervals describe "
               "this blend as if it had been fixed in advance; they are not widened for the choice. Every gate that "
               "judges a test split and sends a candidate back for changes spends some of that split's "
               "independence: the table below counts the gate uses of each test split's content in this store.")


def _noise_table(ctx: Context) -> pd.DataFrame:
    noise = ctx.summary.selection_noise
    alphas = {p.id: p.alpha for p in ctx.summary.points}
    rows = []
    for pid, p in sorted(noise.p_selected.items(), key=lambda kv: (alphas.get(kv[0]) is None, alphas.get(kv[0]))):
        marks = [m for m, on in (("chosen", pid == ctx.summary.selection.chosen_point),
                                 ("rule's pick", pid == noise.pick)) if on]
        rows.append({"point": pid, "alpha": fmt_alpha(alphas.get(pid)), "P(selected)": f"{p:.1%}",
                     "indistinguishable from the chosen": "yes" if pid in noise.indistinguishable else "no",
                     "role in the choice": ", ".join(marks)})
    return pd.DataFrame(rows, dtype=object)


def _uses_table(ctx: Context) -> pd.DataFrame | None:
    if not ctx.verdict:
        return None
    uses: dict[str, int] = {}
    for o in ctx.verdict.get("outcomes", []):
        uses.update((o.get("info") or {}).get("test_split_uses", {}))
    if not uses:
        return None
    return pd.DataFrame([{"test split": k, "gate uses in this store": str(v)} for k, v in sorted(uses.items())],
                        dtype=object)


def selection_honesty(ctx: Context) -> Section | None:
    """Selection under noise (probability each alpha is picked, the indistinguishable set, the stated rule) and
    the selection-honesty note with the test-split use counts."""
    sel = ctx.summary.selection
    if sel is None:
        return None
    k = len([p for p in ctx.summary.points if p.alpha is not None])
    blocks = [Para(CONDITIONAL.format(k=k), "note")]
    noise = ctx.summary.selection_noise
    if noise is None:
        blocks.append(Para("This run records no resampling of the selection (older run, or no bootstrap).", "muted"))
    else:
        blocks.append(Heading("Stability of the choice"))
        stable = noise.stability >= noise.stable_rate
        blocks.append(Para(f"The selection policy was re-run on {noise.n_resamples} paired cluster-bootstrap "
                           f"resamples of the validation splits (seed {noise.seed}): the chosen point is picked in "
                           f"{noise.stability:.0%} of them, so the choice is "
                           f"{'stable' if stable else 'unstable'} (stable means picked in at least "
                           f"{noise.stable_rate:.0%}). An alpha is indistinguishable from the chosen one when "
                           f"the paired {noise.level:.0%} interval of the objective's difference reaches 0: it "
                           f"scores about the same on the objective. That is not how often it is picked: an alpha "
                           f"the data cannot tell apart may still be picked rarely, where the policy's ID "
                           f"tolerance or its tie-break (the smaller alpha) rules it out. With a stable choice "
                           f"such alphas do not matter. Rule within that set: {noise.rule}."))
        if noise.warning and not stable:  # runs written before the threshold warned at any pick rate
            blocks.append(Para(f"{noise.warning[:1].upper()}{noise.warning[1:]}.", "note"))
        blocks.append(TableBlock(_noise_table(ctx)))
    uses = _uses_table(ctx)
    blocks.append(Heading("Gate uses of the test splits"))
    blocks.append(TableBlock(uses) if uses is not None else
                  Para("No gate verdict with use counts is stored in this run directory.", "muted"))
    return Section("Selection honesty", tuple(blocks))


def calibration_estimators(ctx: Context) -> Section | None:
    """Binned plug-in ECE beside the debiased l2 estimator (Kumar et al. 2019) on each test split."""
    if ctx.preds is None:
        return None
    id_pairs, shift = report_pairs(ctx.summary, "test")
    rows = []
    for pair in id_pairs + [p for ps in shift.values() for p in ps]:
        for label, pid in ctx.focus.columns:
            pooled = ctx.preds.pooled(pid, [pair])
            if pooled is None:
                continue
            ce = calibration_errors(pooled.labels, np.log(np.clip(pooled.probs, 1e-300, None)))
            rows.append({"split": f"{pair[0]}/{pair[1]}", "point": label, "n": str(pooled.n),
                         "ECE (binned plug-in, l1)": fmt_value(ce["ece_plugin"]),
                         "l2 plug-in": fmt_value(ce["ece_plugin_l2"]),
                         "l2 debiased (Kumar et al. 2019)": fmt_value(ce["ece_debiased_l2"])})
    if not rows:
        return None
    note = ("The ece metric in the tables and the gate is the binned plug-in estimate, which is biased upward: "
            "noise in each bin's accuracy alone makes it positive for a perfectly calibrated model, so its interval "
            "can miss the true value entirely. As a ceiling it errs on the conservative side. The debiased "
            "estimator subtracts each bin's sampling variance from the squared gap (l2 calibration error); it is "
            "reported here, not gated.")
    return Section("Calibration error estimators", (Para(note, "note"), TableBlock(pd.DataFrame(rows, dtype=object))))
