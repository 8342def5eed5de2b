"""Organ-mask post-processing of a predicted lesion mask, usable with any network: a component that lies mostly
inside organs with physiological uptake (brain, bladder, kidneys, ureters, heart...) is most likely that
uptake, not a lesion, and is removed (``anato predict --suppress-organs``, ``infer.suppress_organs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anatoseg.metrics.components import component_sizes, components


def suppress_in_organs(mask: np.ndarray, organs: np.ndarray, organ_ids: Sequence[int],
                       fraction: float = 0.5) -> np.ndarray:
    """``mask`` ``(Z, Y, X)`` {0, 1} without its 18-connected components (autoPET's connectivity) of which more
    than ``fraction`` of the voxels lie inside one of ``organ_ids`` in ``organs`` ``(Z, Y, X)`` (organ ids, the
    same grid). Returns a new uint8 mask; ValueError when the shapes differ."""
    if mask.shape != organs.shape:
        raise ValueError(f"suppress_in_organs: mask {mask.shape} and organs {organs.shape} differ in shape")
    labels, count = components(mask > 0)
    if not count or not len(organ_ids):
        return (mask > 0).astype(np.uint8)
    inside = np.isin(organs, np.asarray(organ_ids))
    in_organs = np.bincount(labels[inside], minlength=count + 1)[1:]
    keep = np.concatenate([[False], in_organs <= fraction * component_sizes(labels, count)])
    return keep[labels].astype(np.uint8)
