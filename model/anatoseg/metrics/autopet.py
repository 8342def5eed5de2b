"""autoPET lesion metrics for one case, and their aggregation over cases.

Definitions (autoPET challenge; components use 18-connectivity,
:mod:`anatoseg.metrics.components`):

- **Dice**: ``2 |P ∩ G| / (|P| + |G|)`` over all foreground voxels.
- **False-positive volume** (ml): total volume of the predicted components that
  share no voxel with the ground truth.
- **False-negative volume** (ml): total volume of the ground-truth components
  that share no voxel with the prediction.
- **Lesion-wise counts**: TP = ground-truth components touched by the
  prediction, FN = ground-truth components not touched, FP = predicted
  components touching no ground truth; sensitivity = TP / (TP + FN).
- **HD95** (mm): :func:`anatoseg.metrics.distance.hd95`.

A case whose ground truth is empty (a *negative* case) has only FPV (and the FP
count): Dice, FNV, sensitivity and HD95 are None there and do not enter the
means. HD95 is also None when the prediction is empty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from anatoseg.metrics.components import component_sizes, components, touched
from anatoseg.metrics.distance import hd95


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one case; volumes in ml, distances in mm (None = does not apply, see module docstring)."""

    case: str
    positive: bool
    dice: float | None
    fpv_ml: float
    fnv_ml: float | None
    tp: int
    fp: int
    fn: int
    sensitivity: float | None
    hd95_mm: float | None
    gt_volume_ml: float
    pred_volume_ml: float

    def to_dict(self) -> dict:
        return asdict(self)


METRIC_KEYS = ("dice", "fpv_ml", "fnv_ml", "tp", "fp", "fn", "sensitivity", "hd95_mm")
"""The metric columns of a report, in display order."""


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing, case: str = "") -> CaseMetrics:
    """autoPET metrics of a predicted lesion mask against the ground truth.

    ``pred``, ``gt``: ``(Z, Y, X)`` masks (nonzero = lesion) on the same grid.
    ``spacing``: voxel size in mm per axis (Z, Y, X). Returns a :class:`CaseMetrics`.
    """
    pred = np.asarray(pred) > 0
    gt = np.asarray(gt) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    pred_labels, n_pred = components(pred)
    gt_labels, n_gt = components(gt)
    pred_hits = touched(pred_labels, n_pred, gt)
    gt_hits = touched(gt_labels, n_gt, pred)
    fpv = float(component_sizes(pred_labels, n_pred)[~pred_hits].sum()) * voxel_ml
    fnv = float(component_sizes(gt_labels, n_gt)[~gt_hits].sum()) * voxel_ml
    tp, fn, fp = int(gt_hits.sum()), int((~gt_hits).sum()), int((~pred_hits).sum())
    n_pred_voxels, n_gt_voxels = int(pred.sum()), int(gt.sum())
    positive = n_gt > 0
    dice = None
    if positive:
        dice = 2.0 * int(np.count_nonzero(pred & gt)) / (n_pred_voxels + n_gt_voxels)
    return CaseMetrics(case=case, positive=positive, dice=dice, fpv_ml=fpv,
                       fnv_ml=fnv if positive else None, tp=tp, fp=fp, fn=fn,
                       sensitivity=tp / (tp + fn) if positive else None,
                       hd95_mm=hd95(pred, gt, spacing) if positive else None,
                       gt_volume_ml=n_gt_voxels * voxel_ml, pred_volume_ml=n_pred_voxels * voxel_ml)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate(results: list[CaseMetrics]) -> dict:
    """Means over cases (Dice, FNV, sensitivity over positive cases; FPV over all; HD95 where defined).

    Also the lesion counts summed over cases and the pooled lesion-wise
    sensitivity ``sum TP / (sum TP + sum FN)``.
    """
    tp = sum(r.tp for r in results)
    fn = sum(r.fn for r in results)
    return {
        "n_cases": len(results),
        "n_positive": sum(r.positive for r in results),
        "dice": _mean(r.dice for r in results),
        "fpv_ml": _mean(r.fpv_ml for r in results),
        "fnv_ml": _mean(r.fnv_ml for r in results),
        "tp": tp,
        "fp": sum(r.fp for r in results),
        "fn": fn,
        "sensitivity": _mean(r.sensitivity for r in results),
        "lesion_sensitivity": tp / (tp + fn) if tp + fn else None,
        "hd95_mm": _mean(r.hd95_mm for r in results),
    }
