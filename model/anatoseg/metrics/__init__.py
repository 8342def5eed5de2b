"""autoPET lesion metrics: per case from arrays (:func:`evaluate_case`) or files (:func:`evaluate_paths`),
aggregated with :func:`aggregate`; reports in :mod:`anatoseg.metrics.report`; the threshold-free
lesion FROC in :mod:`.froc`; false positives by organ and sensitivity by lesion attribute in
:mod:`.breakdown`."""

from anatoseg.metrics.autopet import METRIC_KEYS, CaseMetrics, aggregate, evaluate_case
from anatoseg.metrics.breakdown import false_positives_by_organ, lesion_records, sensitivity_by
from anatoseg.metrics.components import CONNECTIVITY_18, components
from anatoseg.metrics.distance import hd95
from anatoseg.metrics.files import evaluate_pair, evaluate_paths
from anatoseg.metrics.froc import FROC, CaseScores, case_scores, froc

__all__ = ["CONNECTIVITY_18", "FROC", "METRIC_KEYS", "CaseMetrics", "CaseScores", "aggregate", "case_scores",
           "components", "evaluate_case", "evaluate_pair", "evaluate_paths", "false_positives_by_organ", "froc",
           "hd95", "lesion_records", "sensitivity_by"]
