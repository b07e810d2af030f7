"""Selection under noise: how stable the chosen alpha is under paired resampling (see :mod:`harness.sweep`)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from harness.errors import SpecError, format_error
from harness.metrics.bootstrap import cluster_weights, metric_distribution
from harness.metrics.registry import get_metric
from harness.numfmt import fmt_g
from harness.records import SplitRole, SuiteRole
from harness.sweep.policy import _EPS, Selection, metric_for, selects

NOISE_RULE = ("among the alphas not distinguishable from the chosen one, the alpha the policy picks most often "
              "under resampling of the validation splits (ties: the smaller alpha)")
# The chosen alpha counts as a stable choice when the policy picks it in at least this share of the resamples; below
# it the sweep warns: at 0.9 a choice that more than one resample in ten overturns is flagged, and so is always a
# rule pick other than the chosen alpha (which needs a pick rate under 0.5).
STABLE_PICK_RATE = 0.9


@dataclass(frozen=True)
class SelectionNoise:
    """How the alpha choice holds up under resampling of the validation splits (see
    :func:`selection_uncertainty`). Keys are alphas."""

    chosen_alpha: float
    p_selected: dict[float, float]
    indistinguishable: list[float]
    pick: float
    n_resamples: int
    seed: int
    level: float
    stable_rate: float = STABLE_PICK_RATE
    warning: str = ""

    def entry(self, point_of: dict[float, str]):
        """The ``summary.json`` record (:class:`harness.summary.SelectionNoise`), keyed by point id."""
        from harness.summary import SelectionNoise as Entry

        return Entry(n_resamples=self.n_resamples, seed=self.seed, level=self.level,
                     p_selected={point_of[a]: p for a, p in self.p_selected.items()},
                     indistinguishable=[point_of[a] for a in self.indistinguishable], rule=NOISE_RULE,
                     pick=point_of[self.pick], stability=self.p_selected[self.chosen_alpha],
                     stable_rate=self.stable_rate, warning=self.warning)


def _resampled_goodness(by_alpha: dict[float, dict], metric: str | Mapping[str, str] | None, n_resamples: int,
                        seed: int
                        ) -> tuple[list, dict[tuple, np.ndarray]]:
    """Per (suite, suite role): the paired bootstrap distribution (A, B) of the goodness of each suite's
    selection ``metric`` (one name, or suite -> name) over the alphas, averaged over the suite's validation
    splits."""
    alphas = sorted(by_alpha)
    refs = [r for r in by_alpha[alphas[0]] if r.role is SplitRole.VALIDATION and selects(metric, r.suite)]
    out = {}
    for ref in refs:
        name = metric_for(metric, ref.suite)
        sign = 1.0 if get_metric(name).higher_is_better else -1.0
        first = by_alpha[alphas[0]][ref]
        ss = np.random.SeedSequence([seed, zlib.crc32(ref.key.encode())])
        w, index = cluster_weights(first.source_ids, n_resamples, ss)
        rows = []
        for a in alphas:
            p = by_alpha[a][ref]
            if not np.array_equal(p.example_ids, first.example_ids):
                raise SpecError(format_error("predictions of one split are in different example orders across "
                                             "alphas", where=ref.key, fix="this is a bug; please report it"))
            rows.append(sign * metric_distribution(name, p.labels, p.outputs, w, index))
        out.setdefault((ref.suite, ref.suite_role), []).append(rows)
    b = min(len(r) for per in out.values() for rows in per for r in rows)  # evaluate modules: fewer resamples
    return alphas, {k: np.mean([[r[:b] for r in rows] for rows in per], axis=0) for k, per in out.items()}


def selection_uncertainty(by_alpha: dict[float, dict], selection: Selection, *, n_resamples: int = 1000,
                          seed: int = 0, level: float = 0.95, metric: str | Mapping[str, str] | None = None,
                          stable_rate: float = STABLE_PICK_RATE) -> SelectionNoise:
    """Re-run the selection on paired cluster-bootstrap resamples of the validation splits.

    Parameters
    ----------
    by_alpha : dict of float to dict of SplitRef to Predictions
        The predictions of every evaluated alpha (only ``validation`` splits are read); every alpha's predictions
        of a split hold the same examples in the same order, so one resample weights them alike (paired).
    selection : Selection
        The selection made on the full validation splits (its policy is re-applied on every resample).
    metric : str or mapping of suite -> str, default=None
        The selection metric (per suite); default the policy's.
    n_resamples : int, default=1000
    seed : int, default=0
    level : float, default=0.95
        Two-sided level of the paired interval of ``objective(chosen) - objective(alpha)``: an alpha whose interval
        reaches 0 is *indistinguishable* from the chosen one.
    stable_rate : float, default=:data:`STABLE_PICK_RATE` (0.9)
        The choice is called unstable, and warned about, when the policy picks the chosen alpha in fewer than this
        share of the resamples.

    Returns
    -------
    SelectionNoise
        ``p_selected`` (share of resamples in which the policy picks each alpha; "probability of being best"),
        ``indistinguishable`` (sorted alphas, the chosen one included), ``pick`` (by :data:`NOISE_RULE`) and a
        ``warning`` only when the choice is unstable (picked in fewer than ``stable_rate`` of the resamples; see
        :func:`stability_warning`). Alphas that are indistinguishable from a chosen alpha that the policy still picks
        in, say, 96% of resamples are listed but not warned about. The chosen alpha itself is not changed.
    """
    policy = selection.policy
    alphas, scores = _resampled_goodness(by_alpha, metric or policy.metric, n_resamples, seed)
    ids = np.mean([v for (_, role), v in scores.items() if role is SuiteRole.ID], axis=0)  # (A, B)
    shifts = [v for (_, role), v in scores.items() if role is SuiteRole.SHIFT]
    shift = np.mean(shifts, axis=0) if shifts else np.zeros_like(ids)
    if policy.name == "id-only":
        obj = ids
    elif policy.name == "weighted":
        obj = policy.weight * ids + (1 - policy.weight) * shift
    else:
        feasible = ids >= ids.max(axis=0, keepdims=True) - policy.tolerance - _EPS
        obj = np.where(feasible, shift, -1e9)
    picked = np.argmax(obj >= obj.max(axis=0, keepdims=True) - _EPS, axis=0)  # first = smallest alpha
    p_sel = {a: float(np.mean(picked == i)) for i, a in enumerate(alphas)}
    c = alphas.index(selection.chosen_alpha)
    low = np.quantile(obj[c] - obj, (1.0 - level) / 2, axis=1)
    same = [a for i, a in enumerate(alphas) if i == c or low[i] <= 0]
    pick = max(same, key=lambda a: (p_sel[a], -a))
    warning = stability_warning(selection.chosen_alpha, p_sel, same, pick, level=level, stable_rate=stable_rate,
                                n_resamples=n_resamples)
    return SelectionNoise(chosen_alpha=selection.chosen_alpha, p_selected=p_sel, indistinguishable=same, pick=pick,
                          n_resamples=n_resamples, seed=seed, level=level, stable_rate=stable_rate, warning=warning)


def stability_warning(chosen: float, p_selected: Mapping[float, float], same: list[float], pick: float, *,
                      level: float, stable_rate: float, n_resamples: int) -> str:
    """The warning of an unstable choice, or ``""`` for a stable one.

    Parameters
    ----------
    chosen : float
        The chosen alpha.
    p_selected : mapping of float to float
        Alpha -> share of resamples in which the policy picks it.
    same : list of float
        The alphas not distinguishable from the chosen one (the chosen one included).
    pick : float
        The alpha that :data:`NOISE_RULE` picks within ``same``.
    level, stable_rate : float
        Level of the paired intervals; the pick rate below which the choice is unstable.
    n_resamples : int

    Returns
    -------
    str
        Empty when ``p_selected[chosen] >= stable_rate``; else one sentence: the pick rate against the threshold,
        the alphas within the noise and, when the rule's pick differs, that pick.
    """
    rate = p_selected[chosen]
    if rate >= stable_rate:
        return ""
    others = [a for a in same if a != chosen]
    shown = f"{rate:.0%}" if f"{rate:.0%}" != f"{stable_rate:.0%}" else f"{rate:.1%}"  # never "only 90% ... 90%"
    text = (f"the choice of alpha {fmt_g(chosen)} is unstable: the policy picks it in only {shown} of "
            f"{n_resamples} resamples of the validation splits (a stable choice is picked in at least "
            f"{stable_rate:.0%})")
    if others:
        alphas = "alpha " + fmt_g(others[0]) + " is" if len(others) == 1 else \
            "alphas " + ", ".join(fmt_g(a) for a in others) + " are"
        text += f"; {alphas} not distinguishable from it (paired {level:.0%} intervals)"
    if pick != chosen:
        text += (f"; alpha {fmt_g(pick)} is the one picked most often under resampling ({p_selected[pick]:.0%}) "
                 "among those not distinguishable from it (the chosen alpha stays; the report's \"Selection "
                 "honesty\" section has the rates)")
    return text


