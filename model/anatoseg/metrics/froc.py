"""Threshold-free lesion-level FROC: sensitivity against false positives per case.

**Candidates.** From a probability map ``(Z, Y, X)`` (:func:`extract_candidates`): the connected
components of ``prob > threshold`` (a low threshold, default 0.1) with autoPET's 18-connectivity
(:mod:`anatoseg.metrics.components`), each scored by the maximum probability inside it. A caller
may also give its own candidates: a list of ``(mask, score)`` per case
(:func:`case_scores_from_masks`), or already matched ones (:meth:`CaseScores.from_matches`).

**Matching.** The ground-truth lesions are the 18-connected components of the GT mask. A candidate
whose intersection over union with a GT lesion is at least :data:`MIN_IOU` (0.1, the criterion of
nnDetection-style 3D detection benchmarks) is a hit of that lesion; a candidate that hits no lesion is a
false positive. (Any shared voxel used to count as a hit: a body-wide low-probability blob then
"detected" every lesion at one false positive per case.) Each GT lesion is counted once: it is
detected at operating threshold ``t`` when any candidate hitting it has score ``>= t``, so its
*detection score* is the maximum score of the candidates hitting it (``-inf`` when none does).
Extra candidates on an already hit lesion are neither TP nor FP.

**Curve.** Over every distinct score ``t`` (descending), sensitivity(t) = detected lesions / all
lesions (pooled over cases) and FP per case(t) = false positives with score ``>= t`` / number of
cases (cases without lesions count). The sensitivity *at* a rate ``r`` is the highest sensitivity
of an operating point with at most ``r`` FP per case (0 when no point qualifies); the reported
``mean`` is its average over the rates (0.5, 1, 2, 4 by default; a CPM-like summary).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from anatoseg.metrics.components import components

MIN_IOU = 0.1
"""Intersection over union with a GT lesion from which a candidate is a hit of it."""
FP_RATES = (0.5, 1.0, 2.0, 4.0)
"""False positives per case at which the FROC sensitivity is read."""


@dataclass(frozen=True)
class CaseScores:
    """One case reduced to what the FROC needs.

    ``lesion_scores``: ``(n_lesions,)`` detection score of each GT lesion (``-inf`` = never hit);
    ``fp_scores``: ``(n_fp,)`` scores of the candidates touching no lesion.
    """

    lesion_scores: np.ndarray
    fp_scores: np.ndarray

    def to_dict(self, digits: int = 4) -> dict:
        """JSON-ready: ``{"lesion_scores": [...], "fp_scores": [...]}``, scores rounded to ``digits``,
        a never-hit lesion as None."""
        return {"lesion_scores": [round(float(s), digits) if np.isfinite(s) else None for s in self.lesion_scores],
                "fp_scores": [round(float(s), digits) for s in self.fp_scores]}

    @classmethod
    def from_dict(cls, values: dict) -> CaseScores:
        """Inverse of :meth:`to_dict` (None -> ``-inf``)."""
        lesion = [-np.inf if s is None else float(s) for s in values["lesion_scores"]]
        return cls(np.asarray(lesion, dtype=np.float64), np.asarray(values["fp_scores"], dtype=np.float64))

    @classmethod
    def from_matches(cls, scores: Sequence[float], hits: Sequence[Iterable[int]], n_lesions: int) -> CaseScores:
        """From candidate ``scores`` ``(n,)`` and, per candidate, the GT lesion indices (0-based,
        ``< n_lesions``) it overlaps (empty = false positive)."""
        lesion = np.full(n_lesions, -np.inf)
        fp = []
        for score, lesions in zip(scores, hits, strict=True):
            lesions = list(lesions)
            if not lesions:
                fp.append(float(score))
            for k in lesions:
                if not 0 <= k < n_lesions:
                    raise ValueError(f"CaseScores.from_matches: lesion index {k} outside 0..{n_lesions - 1}")
                lesion[k] = max(lesion[k], float(score))
        return cls(lesion, np.asarray(fp, dtype=np.float64))


def extract_candidates(prob: np.ndarray, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of a probability map ``(Z, Y, X)`` in [0, 1]: ``(labels, scores)``.

    ``labels``: int32 ``(Z, Y, X)``, the 18-connected components 1..n of ``prob > threshold``;
    ``scores``: ``(n,)`` maximum probability inside each component.
    """
    prob = np.asarray(prob, dtype=np.float64)
    labels, n = components(prob > threshold)
    scores = np.asarray(ndimage.maximum(prob, labels, np.arange(1, n + 1)), dtype=np.float64).reshape(n)
    return labels, scores


def _match_labels(labels: np.ndarray, n: int, gt: np.ndarray) -> tuple[list[list[int]], int]:
    """Per candidate 1..n, the 0-based GT lesion indices it hits (IoU >= :data:`MIN_IOU`); and the number
    of GT lesions."""
    gt_labels, n_gt = components(np.asarray(gt) > 0)
    hits: list[list[int]] = [[] for _ in range(n)]
    both = (labels > 0) & (gt_labels > 0)
    if not both.any():
        return hits, n_gt
    cand_size = np.bincount(labels.ravel(), minlength=n + 1)
    lesion_size = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    pair = labels[both].astype(np.int64) * (n_gt + 1) + gt_labels[both]
    keys, inter = np.unique(pair, return_counts=True)
    for key, overlap in zip(keys, inter, strict=True):
        cand, lesion = divmod(int(key), n_gt + 1)
        if overlap / (cand_size[cand] + lesion_size[lesion] - overlap) >= MIN_IOU:
            hits[cand - 1].append(lesion - 1)
    return hits, n_gt


def case_scores(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.1) -> CaseScores:
    """:class:`CaseScores` of one case from its probability map and GT mask, both ``(Z, Y, X)``."""
    prob, gt = np.asarray(prob), np.asarray(gt)
    if prob.shape != gt.shape:
        raise ValueError(f"case_scores: prob shape {prob.shape} != gt shape {gt.shape}")
    labels, scores = extract_candidates(prob, threshold)
    hits, n_gt = _match_labels(labels, len(scores), gt)
    return CaseScores.from_matches(scores, hits, n_gt)


def case_scores_from_masks(candidates: Sequence[tuple[np.ndarray, float]], gt: np.ndarray) -> CaseScores:
    """:class:`CaseScores` from caller-made candidates: ``(mask (Z, Y, X), score)`` each (masks may
    overlap), against the GT mask ``(Z, Y, X)``."""
    gt_labels, n_gt = components(np.asarray(gt) > 0)
    lesion_size = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    hits = []
    for mask, _ in candidates:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt_labels.shape:
            raise ValueError(f"case_scores_from_masks: candidate shape {mask.shape} != gt shape {gt_labels.shape}")
        inter = np.bincount(gt_labels[mask].ravel(), minlength=n_gt + 1)
        size = int(mask.sum())
        hits.append([k - 1 for k in range(1, n_gt + 1)
                     if inter[k] and inter[k] / (size + lesion_size[k] - inter[k]) >= MIN_IOU])
    return CaseScores.from_matches([s for _, s in candidates], hits, n_gt)


@dataclass(frozen=True)
class FROC:
    """A FROC curve: operating points ``(n_points,)`` by descending threshold, and its readings."""

    thresholds: np.ndarray
    fp_per_case: np.ndarray
    sensitivity: np.ndarray
    n_lesions: int
    n_cases: int
    at: dict[float, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Average of the sensitivities at the :attr:`at` rates."""
        return float(np.mean(list(self.at.values()))) if self.at else float("nan")


def sensitivity_at(fp_per_case: np.ndarray, sensitivity: np.ndarray, rate: float) -> float:
    """Highest sensitivity among operating points with at most ``rate`` FP per case (0 if none)."""
    ok = np.asarray(fp_per_case) <= rate + 1e-12
    return float(np.max(np.asarray(sensitivity)[ok])) if ok.any() else 0.0


def froc(cases: Sequence[CaseScores], fp_rates: Sequence[float] = FP_RATES) -> FROC:
    """FROC over ``cases`` (module docstring, "Curve"); ``fp_rates``: FP per case to read it at."""
    if not cases:
        raise ValueError("froc: no case")
    lesions = np.concatenate([c.lesion_scores for c in cases]).astype(np.float64)
    fps = np.concatenate([c.fp_scores for c in cases]).astype(np.float64)
    all_scores = np.concatenate([lesions[np.isfinite(lesions)], fps])
    thresholds = np.unique(all_scores)[::-1]
    lesion_sorted, fp_sorted = np.sort(lesions), np.sort(fps)
    detected = lesions.size - np.searchsorted(lesion_sorted, thresholds, side="left")
    false = fps.size - np.searchsorted(fp_sorted, thresholds, side="left")
    sens = detected / lesions.size if lesions.size else np.full(thresholds.shape, np.nan)
    fppc = false / len(cases)
    at = {float(r): sensitivity_at(fppc, sens, r) if lesions.size else float("nan") for r in fp_rates}
    return FROC(thresholds, fppc, np.asarray(sens, dtype=np.float64), int(lesions.size), len(cases), at)
