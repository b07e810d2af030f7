"""Stage 6: metrics and their seeded, vectorised cluster bootstrap.

Importing this package loads no model, imports neither torch nor transformers, and never imports ``evaluate``
(that happens only when an ``evaluate:NAME_OR_PATH`` metric is asked for).
"""

from __future__ import annotations

from harness.metrics.bootstrap import (
    cluster_index,
    cluster_sums,
    cluster_weights,
    compute_metrics,
    metric_distribution,
    percentile_interval,
    resample_sums,
)
from harness.metrics.registry import METRICS, MetricSpec, get_metric, metric_names, point_value

__all__ = ["METRICS", "MetricSpec", "get_metric", "metric_names", "point_value", "compute_metrics",
           "cluster_index", "cluster_weights", "cluster_sums", "resample_sums", "metric_distribution",
           "percentile_interval"]
