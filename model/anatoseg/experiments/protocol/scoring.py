"""Scoring one test case: what a unit JSON keeps per case.

From a lesion probability ``(Z, Y, X)`` on the case's PET grid (:func:`network_probability`, or a
sanity mask as 0/1), :func:`score_case` gives

- the autoPET metrics at probability 0.5 (:func:`anatoseg.metrics.autopet.evaluate_case`: Dice,
  FPV, FNV, TP/FP/FN components, sensitivity, HD95);
- ``fp_by_organ``: false-positive components and their volume by organ group of the case's true
  organ map (:func:`anatoseg.metrics.breakdown.grouped_organs`);
- ``lesions``: one record per GT lesion (:func:`~anatoseg.metrics.breakdown.lesion_records`) tagged
  with the generator's site, hard tag, relation ... matched by centre (``unmatched_lesions``: list
  entries with no GT component at their centre, e.g. too small to survive the PET grid);
- ``froc``: every candidate's score (components of ``prob > 0.1``, max probability) split into
  lesion detections and false positives (:class:`anatoseg.metrics.froc.CaseScores`).
"""

from __future__ import annotations

import numpy as np

from anatoseg.data.case import Case
from anatoseg.experiments.sanity import sanity_baseline
from anatoseg.inference.postprocess import suppress_in_organs
from anatoseg.inference.predict import Predictor, quantise
from anatoseg.metrics.autopet import evaluate_case
from anatoseg.metrics.breakdown import false_positives_by_organ, grouped_organs, lesion_records, tags_by_centre
from anatoseg.metrics.froc import case_scores


def network_probability(predictor: Predictor, case: Case) -> np.ndarray:
    """Lesion probability ``(Z, Y, X)`` float32 in [0, 1] on ``case``'s grid.

    The same path as :meth:`Predictor.predict_case` (preprocessing, sliding window, uint8
    quantisation, trilinear restore, then the organ-mask post-processing of ``infer.suppress_organs``:
    :func:`suppressed`), so ``prob >= 0.5`` is exactly the mask ``anato predict`` writes.
    ``case.organs`` holds the prompts when the network uses them and the organ map the
    post-processing reads.
    """
    from anatoseg.data.preprocess import preprocess_case
    from anatoseg.data.volumes import pet_ct_channels

    pre = preprocess_case(case, predictor.preprocessing)
    image, pre.image = pre.image, None
    prob = predictor.probability(pet_ct_channels(image), pre.organs, description=case.case_id)
    prob = pre.restore(quantise(prob), order=1, fill=0.0, dtype=np.float32) / np.float32(255.0)
    return suppressed(prob, case.organs, predictor.suppress, predictor.suppress_fraction)


def suppressed(prob: np.ndarray, organs: np.ndarray | None, organ_ids: tuple[int, ...],
               fraction: float = 0.5) -> np.ndarray:
    """``prob`` ``(Z, Y, X)`` with 0 on the components of ``prob >= 0.5`` that
    :func:`~anatoseg.inference.postprocess.suppress_in_organs` removes (those lying mostly inside
    ``organ_ids`` of ``organs``, the same grid): the thresholded mask is then the post-processed
    one. Below 0.5 nothing changes, so the FROC keeps such a component's rim as a low-score
    candidate. ``prob`` itself when ``organ_ids`` is empty."""
    if not organ_ids:
        return prob
    if organs is None:
        raise ValueError("suppressed: the organ-mask post-processing needs the case's organ map")
    mask = prob >= 0.5
    removed = mask & (suppress_in_organs(mask, organs, organ_ids, fraction) == 0)
    return np.where(removed, np.float32(0.0), prob)


def score_case(prob: np.ndarray, truth: Case, lesion_list: list[dict]) -> dict:
    """One case's record (module docstring). ``prob``: ``(Z, Y, X)`` on ``truth``'s grid; ``truth``: the
    case with its GT ``lesions`` and true ``organs``; ``lesion_list``: the manifest's entries."""
    if truth.lesions is None or truth.organs is None:
        raise ValueError(f"score_case: case {truth.case_id} needs its lesion mask and organ map")
    if prob.shape != truth.shape:
        raise ValueError(f"score_case: probability shape {prob.shape} != case grid {truth.shape}")
    spacing, gt = truth.spacing, truth.lesions
    pred = prob >= 0.5
    groups, names = grouped_organs(truth.organs)
    tags, unmatched = tags_by_centre(gt, lesion_list, truth.affine)
    return {**evaluate_case(pred, gt, spacing, case=truth.case_id).to_dict(),
            "fp_by_organ": false_positives_by_organ(pred, gt, groups, spacing, names),
            "lesions": lesion_records(pred, gt, spacing, tags), "unmatched_lesions": unmatched,
            "froc": case_scores(prob, gt).to_dict()}


def sanity_case(options: dict, truth: Case, lesion_list: list[dict]) -> dict:
    """:func:`score_case` of the no-learning baseline ``options`` (:data:`.variants.SANITY`) on one
    case, the organ mask being the case's true organ map; its FROC has one operating point."""
    mask = sanity_baseline(truth.pet, truth.spacing, truth.organs, **options)
    return score_case(mask.astype(np.float32), truth, lesion_list)
