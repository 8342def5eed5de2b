"""Evaluating lesion masks stored as NIfTI: two files, or two folders matched by case.

``pred`` and ``gt`` are either two mask files, or two folders. A ground-truth
folder is either a flat folder of masks (matched to the predictions by file
name) or a dataset in one of the layouts of :mod:`anatoseg.data.layouts` (its
lesion masks are matched to ``<pred>/<case_id>.nii.gz``). Every ground-truth
case needs a prediction; predictions without ground truth are ignored. Hidden and
temporary files (``.x``, ``*.tmp*``, left by an interrupted writer) are never cases.
A case that cannot be read is an error naming it; with ``skip_bad`` it is left out
and listed (:func:`evaluate_files`).
"""

from __future__ import annotations

import os
from pathlib import Path

from anatoseg.data.case_ids import check_unique
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
from anatoseg.data.paths import visible_entries
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


def _find_pred(folder: Path, case: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        if (folder / f"{case}{suffix}").is_file():
            return folder / f"{case}{suffix}"
    return None


def _gt_masks(gt: Path, skip_bad: bool) -> tuple[list[tuple[str, Path]], list[str]]:
    """(case, ground-truth mask) of a flat mask folder or a dataset, and the cases skipped."""
    masks = [p for p in visible_entries(gt) if p.is_file() and is_nifti(p)]
    if masks:
        pairs = [(strip_nifti_suffix(p.name), p) for p in masks]
        check_unique((case for case, _ in pairs), gt)
        return pairs, []
    cases = find_cases(gt, skip_bad=skip_bad)
    skipped = list(cases.skipped)
    no_mask = [c.case_id for c in cases if c.lesions is None]
    if no_mask and not skip_bad:
        raise DataError(f"{len(no_mask)} case(s) have no lesion mask: {', '.join(no_mask[:10])}", gt)
    skipped += [f"{case}: no lesion mask" for case in no_mask]
    return [(c.case_id, c.lesions) for c in cases if c.lesions is not None], skipped


def match_pairs(pred: str | os.PathLike, gt: str | os.PathLike, *,
                skip_bad: bool = False) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """((case, prediction path, ground-truth path) for every ground-truth case, sorted by case; skipped cases).

    DataError listing every ground-truth case without a prediction."""
    pred, gt = Path(pred), Path(gt)
    for path in (gt, pred):
        if not path.exists():
            raise DataError("file not found", path)
    if gt.is_file() or pred.is_file():
        if not (gt.is_file() and pred.is_file()):
            raise DataError("give two mask files or two folders, not one of each", pred)
        return [(strip_nifti_suffix(gt.name), pred, gt)], []
    pairs, skipped = _gt_masks(gt, skip_bad)
    found = [(case, _find_pred(pred, case), path) for case, path in sorted(pairs)]
    missing = [case for case, p, _ in found if p is None]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise DataError(f"file not found: no prediction for case{'s' if len(missing) > 1 else ''} {shown} "
                        f"(expected <case>.nii.gz)", pred)
    return found, skipped


def evaluate_files(pred: str | os.PathLike, gt: str | os.PathLike, *,
                   skip_bad: bool = False) -> tuple[list[CaseMetrics], list[str]]:
    """(metrics of every case, ``<case>: <why>`` of each case left out by ``skip_bad``; see the module
    docstring). Without ``skip_bad`` an unreadable mask is a DataError naming it."""
    pairs, skipped = match_pairs(pred, gt, skip_bad=skip_bad)
    results = []
    for case, p, g in pairs:
        try:
            results.append(evaluate_pair(p, g, case))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(f"{case}: {exc}")
    if not results:
        raise DataError(f"no case could be evaluated ({len(skipped)} skipped)", gt)
    return results, skipped


def evaluate_paths(pred: str | os.PathLike, gt: str | os.PathLike) -> list[CaseMetrics]:
    """Metrics of every case (see the module docstring for how files are matched); any unreadable case is
    a DataError."""
    return evaluate_files(pred, gt)[0]
