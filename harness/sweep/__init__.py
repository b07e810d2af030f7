"""Stage 7: evaluate blends over alpha and choose alpha by a stated policy, on validation splits only.

Selection policies (``--select``), all computed on splits whose role is ``validation`` (ID validation plus, where
the user provides them, shift validation); ``test`` splits are reported, never used to select:

* ``max-shift-within-id`` (default): maximise the macro mean of the selection metric over shift suites, subject
  to ID metric >= best ID - tolerance (default 0.01) over the evaluated alphas.
* ``weighted``: maximise ``w * ID + (1 - w) * mean shift`` (default w = 0.5).
* ``id-only``: maximise the ID metric.

Metrics where lower is better (nll, ece) are negated first, so "best" always means "largest goodness".
Tie-break: among alphas whose objective is within 1e-9 of the best, the smallest alpha (closest to the base
model) wins. The Pareto front is computed on (ID, mean shift) goodness over all evaluated alphas.

The adaptive search (``--alphas adaptive``) evaluates 0, 1 and 0.5, then repeatedly bisects the wider gap next to
an anchor on the 0.1 grid (alternately the chosen alpha and the best-ID alpha, which defines the constraint) until
no anchor has an unexplored grid neighbour or the budget (default 6 evaluations, 55% of the grid) is spent.

The output-space ensemble ``p(alpha) = (1 - alpha) * softmax(base) + alpha * softmax(adapted)`` (the comparison
WiSE-FT reports) is derived from stored logits at every evaluated alpha, with no forward pass.

Source: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models" (CVPR); model soups' held-out selection
(Wortsman et al. 2022, ICML).
"""

from __future__ import annotations

from harness.sweep.noise import NOISE_RULE, STABLE_PICK_RATE, SelectionNoise, selection_uncertainty, stability_warning
from harness.sweep.policy import (DEFAULT_GRID, POLICIES, TIE_BREAK, Selection, SelectionPolicy, check_selectable,
                                  parse_alphas, parse_alphas_noted, pareto_front, select_alpha, validation_scores)
from harness.sweep.search import (SweepResult, adaptive_alphas, ensemble_logits, output_ensembles, search_alphas,
                                  select_points)

__all__ = ["POLICIES", "TIE_BREAK", "DEFAULT_GRID", "SelectionPolicy", "Selection", "parse_alphas",
           "parse_alphas_noted", "check_selectable",
           "validation_scores", "select_alpha", "select_points", "pareto_front", "adaptive_alphas",
           "search_alphas", "ensemble_logits", "output_ensembles", "SweepResult", "NOISE_RULE", "SelectionNoise",
           "selection_uncertainty", "stability_warning", "STABLE_PICK_RATE"]

