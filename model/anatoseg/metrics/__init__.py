"""autoPET lesion metrics: per case from arrays (:func:`evaluate_case`) or files (:func:`evaluate_paths`),
aggregated with :func:`aggregate`; reports in :mod:`anatoseg.metrics.report`."""

from anatoseg.metrics.autopet import METRIC_KEYS, CaseMetrics, aggregate, evaluate_case
from anatoseg.metrics.components import CONNECTIVITY_18, components
from anatoseg.metrics.distance import hd95
from anatoseg.metrics.files import evaluate_pair, evaluate_paths

__all__ = ["CONNECTIVITY_18", "METRIC_KEYS", "CaseMetrics", "aggregate", "components", "evaluate_case",
           "evaluate_pair", "evaluate_paths", "hd95"]
