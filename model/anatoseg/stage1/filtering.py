"""Which pseudo-label voxels the student trusts: confidence thresholds, global and per class.

A single global threshold silently drops whole organs: where the teacher is
unsure of an organ everywhere (typically the one the domain shift hurts most),
none of its voxels pass and the student is taught that the organ is background.
Class-balanced self-training (Zou et al., ECCV 2018) avoids this with one
threshold per class: class ``k`` keeps its voxels whose confidence reaches

    t_k = min(threshold, q_k),  q_k = the (1 - class_fraction) quantile of the
                                      confidences of the voxels labelled k,

so every class keeps at least its most confident ``class_fraction`` of voxels,
and no class is held to more than ``threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BINS = 1000  # confidence histogram resolution for the quantiles


def class_thresholds(labels: Sequence[np.ndarray], confidences: Sequence[np.ndarray], num_classes: int,
                     threshold: float, class_fraction: float) -> np.ndarray:
    """Per-class thresholds ``(num_classes,)`` float64 (module docstring) over all cases.

    ``labels``: per case ``(Z, Y, X)`` integer class ids; ``confidences``: per case
    ``(Z, Y, X)`` in [0, 1]. Quantiles come from a 1000-bin histogram (accurate to
    1e-3, streaming, no copy of the voxels). A class with no voxel gets ``threshold``.
    ``class_fraction`` 0 gives ``threshold`` for every class.
    """
    counts = np.zeros((num_classes, _BINS), dtype=np.int64)
    for label, conf in zip(labels, confidences, strict=True):
        bins = np.clip((np.asarray(conf).ravel() * _BINS).astype(np.int64), 0, _BINS - 1)
        counts += np.bincount(np.asarray(label).ravel().astype(np.int64) * _BINS + bins,
                              minlength=num_classes * _BINS).reshape(num_classes, _BINS)
    out = np.full(num_classes, float(threshold))
    if class_fraction <= 0:
        return out
    for k in range(num_classes):
        total = counts[k].sum()
        if total == 0:
            continue
        # Highest bin edge with at least class_fraction of the class's voxels at or above it.
        above = np.cumsum(counts[k][::-1])[::-1]  # voxels in bins >= b
        eligible = np.flatnonzero(above >= class_fraction * total)
        out[k] = min(float(threshold), eligible[-1] / _BINS)
    return out


def trusted_voxels(labels: np.ndarray, confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bool ``(Z, Y, X)``: True where ``confidence >= thresholds[labels]``.

    ``labels``, ``confidence``: ``(Z, Y, X)``; ``thresholds``: ``(num_classes,)``.
    """
    return np.asarray(confidence) >= thresholds[np.asarray(labels, dtype=np.int64)]
