"""Tables of the report, built from ``summary.json`` (and ``verdict.json``, ``manifest.json``) only.

Every cell is a preformatted string, so the Markdown and HTML renderers show exactly the same text. Fractions are
printed with three decimals (``0.873``), intervals as ``0.873 [0.861, 0.885]`` and deltas signed (``+0.021``);
a missing or NaN value (``null`` in summary.json) prints as ``n/a``. A cell that shows one split's metric is that
number from summary.json, rounded; a cell that averages several splits says so in its table's caption.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import pandas as pd

from harness.numfmt import fmt_g, fmt_num
from harness.summary import MetricEntry, SplitEntry, Summary

__all__ = ["NA", "Focus", "focus_points", "fmt_value", "fmt_interval", "fmt_delta", "fmt_alpha", "split_role",
           "suite_role", "suite_splits", "report_pairs", "selection_metric", "metric_names", "alpha_points",
           "ensemble_points", "entry_value", "higher_is_better", "headline_table", "split_table", "counts_table",
           "selection_table", "bootstrap_table", "alpha_table", "verdict_table", "manifest_table"]

logger = logging.getLogger(__name__)

NA = "n/a"
Pair = tuple[str, str]


# ---------------------------------------------------------------------------------------------------- formats
def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))


def fmt_value(v: float | None, digits: int = 3) -> str:
    """``0.873`` (``n/a`` for ``None`` or NaN; ``-0.0`` prints ``0.000``: :func:`harness.numfmt.fmt_num`)."""
    return fmt_num(v, digits) if _finite(v) else NA


def fmt_interval(value: float | None, low: float | None, high: float | None) -> str:
    """``0.873 [0.861, 0.885]``; the bracket is left out when the interval is missing."""
    if not _finite(low) or not _finite(high):
        return fmt_value(value)
    return f"{fmt_value(value)} [{fmt_value(low)}, {fmt_value(high)}]"


def fmt_delta(d: float | None, digits: int = 3) -> str:
    """Signed difference: ``+0.021``, ``-0.004``, ``+0.000`` (``n/a`` for missing)."""
    return fmt_num(d, digits, signed=True) if _finite(d) else NA


def fmt_alpha(alpha: float | None) -> str:
    """``0.3`` (``n/a`` for a point without alpha)."""
    return f"{alpha:g}" if alpha is not None else NA


# ---------------------------------------------------------------------------------------------------- structure
def split_role(summary: Summary, suite: str, split: str) -> str:
    """Role of a split (``train``, ``validation`` or ``test``) from ``summary.suites``, else guessed from its name."""
    info = summary.suites.get(suite)
    role = (info.splits.get(split) or {}).get("role") if info is not None else None
    if role:
        return str(role)
    low = split.lower()
    if low in ("validation", "valid", "val", "dev"):
        return "validation"
    return "train" if low == "train" else "test"


def suite_role(summary: Summary, suite: str) -> str:
    """``id`` or ``shift`` (a suite absent from ``summary.suites`` counts as a shift)."""
    info = summary.suites.get(suite)
    return info.role if info is not None else "shift"


def _all_pairs(summary: Summary) -> list[Pair]:
    order: dict[Pair, None] = {}
    for name, info in summary.suites.items():
        for split in info.splits:
            order[(name, split)] = None
    for results in (summary.results, summary.ensemble):
        for suites in results.values():
            for suite, splits in suites.items():
                for split in splits:
                    order[(suite, split)] = None
    present = {(s, sp) for suites in summary.results.values() for s, sps in suites.items() for sp in sps}
    pairs = [p for p in order if p in present]
    suite_rank = {s: i for i, s in enumerate(summary.suites)}
    # ID suites first, then shifts; summary.suites order within each (stable sort keeps split order).
    return sorted(pairs, key=lambda p: (suite_role(summary, p[0]) != "id", suite_rank.get(p[0], len(suite_rank))))


def suite_splits(summary: Summary, role: str | None = None) -> list[Pair]:
    """(suite, split) pairs with results, ID suites first; ``role`` keeps only splits of that role.

    With ``role=None`` every split except ``train`` splits is returned.
    """
    pairs = _all_pairs(summary)
    if role is None:
        return [p for p in pairs if split_role(summary, *p) != "train"]
    return [p for p in pairs if split_role(summary, *p) == role]


def report_pairs(summary: Summary, role: str = "test") -> tuple[list[Pair], dict[str, list[Pair]]]:
    """The ID pairs and the shift pairs (grouped by suite) that the ``role`` variant of the report shows.

    ``role="test"`` uses test splits; a suite without a test split falls back to its other non-train splits
    (an eval run on ``--split validation``). ``role="validation"`` uses the splits that selected alpha
    (``selection.selected_on``), or every validation split when the run records none.
    """
    if role == "validation":
        sel = summary.selection.selected_on if summary.selection is not None else []
        chosen = [tuple(s.split("/", 1)) for s in sel if "/" in s]
        present = set(suite_splits(summary, None))
        pairs = [p for p in chosen if p in present] or suite_splits(summary, "validation")
    else:
        pairs = []
        every = suite_splits(summary, None)
        for suite in dict.fromkeys(s for s, _ in every):
            mine = [p for p in every if p[0] == suite]
            tests = [p for p in mine if split_role(summary, *p) == "test"]
            pairs.extend(tests or mine)
    id_pairs = [p for p in pairs if suite_role(summary, p[0]) == "id"]
    shift: dict[str, list[Pair]] = {}
    for p in pairs:
        if suite_role(summary, p[0]) != "id":
            shift.setdefault(p[0], []).append(p)
    return id_pairs, shift


def metric_names(summary: Summary) -> list[str]:
    """Every metric in the results, the selection metric first, then in order of first appearance."""
    names: dict[str, None] = {}
    for suites in summary.results.values():
        for splits in suites.values():
            for entry in splits.values():
                names.update(dict.fromkeys(entry.metrics))
    first = selection_metric(summary, list(names))
    return [first] + [m for m in names if m != first] if first in names else list(names)


def selection_metric(summary: Summary, available: Sequence[str] | None = None) -> str:
    """The metric that selected alpha (``selection.metric``), else ``accuracy``, else the first available."""
    if summary.selection is not None:
        return summary.selection.metric
    available = list(available) if available is not None else metric_names(summary)
    return "accuracy" if "accuracy" in available or not available else available[0]


@dataclass(frozen=True)
class Focus:
    """The points the report compares side by side.

    ``columns`` holds ``(label, point id)`` for base, adapted and the chosen point, as far as the run has them
    (an eval run has one point; the chosen point gets its own column even when it is base or adapted).
    """

    base: str | None
    adapted: str | None
    chosen: str | None
    columns: tuple[tuple[str, str], ...]

    @property
    def compared(self) -> list[tuple[str, str]]:
        """``(short label, point id)`` of the columns compared with base (none when the run has no base)."""
        if self.base is None:
            return []
        return [(label.split(" (")[0], pid) for label, pid in self.columns if label != "base"]


def _chosen_id(summary: Summary) -> str | None:
    if summary.chosen is not None:
        return summary.chosen.id
    sel = summary.selection
    if sel is None:
        return None
    if sel.chosen_point and any(p.id == sel.chosen_point for p in summary.points):
        return sel.chosen_point
    if sel.chosen_alpha is not None:
        return next((p.id for p in summary.points if p.alpha is not None
                     and abs(p.alpha - sel.chosen_alpha) < 1e-9), None)
    return None


def focus_points(summary: Summary) -> Focus:
    """Base, adapted and chosen point ids of a run (each ``None`` when absent), with display labels.

    A single-model run (``harness eval``: one point, no alpha) has no base, adapted or chosen point; its one
    column is labelled ``model (folder <parent>/<folder>)``, or ``model``: a path, never read as a role.
    """
    base = next((p.id for p in summary.points if p.role == "base"), None)
    adapted = next((p.id for p in summary.points if p.role == "adapted"), None)
    chosen = _chosen_id(summary)
    cols: list[tuple[str, str]] = []
    if base is None and len(summary.points) == 1 and summary.points[0].alpha is None:  # an eval run: one model
        only = summary.points[0]
        parts = PurePath(only.label.rstrip("/\\")).parts[-2:] if only.label else ()
        name = "/".join(parts)
        label = f"model (folder {name[-40:]})" if name and name != only.id else "model"
        return Focus(base=None, adapted=None, chosen=None, columns=((label, only.id),))
    if base is not None:
        cols.append(("base", base))
    if adapted is not None:
        cols.append(("adapted", adapted))
    if chosen is not None:
        alpha = summary.point(chosen).alpha
        same = {base: " = base", adapted: " = adapted"}.get(chosen, "")
        cols.append((f"chosen (α={fmt_alpha(alpha)}{same})", chosen))
    if not cols:  # a run whose points are all blends (unusual): show them all
        cols = [(p.id, p.id) for p in summary.points]
    return Focus(base=base, adapted=adapted, chosen=chosen, columns=tuple(cols))


def alpha_points(summary: Summary) -> list[tuple[str, float]]:
    """(point id, alpha) of every weight-space point with an alpha, in alpha order."""
    pts = [(p.id, float(p.alpha)) for p in summary.points if p.alpha is not None and p.id in summary.results]
    return sorted(pts, key=lambda t: t[1])


def ensemble_points(summary: Summary) -> list[tuple[str, float]]:
    """(key, alpha) of the output-space ensemble results, in alpha order.

    alpha comes from the point with the same id, else from the text after the last ``=`` in the key
    (``ensemble@alpha=0.3``); keys with neither are left out (logged).
    """
    out = []
    for key in summary.ensemble:
        point = next((p for p in summary.points if p.id == key), None)
        alpha = point.alpha if point is not None else None
        if alpha is None and "=" in key:
            try:
                alpha = float(key.rsplit("=", 1)[1])
            except ValueError:
                alpha = None
        if alpha is None:
            logger.warning("ensemble result %r has no alpha (no such point, no '=<alpha>' suffix); not drawn", key)
            continue
        out.append((key, float(alpha)))
    return sorted(out, key=lambda t: t[1])


def _entry(results: Mapping[str, Any], pid: str | None, pair: Pair) -> SplitEntry | None:
    if pid is None:
        return None
    return results.get(pid, {}).get(pair[0], {}).get(pair[1])


def entry_value(results: Mapping[str, Any], pid: str | None, pair: Pair, metric: str) -> MetricEntry | None:
    """The :class:`MetricEntry` of ``metric`` for one point on one (suite, split), or ``None``."""
    e = _entry(results, pid, pair)
    return e.metrics.get(metric) if e is not None else None


def higher_is_better(summary: Summary, metric: str) -> bool:
    """Direction of ``metric`` as recorded in the results (``True`` if the run never recorded it)."""
    for suites in summary.results.values():
        for splits in suites.values():
            for entry in splits.values():
                if metric in entry.metrics:
                    return entry.metrics[metric].higher_is_better
    return True


# ---------------------------------------------------------------------------------------------------- tables
def _delta(a: MetricEntry | None, b: MetricEntry | None) -> float | None:
    if a is None or b is None or not _finite(a.value) or not _finite(b.value):
        return None
    return float(a.value) - float(b.value)


def headline_table(summary: Summary, focus: Focus, metric: str,
                   metric_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (suite, split): role, n, ``metric`` for each focus point with its interval, deltas vs base.

    ``metric_of`` (suite -> metric) shows each suite on its own metric instead, named in a ``metric`` column."""
    rows = []
    for pair in suite_splits(summary):
        entry = next((e for _, pid in focus.columns if (e := _entry(summary.results, pid, pair))), None)
        row = {"suite": pair[0], "split": pair[1],
               "role": f"{suite_role(summary, pair[0])} / {split_role(summary, *pair)}",
               "n": str(entry.n) if entry else NA}
        if metric_of is not None:
            row["metric"] = metric_of.get(pair[0], metric)
        _point_cells(row, summary, focus, pair, row.get("metric", metric), " vs base")
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def _point_cells(row: dict[str, str], summary: Summary, focus: Focus, pair: Pair, metric: str,
                 delta_suffix: str) -> None:
    """Add ``value [interval]`` per focus column and ``Δ <point><delta_suffix>`` vs base per compared point."""
    base = entry_value(summary.results, focus.base, pair, metric)
    for label, pid in focus.columns:
        m = entry_value(summary.results, pid, pair, metric)
        row[label] = fmt_interval(m.value, m.ci_low, m.ci_high) if m else NA
    for short, pid in focus.compared:
        row[f"Δ {short}{delta_suffix}"] = fmt_delta(_delta(entry_value(summary.results, pid, pair, metric), base))


def split_table(summary: Summary, focus: Focus, pair: Pair) -> pd.DataFrame:
    """Every metric of one (suite, split) (those any point recorded there): value [interval] per focus point,
    and deltas vs base."""
    rows = []
    present = {m for pid in summary.results if (e := _entry(summary.results, pid, pair)) for m in e.metrics}
    for metric in [m for m in metric_names(summary) if m in present]:
        base = entry_value(summary.results, focus.base, pair, metric)
        m0 = base or next((m for _, pid in focus.columns if (m := entry_value(summary.results, pid, pair, metric))),
                          None)
        row = {"metric": metric, "better": NA if m0 is None else ("higher" if m0.higher_is_better else "lower")}
        _point_cells(row, summary, focus, pair, metric, "")
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def counts_table(summary: Summary) -> pd.DataFrame:
    """n, n_truncated and n_dropped per (suite, split), with the split fingerprint (first 12 hex digits).

    The counts are the largest over the run's points (they are equal unless a point failed part of a split).
    """
    rows = []
    for pair in suite_splits(summary, None) + suite_splits(summary, "train"):
        entries = [e for pid in summary.results if (e := _entry(summary.results, pid, pair))]
        info = summary.suites.get(pair[0])
        fp = str((info.splits.get(pair[1]) or {}).get("fingerprint", "")) if info else ""
        rows.append({"suite": pair[0], "split": pair[1], "split role": split_role(summary, *pair),
                     "n": str(max(e.n for e in entries)),
                     "n_truncated": str(max(e.n_truncated for e in entries)),
                     "n_dropped": str(max(e.n_dropped for e in entries)),
                     "why dropped": _drop_reasons(info, pair[1]),
                     "fingerprint": fp[:12] or NA})
    return pd.DataFrame(rows, dtype=object)


def _drop_reasons(info: Any, split: str) -> str:
    """The recorded reasons of a split's dropped rows with their counts (``cap 291``: left out by
    ``--max-examples`` or the split's ``max_examples``), or n/a when the run recorded none."""
    reasons = ((info.splits.get(split) or {}).get("drop_reasons") or {}) if info else {}
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()) if v) or NA


def _metric_text(metric: str | Mapping[str, str]) -> str:
    """One metric's name, or "each suite's own: s1 m1, s2 m2" when the suites select on different metrics."""
    if isinstance(metric, str):
        return metric
    if len(set(metric.values())) == 1:
        return next(iter(metric.values()))
    return "each suite's own: " + ", ".join(f"{k} {v}" for k, v in metric.items())


def selection_table(summary: Summary, metric_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """How alpha was selected: policy, params, metric (``metric_of``: suite -> the metric it selects on, named per
    suite when they differ), the splits that selected it, tie-break, search."""
    sel = summary.selection
    if sel is None:
        return pd.DataFrame(columns=["field", "value"], dtype=object)
    rows = [("policy", sel.policy),
            ("params", ", ".join(f"{k}={_scalar(v)}" for k, v in sorted(sel.params.items())) or "none"),
            ("metric", _metric_text(metric_of) if metric_of else sel.metric),
            ("selected on", ", ".join(sel.selected_on) or "none recorded"),
            ("chosen alpha", fmt_alpha(sel.chosen_alpha)),
            ("chosen point", sel.chosen_point or (focus_points(summary).chosen or NA)),
            ("tie-break", sel.tie_break),
            ("evaluations", str(sel.n_evaluations)),
            ("search", sel.search),
            ("Pareto points (ID vs mean shift)", ", ".join(sel.pareto) or "none recorded")]
    return pd.DataFrame(rows, columns=["field", "value"], dtype=object)


def bootstrap_table(summary: Summary) -> pd.DataFrame:
    """The bootstrap settings behind every interval."""
    b = summary.bootstrap
    rows = [("resamples", str(b.n_resamples)), ("seed", str(b.seed)), ("confidence", f"{b.confidence:g}"),
            ("method", b.method), ("cluster key", b.cluster_key)]
    return pd.DataFrame(rows, columns=["field", "value"], dtype=object)


def alpha_table(summary: Summary, metric: str | Mapping[str, str]) -> pd.DataFrame:
    """``metric`` (one name, or suite -> its own metric) at every alpha for every (suite, split), with the policy's
    objective and feasibility; with per-suite metrics that differ, each column names its metric."""
    sel = summary.selection
    pairs = suite_splits(summary)
    chosen = _chosen_id(summary)
    per_suite = not isinstance(metric, str) and len(set(metric.values())) > 1
    rows = []
    for pid, alpha in alpha_points(summary):
        row = {"α": fmt_alpha(alpha), "point": pid}
        for pair in pairs:
            name = metric if isinstance(metric, str) else metric[pair[0]]
            m = entry_value(summary.results, pid, pair, name)
            row[f"{pair[0]}/{pair[1]}" + (f" ({name})" if per_suite else "")] = fmt_value(m.value) if m else NA
        if sel is not None:
            row["objective"] = fmt_value(sel.objective.get(pid)) if pid in sel.objective else NA
            row["feasible"] = ("yes" if sel.feasible[pid] else "no") if pid in sel.feasible else NA
            row["Pareto"] = "yes" if pid in sel.pareto else ""
        row["chosen"] = "◆" if pid == chosen else ""
        rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def verdict_table(verdict: Mapping[str, Any]) -> pd.DataFrame:
    """One row per gate rule outcome of ``verdict.json``: value, bound, threshold, margin, n, PASS/FAIL (``PASS
    (warning)`` with the warning as the reason where a passing rule carries one)."""
    rows = []
    for o in verdict.get("outcomes", []):
        rows.append({"rule": str(o.get("rule", "")), "kind": str(o.get("kind", "")),
                     "metric": str(o.get("metric", "")),
                     "suite": "/".join(x for x in (str(o.get("suite") or ""), str(o.get("split") or "")) if x),
                     "mode": str(o.get("mode", "")), "value": fmt_value(o.get("value")),
                     "bound": fmt_value(o.get("bound")), "threshold": fmt_value(o.get("threshold")),
                     "margin": fmt_delta(o.get("margin")),
                     "n": str(o["n"]) if o.get("n") is not None else NA,
                     "result": _result(o), "reason": str(o.get("reason") or _warning(o))})
    return pd.DataFrame(rows, dtype=object)


def _warning(outcome: Mapping[str, Any]) -> str:
    """A passing outcome's warning (``info.warning``: an underpowered margin under ``on_underpowered: warn``)."""
    info = outcome.get("info") or {}
    return f"warning: {info['warning']}" if isinstance(info, Mapping) and info.get("warning") else ""


def _result(outcome: Mapping[str, Any]) -> str:
    """PASS, FAIL, or "PASS (warning)" for a pass that carries a warning (CI trial: the report showed a bare PASS
    for rules the gate had flagged as underpowered)."""
    if not outcome.get("passed"):
        return "FAIL"
    return "PASS (warning)" if _warning(outcome) else "PASS"


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return fmt_g(v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _flatten(obj: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(obj, Mapping) and obj:
        for k in obj:
            yield from _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, x in enumerate(obj):
            key = str(x.get("name", i)) if isinstance(x.get("name", i), (str, int)) else str(i)
            yield from _flatten(x, f"{prefix}[{key}]")
    elif isinstance(obj, (list, tuple)) and ("argv" in prefix or "command" in prefix):
        yield prefix, " ".join(shlex.quote(str(x)) for x in obj)
    elif isinstance(obj, (list, tuple)):
        yield prefix, ", ".join(_scalar(x) for x in obj)
    else:
        yield prefix, NA if obj is None or obj == {} else _scalar(obj)


def manifest_table(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """manifest.json flattened to ``key.path`` / value rows (lists of records are keyed by their ``name``)."""
    return pd.DataFrame(list(_flatten(manifest)), columns=["field", "value"], dtype=object)
