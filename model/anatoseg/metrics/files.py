"""Evaluating lesion masks stored as NIfTI: two files, or two folders matched by case.

``pred`` and ``gt`` are either two mask files, or two folders. A ground-truth
folder is either a flat folder of masks (matched to the predictions by file
name) or a dataset in one of the layouts of :mod:`anatoseg.data.layouts` (its
lesion masks are matched to ``<pred>/<case_id>.nii.gz``). Every ground-truth
case needs a prediction; predictions without ground truth are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from anatoseg.data.labels import LESION_LABEL_VALUES
from anatoseg.data.layouts import find_cases
from anatoseg.data.nifti import (
    NIFTI_SUFFIXES,
    file_to_zyx,
    is_nifti,
    load_label_nifti,
    same_grid,
    spacing_of,
    strip_nifti_suffix,
)
from anatoseg.errors import DataError
from anatoseg.metrics.autopet import CaseMetrics, evaluate_case


def evaluate_pair(pred_path: str | os.PathLike, gt_path: str | os.PathLike, case: str | None = None) -> CaseMetrics:
    """Metrics of one predicted mask file against one ground-truth mask file (both {0, 1}, same grid)."""
    gt = load_label_nifti(gt_path, LESION_LABEL_VALUES, what="lesion mask")
    pred = load_label_nifti(pred_path, LESION_LABEL_VALUES, what="lesion mask")
    if not same_grid(pred.shape, pred.affine, gt.shape, gt.affine):
        raise DataError(f"prediction is on a different grid than the ground truth {gt.path} "
                        f"(shape {pred.shape} vs {gt.shape}, or affine differs)", pred.path)
    name = case if case is not None else strip_nifti_suffix(Path(gt_path).name)
    gt_data, affine = file_to_zyx(gt.data, gt.affine)
    return evaluate_case(file_to_zyx(pred.data, pred.affine)[0], gt_data, spacing_of(affine), case=name)


def _find_pred(folder: Path, case: str) -> Path:
    for suffix in NIFTI_SUFFIXES:
        if (folder / f"{case}{suffix}").is_file():
            return folder / f"{case}{suffix}"
    raise DataError(f"file not found (no prediction for case {case}; expected {case}.nii.gz)", folder)


def match_pairs(pred: str | os.PathLike, gt: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(case, prediction path, ground-truth path) for every ground-truth case, sorted by case."""
    pred, gt = Path(pred), Path(gt)
    for path in (gt, pred):
        if not path.exists():
            raise DataError("file not found", path)
    if gt.is_file() or pred.is_file():
        if not (gt.is_file() and pred.is_file()):
            raise DataError("give two mask files or two folders, not one of each", pred)
        return [(strip_nifti_suffix(gt.name), pred, gt)]
    masks = sorted(p for p in gt.iterdir() if p.is_file() and is_nifti(p))
    if masks:
        pairs = [(strip_nifti_suffix(p.name), p) for p in masks]
    else:
        pairs = [(c.case_id, c.lesions) for c in find_cases(gt)]
        missing = [case for case, path in pairs if path is None]
        if missing:
            raise DataError(f"case {missing[0]} has no lesion mask", gt)
    return [(case, _find_pred(pred, case), path) for case, path in pairs]


def evaluate_paths(pred: str | os.PathLike, gt: str | os.PathLike) -> list[CaseMetrics]:
    """Metrics of every case (see the module docstring for how files are matched)."""
    return [evaluate_pair(p, g, case) for case, p, g in match_pairs(pred, gt)]
